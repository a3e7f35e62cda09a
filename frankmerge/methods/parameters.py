"""Which parameters each merge method takes: the method names the CLI offers without loading the recipe schema."""

from __future__ import annotations

METHOD_PARAMETERS: dict[str, tuple[str, ...]] = {
    "frank": (),
    "linear": ("beta",),
    "task_arithmetic": ("lambda_v", "lambda_r"),
    "ties": ("weights", "density", "scale", "mergekit_compat"),
    "dare_linear": ("weights", "drop_rate", "seed", "mergekit_compat"),
    "dare_ties": ("weights", "drop_rate", "scale", "seed", "mergekit_compat"),
    "layer_swap": ("k", "beta"),
    "metagpt": (),
}

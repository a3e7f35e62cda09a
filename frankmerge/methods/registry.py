"""Merge methods by name: how each turns a block's task vectors into the merged block.

Two kinds share the streaming machinery. *Coefficient* methods give each block a pair
(λ_V, λ_R) and the block is θ_0 + λ_V τ_V + λ_R τ_R (FRANK, linear/BR2V, task arithmetic,
layer swap, MetaGPT). *Element-wise* methods (TIES, DARE) transform the two task vectors of each
tensor and add the result to θ_0. Defaults are the published settings (method.md), so a
baseline is reproduced by its name alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from frankmerge.errors import RecipeError
from frankmerge.methods.frank import MINMAX_BOUNDS, BlockCoefficients, BlockStats, frank_coefficients, prior_weights
from frankmerge.recipe import MergeRecipe

if TYPE_CHECKING:
    import torch

# Published defaults: BR2V linear β = 0.9; FRANK's task-arithmetic row λ_V = 0.3 (λ_R = 1 − λ_V,
# which the paper does not state); BR2V TIES weights 1.6 (VLM) / 0.2 (reasoner), density 0.2;
# BR2V layer swap k = 5. DARE has no published setting for these pairs: p = 0.5 is our choice.
DEFAULTS: dict[str, dict[str, object]] = {
    "frank": {},
    "linear": {"beta": 0.9},
    "task_arithmetic": {"lambda_v": 0.3, "lambda_r": 0.7},
    "ties": {"weights": (1.6, 0.2), "density": 0.2, "scale": 1.0, "mergekit_compat": False},
    "dare_linear": {"weights": (0.9, 0.1), "drop_rate": 0.5, "seed": 0, "mergekit_compat": False},
    "dare_ties": {"weights": (1.6, 0.2), "drop_rate": 0.5, "scale": 1.0, "seed": 0, "mergekit_compat": False},
    "layer_swap": {"k": 5, "beta": 0.9},
    "metagpt": {},
}
METHOD_NAMES = tuple(DEFAULTS)


@dataclass
class Method:
    """A resolved method: its name, its settings, and how it merges a block."""

    name: str
    settings: dict[str, object]
    num_blocks: int
    elementwise: bool = False
    global_stats: bool = False
    _lambdas: list[tuple[float, float]] = field(default_factory=list)
    _w_v: list[float] | None = None

    def prepare(self, all_stats: list[BlockStats]) -> None:
        """MetaGPT: Eq. 13 on sums over every block, one λ pair for the whole model."""
        norm_v = sum(s.norm_v_sq for s in all_stats)
        norm_r = sum(s.norm_r_sq for s in all_stats)
        whole = frank_coefficients(BlockStats(-1, norm_v, norm_r, 0.0, 0.0), 0.5)
        self._lambdas = [(whole.lambda_v, whole.lambda_r)] * self.num_blocks

    def coefficients(self, stats: BlockStats) -> BlockCoefficients:
        if self.name == "frank":
            assert self._w_v is not None
            return frank_coefficients(stats, self._w_v[stats.index])
        lambda_v, lambda_r = self._lambdas[stats.index]
        return BlockCoefficients(stats.index, None, lambda_v, lambda_r)

    def merge_delta(self, tau_v: torch.Tensor, tau_r: torch.Tensor, name: str) -> torch.Tensor:
        """The merged delta of one tensor for TIES / DARE (float32, whole tensor)."""
        from frankmerge.methods.sparse import drop_and_rescale, elect_and_merge, tensor_generator, trim_by_magnitude

        s = self.settings
        weights = list(s["weights"])  # type: ignore[call-overload]
        compat = bool(s["mergekit_compat"])
        if self.name == "ties":
            deltas = [trim_by_magnitude(tau_v, s["density"]), trim_by_magnitude(tau_r, s["density"])]  # type: ignore[arg-type]
            return float(s["scale"]) * elect_and_merge(deltas, weights, mergekit_compat=compat)  # type: ignore[arg-type]
        p, seed = float(s["drop_rate"]), int(s["seed"])  # type: ignore[arg-type, call-overload]
        deltas = [
            drop_and_rescale(tau, p, tensor_generator(seed, role, name), l1_rescale=compat)
            for role, tau in (("vlm", tau_v), ("reasoner", tau_r))
        ]
        if self.name == "dare_linear":
            return weights[0] * deltas[0] + weights[1] * deltas[1]
        merged = elect_and_merge(deltas, weights, mergekit_compat=compat, normalize=not compat)
        return float(s["scale"]) * merged  # type: ignore[arg-type]


def build_method(recipe: MergeRecipe, num_blocks: int) -> Method:
    """Resolve the recipe's method and parameters (defaults filled in) for ``num_blocks`` blocks."""
    name = recipe.method
    given = recipe.parameters.model_dump(exclude_none=True)
    settings = {**DEFAULTS[name], **given}
    method = Method(name, settings, num_blocks)
    if name == "frank":
        prior = recipe.prior
        assert prior is not None, "merge() resolves a missing prior by profiling first"
        method._w_v = prior_weights(prior.kind, num_blocks, prior.alpha, scale=prior.scale, bounds=prior.bounds or MINMAX_BOUNDS)
    elif name in ("linear", "layer_swap"):
        betas = _per_layer(settings["beta"], "beta", num_blocks)
        first = int(settings["k"]) if name == "layer_swap" else 0  # type: ignore[call-overload]
        if first > num_blocks:
            raise RecipeError(f"layer_swap k = {first} exceeds the VLM's {num_blocks} blocks")
        method._lambdas = [(1.0, 0.0) if i < first else (b, 1.0 - b) for i, b in enumerate(betas)]
    elif name == "task_arithmetic":
        lambda_v = _per_layer(settings["lambda_v"], "lambda_v", num_blocks)
        lambda_r = _per_layer(settings["lambda_r"], "lambda_r", num_blocks)
        method._lambdas = list(zip(lambda_v, lambda_r, strict=True))
    elif name == "metagpt":
        method.global_stats = True
    else:
        method.elementwise = True
        weights = settings["weights"]
        method._lambdas = [(float(weights[0]), float(weights[1]))] * num_blocks  # type: ignore[index]
    return method


def _per_layer(value: object, key: str, num_blocks: int) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * num_blocks
    values = [float(v) for v in value]  # type: ignore[attr-defined]
    if len(values) != num_blocks:
        raise RecipeError(f"parameter {key!r} has {len(values)} per-layer values but the VLM has {num_blocks} blocks")
    return values

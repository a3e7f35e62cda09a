"""Independent references and small builders for the DRIFT tests.

The variant formulas are typed out again from method.md in float64 on the raw Δ (no Δ̂, no
precomputation), and the covered tensor set is found with plain regexes over the checkpoint's
names, sharing nothing with frankmerge's coverage tables.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.conftest import block_key

EPS = 1e-12
ATTN = re.compile(r"self_attn\.[qkvo]_proj\.(weight|bias)$")
MLP = re.compile(r"mlp\.(gate|up|down)_proj\.(weight|bias)$")


def reference_guided(g: torch.Tensor, delta: torch.Tensor, variant: str, alpha: float = -1.0) -> torch.Tensor:
    """g̃ from method.md, float64, per tensor, norms clamped at ε."""
    g, d = g.double(), delta.double()
    g_norm, d_norm = g.norm(), d.norm()
    if variant == "absolute":
        return g + alpha * d
    if variant == "grad_norm":
        return g + alpha * g_norm * d / d_norm.clamp_min(EPS)
    cos = (g * d).sum() / (g_norm.clamp_min(EPS) * d_norm.clamp_min(EPS))
    alpha_prime = alpha * (1 + cos) / 2
    return g + alpha_prime * g_norm * d / d_norm.clamp_min(EPS)


def covered_names(names: list[str]) -> list[str]:
    """On-disk names of the paper's covered tensors (attention q/k/v/o with biases, MLP gate/up/down)."""
    return [n for n in names if block_key(n) is not None and (ATTN.search(n) or MLP.search(n))]


WORDS = ("a", "cat", "the", "image", "describe") + tuple(f"w{i}" for i in range(40))


def write_chat_data(root: Path, *, samples: int, image_px: int, seed: int = 0) -> Path:
    """A LLaMA-Factory-style JSONL with one generated image per sample; returns the JSONL path."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(samples):
        Image.fromarray(rng.integers(0, 256, (image_px, image_px, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        answer = " ".join(rng.choice(WORDS, size=6))
        record = {
            "messages": [
                {"role": "user", "content": "<image>describe the image"},
                {"role": "assistant", "content": f"<think> {answer} </think> {answer}"},
            ],
            "images": [f"images/{i}.png"],
        }
        lines.append(json.dumps(record))
    path = root / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def rewrite_prior(source: Path, target: Path, *, drop: str | None = None, reshape: str | None = None) -> Path:
    """A copy of a prior file with tensors whose name starts with ``drop`` removed, or ``reshape`` made wider."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from frankmerge.drift.prior_file import META_KEY

    with safe_open(str(source), framework="pt") as handle:
        meta = json.loads(handle.metadata()[META_KEY])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    for name in list(tensors):
        if drop is not None and name.startswith(drop):
            del tensors[name]
            del meta["entries"][name]
        elif name == reshape:
            tensors[name] = torch.zeros(tensors[name].shape[0] + 1, *tensors[name].shape[1:], dtype=tensors[name].dtype)
            meta["entries"][name]["shape"] = list(tensors[name].shape)
    save_file(tensors, target, metadata={"format": "pt", META_KEY: json.dumps(meta)})
    return target

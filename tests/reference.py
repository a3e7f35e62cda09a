"""An independent reference for the merge: whole tensors in float64, written from method.md.

It shares no code with frankmerge's merge path: names are matched with a plain regex, the
formulas are typed out again, and tensors are loaded with safetensors' own loader.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import block_key


def load_dir(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def blocks_of(state: dict[str, torch.Tensor]) -> dict[tuple[int, str], str]:
    return {key: name for name in state if (key := block_key(name)) is not None}


def prior_w_v(kind: str, num_blocks: int, alpha: float | None) -> list[float]:
    if kind == "none":
        return [0.5] * num_blocks
    if kind == "exponential":
        raw = [math.exp(-alpha * l) for l in range(1, num_blocks + 1)]  # type: ignore[operator]
    else:
        raw = [num_blocks + 1 - l for l in range(1, num_blocks + 1)]
    return [r / sum(raw) for r in raw]


def reference_merge(
    vlm: Path, reasoner: Path, base: Path, kind: str, alpha: float | None, reasoner_base: Path | None = None
) -> dict[str, object]:
    """Per-block statistics, λs and the expected merged block tensors (float64).

    With ``reasoner_base``, τ_R = θ_R − θ_reasoner_base (the two-base merge).
    """
    V, R, B = load_dir(vlm), load_dir(reasoner), load_dir(base)
    RB = load_dir(reasoner_base) if reasoner_base is not None else B
    bv, br, bb, brb = blocks_of(V), blocks_of(R), blocks_of(B), blocks_of(RB)
    assert set(bv) == set(br) == set(bb) == set(brb)
    num_blocks = 1 + max(index for index, _ in bv)
    w = prior_w_v(kind, num_blocks, alpha)
    blocks, expected = [], {}
    for index in range(num_blocks):
        keys = sorted(k for k in bv if k[0] == index)
        tv = torch.cat([(V[bv[k]].double() - B[bb[k]].double()).flatten() for k in keys])
        tr = torch.cat([(R[br[k]].double() - RB[brb[k]].double()).flatten() for k in keys])
        nv, nr = float(tv @ tv), float(tr @ tr)
        lam_v = w[index] * nv / (w[index] * nv + (1 - w[index]) * nr)
        lam_r = (1 - w[index]) * nr / (w[index] * nv + (1 - w[index]) * nr)
        blocks.append(
            {
                "norm_v_sq": nv,
                "norm_r_sq": nr,
                "cos": float(tv @ tr) / math.sqrt(nv * nr),
                "w_v": w[index],
                "lambda_v": lam_v,
                "lambda_r": lam_r,
            }
        )
        for k in keys:
            theta_0 = B[bb[k]].double()
            tau_r = R[br[k]].double() - RB[brb[k]].double()
            expected[bv[k]] = theta_0 + lam_v * (V[bv[k]].double() - theta_0) + lam_r * tau_r
    return {"blocks": blocks, "expected": expected, "vlm_state": V}

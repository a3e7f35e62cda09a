"""FRANK's closed-form per-block coefficients (method.md: Eq. 13, 15, 16) and its priors.

Block l (1-based in the formulas, 0-based ``index`` in tensor names) is merged as
``θ_0 + λ_V τ_V + λ_R τ_R`` with ``λ_t = w_t ‖τ_t‖² / (w_V ‖τ_V‖² + w_R ‖τ_R‖²)``.
Without a prior ``w_V = w_R`` (Eq. 13); with one, ``w_R = 1 − w_V``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

PriorKind = Literal["none", "exponential", "linear"]


@dataclass(frozen=True)
class BlockStats:
    """Sums over one block's flattened task vectors, accumulated in float64."""

    index: int
    norm_v_sq: float  # ‖τ_V‖²
    norm_r_sq: float  # ‖τ_R‖²
    dot_vr: float  # ⟨τ_V, τ_R⟩
    norm_0_sq: float  # ‖θ_0‖², for relative task-vector norms

    @property
    def cos(self) -> float:
        denom = math.sqrt(self.norm_v_sq * self.norm_r_sq)
        return self.dot_vr / denom if denom > 0 else 0.0


@dataclass(frozen=True)
class BlockCoefficients:
    index: int
    w_v: float
    lambda_v: float
    lambda_r: float


def prior_weights(kind: PriorKind, num_blocks: int, alpha: float | None = None) -> list[float]:
    """w_V(l) for l = 1..L.

    ``exponential`` is Eq. 16 as written, ``w_V(l) = e^{−α l} / Σ_j e^{−α j}`` (normalised over
    layers, so each w_V is small); ``linear`` is the paper's layer-indexed linear-decay ablation
    normalised the same way, ``w_V(l) = (L + 1 − l) / Σ_j (L + 1 − j)``; ``none`` returns 0.5
    everywhere, which makes Eq. 15 reduce to Eq. 13.
    """
    layers = range(1, num_blocks + 1)
    if kind == "none":
        return [0.5] * num_blocks
    if kind == "exponential":
        if alpha is None or not math.isfinite(alpha):
            raise ValueError("the exponential prior needs a finite alpha")
        # Shift the exponent so that the largest term is e^0: no overflow for any alpha.
        exponents = [-alpha * l for l in layers]
        top = max(exponents)
        raw = [math.exp(e - top) for e in exponents]
    elif kind == "linear":
        raw = [float(num_blocks + 1 - l) for l in layers]
    else:
        raise ValueError(f"unknown prior {kind!r}")
    total = math.fsum(raw)
    return [r / total for r in raw]


def frank_coefficients(stats: BlockStats, w_v: float) -> BlockCoefficients:
    """Eq. 15 for one block (Eq. 13 when ``w_v`` = 0.5).

    When both task vectors vanish the block equals θ_0 whatever the λs; report an even split.
    """
    w_r = 1.0 - w_v
    numerator_v = w_v * stats.norm_v_sq
    denom = numerator_v + w_r * stats.norm_r_sq
    if denom == 0.0:
        lambda_v = 0.5
    elif math.isfinite(denom):
        lambda_v = numerator_v / denom
    else:
        lambda_v = math.nan
    return BlockCoefficients(stats.index, w_v, lambda_v, 1.0 - lambda_v)

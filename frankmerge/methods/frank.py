"""FRANK's closed-form per-block coefficients (method.md: Eq. 13, 15, 16) and its priors.

Block l (1-based in the formulas, 0-based ``index`` in tensor names) is merged as
``θ_0 + λ_V τ_V + λ_R τ_R`` with ``λ_t = w_t ‖τ_t‖² / (w_V ‖τ_V‖² + w_R ‖τ_R‖²)``.
Without a prior ``w_V = w_R`` (Eq. 13); with one, ``w_R = 1 − w_V``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from frankmerge.errors import RecipeError

PriorKind = Literal["none", "exponential", "linear", "relative", "minmax", "fitted"]

# What each prior schedule reads besides the number of blocks (recipe validation uses this table).
PRIOR_PARAMETERS: dict[str, tuple[str, ...]] = {
    "none": (),
    "exponential": ("alpha",),
    "linear": (),
    "relative": ("alpha",),
    "minmax": ("alpha",),  # bounds optional, default MINMAX_BOUNDS
    "fitted": ("alpha", "scale"),
}
MINMAX_BOUNDS = (0.1, 0.9)  # default [w_min, w_max] of the min-max rescaled decay


class PriorError(RecipeError, ValueError):
    """A prior schedule is missing a parameter or has an invalid one (a ValueError for pydantic validators)."""


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
    w_v: float | None  # the prior's w_V(l); None for methods without a prior
    lambda_v: float
    lambda_r: float


def prior_weights(
    kind: PriorKind,
    num_blocks: int,
    alpha: float | None = None,
    *,
    scale: float | None = None,
    bounds: tuple[float, float] = MINMAX_BOUNDS,
) -> list[float]:
    """w_V(l) for l = 1..L (w_R = 1 − w_V); every schedule is documented in docs/profiling.md.

    * ``exponential`` — Eq. 16 as written: ``e^{−α l} / Σ_j e^{−α j}``. Normalised over layers,
      so each w_V is about 1/L and λ_V is small unless ‖τ_V‖² ≫ ‖τ_R‖² (the paper's default).
    * ``linear`` — the paper's linear-decay ablation, normalised the same way: ``(L + 1 − l) / Σ_j (L + 1 − j)``.
    * ``none`` — 0.5 everywhere, which turns Eq. 15 into Eq. 13.
    * ``relative`` — ``min(1, e^{−α (l − 1)})`` = â_l / â_1: the fitted decay relative to block 1,
      not normalised over layers (w_V(1) = 1, so block 1 stays the VLM's).
    * ``minmax`` — the decay ``s_l = e^{−α (l − 1)}`` rescaled into ``[w_min, w_max]`` (default
      [0.1, 0.9]): ``w_min + (w_max − w_min) (s_l − min s) / (max s − min s)``; α = 0 gives the midpoint.
    * ``fitted`` — the fitted visual-attention ratio itself, ``min(1, Ĉ e^{−α l})`` = â_l: on the
      scale of a_l (needs ``scale`` = Ĉ from the profile).
    """
    layers = range(1, num_blocks + 1)
    if kind == "none":
        return [0.5] * num_blocks
    if kind == "linear":
        raw = [float(num_blocks + 1 - l) for l in layers]
        total = math.fsum(raw)
        return [r / total for r in raw]
    if kind not in PRIOR_PARAMETERS:
        raise PriorError(f"unknown prior {kind!r}")
    if alpha is None or not math.isfinite(alpha):
        raise PriorError(f"the {kind} prior needs a finite alpha")
    if kind == "exponential":
        # Shift the exponent so that the largest term is e^0: no overflow for any alpha.
        exponents = [-alpha * l for l in layers]
        top = max(exponents)
        raw = [math.exp(e - top) for e in exponents]
        total = math.fsum(raw)
        return [r / total for r in raw]
    if kind == "relative":
        return [math.exp(min(-alpha * (l - 1), 0.0)) for l in layers]
    if kind == "minmax":
        return _minmax(alpha, num_blocks, bounds)
    if scale is None or not math.isfinite(scale) or scale <= 0:
        raise PriorError("the fitted prior needs the profile's positive scale C")
    # min(1, Ĉ e^{−α l}) computed in the log domain, so no alpha can overflow it.
    return [math.exp(min(math.log(scale) - alpha * l, 0.0)) for l in layers]


def _minmax(alpha: float, num_blocks: int, bounds: tuple[float, float]) -> list[float]:
    w_min, w_max = bounds
    if not 0.0 <= w_min <= w_max <= 1.0:
        raise PriorError(f"minmax prior bounds must satisfy 0 <= w_min <= w_max <= 1, got {bounds}")
    if alpha == 0.0 or num_blocks == 1:
        return [(w_min + w_max) / 2] * num_blocks
    # With b = |α|, f_l = (e^{−b(l−1)} − e^{−b(L−1)}) / (1 − e^{−b(L−1)}) falls from 1 to 0; written
    # with expm1 it keeps full precision for tiny α (where it tends to the linear decay) and never
    # overflows. A rising decay (α < 0) is the same curve read from the other end.
    b_abs = abs(alpha)
    top = -math.expm1(-b_abs * (num_blocks - 1))
    fractions = [1.0 + math.expm1(-b_abs * (l - 1)) / top for l in range(1, num_blocks + 1)]
    if alpha < 0:
        fractions.reverse()
    return [w_min + (w_max - w_min) * f for f in fractions]


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

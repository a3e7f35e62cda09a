"""The decay fit ln a_l = ln C − α l (FRANK Eq. 41–44) and a bootstrap of α̂ over images.

The fit is ordinary least squares over the layers l = 1..L of the mean ratio over images. The
bootstrap resamples images, which is where the uncertainty lies: it says how much α̂ would move
with another draw of the same number of images, and how many images make it stable enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from frankmerge.analysis.errors import ProfileError

SUBSAMPLE_SIZES = (4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 5000)
MAX_BOOT_PER_SIZE = 500
# α̂ is "stable enough" when its bootstrap std moves the prior's first-to-last-layer ratio
# e^{−α (L−1)} by at most 10 %: std(α̂) · (L − 1) ≤ 0.1.
RATIO_TOLERANCE = 0.1


@dataclass(frozen=True)
class DecayFit:
    """α̂, Ĉ and R² of ln a_l = ln C − α l over l = 1..L."""

    alpha: float
    C: float
    r2: float | None  # None when every a_l is equal (no variance to explain)

    def curve(self, layers: np.ndarray) -> np.ndarray:
        return self.C * np.exp(-self.alpha * layers)


@dataclass(frozen=True)
class SizeStability:
    """Spread of α̂ over bootstrap draws of ``n_images`` images."""

    n_images: int
    n_boot: int
    alpha_std: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class BootstrapResult:
    n_boot: int
    seed: int
    alpha_mean: float
    alpha_std: float
    ci95: tuple[float, float]
    by_size: tuple[SizeStability, ...]
    tolerance: float  # the α̂ std regarded as stable enough for this model's layer count
    recommended_images: int | None  # fewest images whose α̂ std is within tolerance
    recommended_from: str  # "measured", "extrapolated" (std ∝ 1/√n) or "unknown"


def fit_decay(ratios: np.ndarray) -> DecayFit:
    """Closed-form OLS of ln a_l on l = 1..L (Eq. 41–44); every a_l must be positive."""
    a = np.asarray(ratios, dtype=np.float64)
    if a.ndim != 1 or a.size < 2:
        raise ProfileError(f"the decay fit needs a ratio for at least 2 layers, got {a.size}")
    bad = [int(i) + 1 for i in np.flatnonzero(~(a > 0) | ~np.isfinite(a))]
    if bad:
        raise ProfileError(
            f"layers {bad[:5]} put no attention on visual tokens (a_l = 0 or undefined), so ln a_l does not exist; "
            "check that the images reach the model (image-token count) and the query choice"
        )
    slope, intercept, r2 = _ols(np.arange(1, a.size + 1, dtype=np.float64), np.log(a))
    return DecayFit(alpha=-slope, C=math.exp(intercept), r2=r2)


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float | None]:
    x_bar, y_bar = x.mean(), y.mean()
    sxx = float(((x - x_bar) ** 2).sum())
    slope = float(((x - x_bar) * (y - y_bar)).sum()) / sxx
    intercept = float(y_bar - slope * x_bar)
    ss_tot = float(((y - y_bar) ** 2).sum())
    ss_res = float(((y - (intercept + slope * x)) ** 2).sum())
    return slope, intercept, (1.0 - ss_res / ss_tot) if ss_tot > 0 else None


def alpha_of_means(per_image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """α̂ for each row of ``weights`` (image counts of one bootstrap draw), vectorised over draws."""
    means = weights @ per_image / weights.sum(axis=1, keepdims=True)  # (draws, layers)
    y = np.log(np.clip(means, 1e-300, None))
    x = np.arange(1, per_image.shape[1] + 1, dtype=np.float64)
    xc = x - x.mean()
    return -(y @ xc) / float(xc @ xc)


def bootstrap_alpha(per_image: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> BootstrapResult:
    """Resample images with replacement: α̂'s spread at the measured count and at smaller/larger counts."""
    per_image = np.asarray(per_image, dtype=np.float64)
    n_images, n_layers = per_image.shape
    rng = np.random.default_rng(seed)
    alphas = _draws(per_image, n_images, n_boot, rng)
    sizes = sorted({s for s in SUBSAMPLE_SIZES if s < n_images} | {n_images})
    by_size = []
    for size in sizes:
        draws = alphas if size == n_images else _draws(per_image, size, min(n_boot, MAX_BOOT_PER_SIZE), rng)
        by_size.append(SizeStability(size, draws.size, float(draws.std(ddof=1)) if draws.size > 1 else 0.0, _ci(draws)))
    tolerance = RATIO_TOLERANCE / max(n_layers - 1, 1)
    # One image has no spread to resample: no statement about stability is possible.
    recommended, source = _recommend(by_size, tolerance) if n_images > 1 else (None, "unknown")
    return BootstrapResult(
        n_boot=alphas.size,
        seed=seed,
        alpha_mean=float(alphas.mean()),
        alpha_std=by_size[-1].alpha_std,
        ci95=_ci(alphas),
        by_size=tuple(by_size),
        tolerance=tolerance,
        recommended_images=recommended,
        recommended_from=source,
    )


def _draws(per_image: np.ndarray, size: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """α̂ of ``n_boot`` draws of ``size`` images; counts per image instead of index arrays keep it O(draws × images)."""
    n_images = per_image.shape[0]
    alphas = []
    for start in range(0, n_boot, 256):
        batch = min(256, n_boot - start)
        counts = rng.multinomial(size, np.full(n_images, 1.0 / n_images), size=batch).astype(np.float64)
        alphas.append(alpha_of_means(per_image, counts))
    return np.concatenate(alphas) if alphas else np.zeros(0)


def _ci(values: np.ndarray) -> tuple[float, float]:
    if values.size == 0:
        return (math.nan, math.nan)
    low, high = np.percentile(values, [2.5, 97.5])
    return (float(low), float(high))


def _recommend(by_size: list[SizeStability], tolerance: float) -> tuple[int | None, str]:
    """Fewest images within tolerance; beyond the measured count, extrapolate std ∝ 1/√n."""
    for item in by_size:
        if item.n_boot > 1 and item.alpha_std <= tolerance:
            return item.n_images, "measured"
    last = by_size[-1]
    if last.n_boot <= 1 or not math.isfinite(last.alpha_std):
        return None, "unknown"
    return int(math.ceil(last.n_images * (last.alpha_std / tolerance) ** 2)), "extrapolated"

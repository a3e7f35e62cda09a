"""The decay fit against numpy's least squares, and the bootstrap against direct refits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from frankmerge.analysis import ProfileError, bootstrap_alpha, fit_decay
from frankmerge.analysis.fit import alpha_of_means


def _numpy_fit(a: np.ndarray) -> tuple[float, float, float]:
    l = np.arange(1, a.size + 1, dtype=float)
    design = np.stack([np.ones_like(l), -l], axis=1)  # ln a = ln C − α l
    (ln_c, alpha), *_ = np.linalg.lstsq(design, np.log(a), rcond=None)
    residual = np.log(a) - design @ np.array([ln_c, alpha])
    r2 = 1 - (residual**2).sum() / ((np.log(a) - np.log(a).mean()) ** 2).sum()
    return float(alpha), float(math.exp(ln_c)), float(r2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_equals_numpy_least_squares(seed: int):
    rng = np.random.default_rng(seed)
    a = np.exp(-0.08 * np.arange(1, 29) + rng.normal(0, 0.2, 28)) * 0.6
    fit = fit_decay(a)
    alpha, c, r2 = _numpy_fit(a)
    assert (fit.alpha, fit.C, fit.r2) == pytest.approx((alpha, c, r2), rel=1e-10)
    assert np.polyfit(np.arange(1, 29), np.log(a), 1)[0] == pytest.approx(-fit.alpha, rel=1e-10)


def test_exact_exponential_is_recovered():
    fit = fit_decay(0.7 * np.exp(-0.25 * np.arange(1, 13)))
    assert (fit.alpha, fit.C, fit.r2) == pytest.approx((0.25, 0.7, 1.0))


def test_flat_ratios_have_no_r2():
    fit = fit_decay(np.full(6, 0.3))
    assert fit.alpha == pytest.approx(0.0, abs=1e-12) and fit.r2 is None


def test_zero_ratio_is_refused():
    with pytest.raises(ProfileError, match="layers \\[3\\]"):
        fit_decay(np.array([0.5, 0.4, 0.0, 0.2]))


def test_bootstrap_draws_equal_refits_of_resampled_images():
    rng = np.random.default_rng(3)
    per_image = np.exp(-0.1 * np.arange(1, 9))[None, :] * rng.uniform(0.5, 1.5, (20, 8))
    counts = rng.multinomial(20, np.full(20, 1 / 20), size=5).astype(float)
    vectorised = alpha_of_means(per_image, counts)
    for draw, weights in zip(vectorised, counts, strict=True):
        resampled = np.repeat(per_image, weights.astype(int), axis=0)
        assert draw == pytest.approx(fit_decay(resampled.mean(axis=0)).alpha, rel=1e-9)


def test_bootstrap_is_seeded_and_shrinks_with_more_images():
    rng = np.random.default_rng(4)
    per_image = np.exp(-0.1 * np.arange(1, 9))[None, :] * rng.uniform(0.5, 1.5, (64, 8))
    first = bootstrap_alpha(per_image, n_boot=300, seed=7)
    assert first == bootstrap_alpha(per_image, n_boot=300, seed=7)
    sizes = [s.n_images for s in first.by_size]
    assert sizes == [4, 8, 16, 32, 64]
    stds = [s.alpha_std for s in first.by_size]
    assert stds[0] > stds[-1] and first.alpha_std == stds[-1]
    assert first.ci95[0] < fit_decay(per_image.mean(axis=0)).alpha < first.ci95[1]
    assert first.tolerance == pytest.approx(0.1 / 7)
    if first.recommended_from == "measured":
        assert first.recommended_images in sizes
        chosen = sizes.index(first.recommended_images)
        assert stds[chosen] <= first.tolerance and all(s > first.tolerance for s in stds[:chosen])
    else:
        assert first.recommended_images > 64


def test_recommendation_extrapolates_past_the_measured_images():
    rng = np.random.default_rng(5)
    alphas = rng.normal(0.1, 0.05, (8, 1))  # images that disagree on the decay itself
    per_image = 0.5 * np.exp(-alphas * np.arange(1, 41)[None, :])
    boot = bootstrap_alpha(per_image, n_boot=400, seed=0)
    assert boot.alpha_std > boot.tolerance
    assert boot.recommended_from == "extrapolated"
    assert boot.recommended_images == math.ceil(8 * (boot.alpha_std / boot.tolerance) ** 2)


def test_one_image_makes_no_stability_claim():
    boot = bootstrap_alpha(np.array([[0.5, 0.4, 0.3]]), n_boot=10)
    assert boot.recommended_images is None and boot.recommended_from == "unknown"

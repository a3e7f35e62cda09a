"""FRANK's coefficient formulas against hand-typed values from method.md."""

from __future__ import annotations

import math

import pytest

from frankmerge.methods.frank import BlockStats, frank_coefficients, prior_weights


def test_eq13_without_prior_is_the_norm_ratio():
    c = frank_coefficients(BlockStats(0, norm_v_sq=3.0, norm_r_sq=1.0, dot_vr=0.0, norm_0_sq=1.0), 0.5)
    assert (c.lambda_v, c.lambda_r) == pytest.approx((0.75, 0.25))


def test_eq15_weights_the_norms_by_the_prior():
    c = frank_coefficients(BlockStats(0, 2.0, 5.0, 0.0, 1.0), 0.2)
    assert c.lambda_v == pytest.approx(0.2 * 2.0 / (0.2 * 2.0 + 0.8 * 5.0))
    assert c.lambda_v + c.lambda_r == pytest.approx(1.0)


def test_vanishing_task_vectors_split_evenly():
    c = frank_coefficients(BlockStats(0, 0.0, 0.0, 0.0, 1.0), 0.3)
    assert (c.lambda_v, c.lambda_r) == (0.5, 0.5)


@pytest.mark.parametrize("alpha", [0.3, 0.5, -0.2, 0.0])
def test_eq16_exponential_prior_is_normalised_over_layers(alpha: float):
    weights = prior_weights("exponential", 6, alpha)
    expected = [math.exp(-alpha * l) / sum(math.exp(-alpha * j) for j in range(1, 7)) for l in range(1, 7)]
    assert weights == pytest.approx(expected)
    assert sum(weights) == pytest.approx(1.0)


def test_exponential_prior_does_not_overflow_for_large_alpha():
    weights = prior_weights("exponential", 80, -50.0)
    assert all(math.isfinite(w) for w in weights) and weights[-1] == pytest.approx(1.0)


def test_linear_prior_decays_with_depth():
    assert prior_weights("linear", 4) == pytest.approx([4 / 10, 3 / 10, 2 / 10, 1 / 10])


def test_no_prior_reduces_eq15_to_eq13():
    stats = BlockStats(0, 1.5, 4.0, 0.1, 2.0)
    assert frank_coefficients(stats, prior_weights("none", 3)[1]).lambda_v == pytest.approx(1.5 / 5.5)


def test_exponential_prior_needs_alpha():
    with pytest.raises(ValueError, match="alpha"):
        prior_weights("exponential", 4, None)


def test_cosine_of_block_stats():
    assert BlockStats(0, 4.0, 9.0, 3.0, 1.0).cos == pytest.approx(0.5)


# -- prior variants beyond Eq. 16 (docs/profiling.md) -------------------------------------------


def test_every_prior_kind_declares_its_parameters():
    from typing import get_args

    from frankmerge.methods.frank import PRIOR_PARAMETERS, PriorKind

    assert set(PRIOR_PARAMETERS) == set(get_args(PriorKind))


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.3])
def test_relative_prior_is_the_fitted_ratio_relative_to_block_1(alpha: float):
    c = 0.42  # any Ĉ: â_l / â_1 does not depend on it
    fitted = [c * math.exp(-alpha * l) for l in range(1, 9)]
    assert prior_weights("relative", 8, alpha) == pytest.approx([a / fitted[0] for a in fitted])


def test_relative_prior_is_capped_at_one_for_a_rising_profile():
    assert prior_weights("relative", 4, -0.5) == [1.0, 1.0, 1.0, 1.0]
    assert frank_coefficients(BlockStats(0, 2.0, 5.0, 0.0, 1.0), 1.0).lambda_v == 1.0


@pytest.mark.parametrize("alpha", [0.3, -0.3, 2.0, -0.01])
def test_minmax_prior_rescales_the_decay_into_its_bounds(alpha: float):
    decay = [math.exp(-alpha * (l - 1)) for l in range(1, 7)]
    low, high = min(decay), max(decay)
    expected = [0.2 + 0.6 * (s - low) / (high - low) for s in decay]
    weights = prior_weights("minmax", 6, alpha, bounds=(0.2, 0.8))
    assert weights == pytest.approx(expected)
    assert max(weights) == pytest.approx(0.8) and min(weights) == pytest.approx(0.2)


def test_minmax_prior_limits():
    assert prior_weights("minmax", 5, 1e-12) == pytest.approx([0.9, 0.7, 0.5, 0.3, 0.1])  # linear as α → 0
    assert prior_weights("minmax", 5, 0.0) == [0.5] * 5  # no decay: the midpoint, i.e. Eq. 13
    assert all(math.isfinite(w) for w in prior_weights("minmax", 80, 800.0) + prior_weights("minmax", 80, -800.0))
    with pytest.raises(ValueError, match="bounds"):
        prior_weights("minmax", 4, 0.1, bounds=(0.9, 0.1))


@pytest.mark.parametrize(("alpha", "scale"), [(0.1, 0.6), (0.02, 0.3), (-0.5, 0.9)])
def test_fitted_prior_is_the_fitted_attention_ratio(alpha: float, scale: float):
    expected = [min(1.0, scale * math.exp(-alpha * l)) for l in range(1, 7)]
    assert prior_weights("fitted", 6, alpha, scale=scale) == pytest.approx(expected)


def test_fitted_prior_needs_a_scale_and_never_overflows():
    with pytest.raises(ValueError, match="scale"):
        prior_weights("fitted", 4, 0.1)
    assert prior_weights("fitted", 3, -1000.0, scale=0.5) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("kind", ["relative", "minmax", "fitted"])
def test_alpha_priors_need_alpha(kind: str):
    with pytest.raises(ValueError, match="alpha"):
        prior_weights(kind, 4, None, scale=1.0)  # type: ignore[arg-type]

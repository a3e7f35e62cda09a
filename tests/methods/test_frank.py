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

"""The three guidance variants against a direct float64 computation, and their properties."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from frankmerge.drift.errors import DriftOptionError
from frankmerge.drift.guidance import VARIANTS, GuidanceHooks, Guide, PriorTerm, Target, guided_gradient
from tests.drift.helpers import reference_guided

SHAPES = [(7,), (16, 5), (3, 4, 6)]


def _pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen) * 0.1


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", [-1.0, -0.3, 2.0])
def test_variant_matches_direct_computation(variant: str, shape: tuple[int, ...], alpha: float) -> None:
    for seed in range(5):
        g, delta = _pair(shape, seed)
        got = guided_gradient(g, delta, variant, alpha)
        torch.testing.assert_close(got.double(), reference_guided(g, delta, variant, alpha), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["grad_norm", "adaptive"])
@pytest.mark.parametrize("alpha", [-1.0, -2.0])
def test_update_never_points_away_from_reasoner(variant: str, alpha: float) -> None:
    """The step −lr·g̃ never has a negative component along Δ, whatever g (α ≤ −1)."""
    gen = torch.Generator().manual_seed(1)
    delta = torch.randn(64, generator=gen)
    candidates = [torch.randn(64, generator=gen) * s for s in (1e-3, 1.0, 1e3) for _ in range(50)]
    candidates += [delta * 5, -delta * 5, delta + 1e-3 * torch.randn(64, generator=gen)]  # cos ≈ ±1
    for g in candidates:
        step = -guided_gradient(g, delta, variant, alpha).double()
        assert float(step @ delta.double()) >= -1e-6 * float(g.norm() * delta.norm())  # float32 rounding at cos = 1


def test_absolute_has_no_such_guarantee() -> None:
    """Why the property above matters: absolute can step away from the reasoner when g dominates."""
    delta = torch.ones(8)
    step = -guided_gradient(delta * 10, delta, "absolute")
    assert float(step @ delta) < 0


def test_adaptive_limits() -> None:
    """α' = α(1+cos)/2 with α = −1: g unchanged at cos = −1, g̃ = 0 at cos = +1."""
    delta = torch.randn(32, generator=torch.Generator().manual_seed(2))
    g = -3.0 * delta  # cos = −1 → α' = 0
    torch.testing.assert_close(guided_gradient(g, delta, "adaptive"), g)
    g = 3.0 * delta  # cos = +1 → α' = −1, g̃ = g − ‖g‖Δ̂ = 0
    torch.testing.assert_close(guided_gradient(g, delta, "adaptive"), torch.zeros_like(g), atol=1e-5, rtol=0)


def test_zero_tensors_are_safe() -> None:
    """ε keeps Δ = 0 or g = 0 finite; a zero prior leaves g alone, a zero gradient stays zero for adaptive."""
    g, delta = _pair((10,), 3)
    for variant in VARIANTS:
        torch.testing.assert_close(guided_gradient(g, torch.zeros(10), variant), g)
    zero = torch.zeros(10)
    torch.testing.assert_close(guided_gradient(zero, delta, "adaptive"), zero)
    torch.testing.assert_close(guided_gradient(zero, delta, "grad_norm"), zero)
    torch.testing.assert_close(guided_gradient(zero, delta, "absolute"), -delta)


def test_sign_convention_moves_toward_reasoner() -> None:
    """With α = −1 and no loss gradient, one SGD step moves θ by +lr·Δ (toward θ_R)."""
    theta = nn.Parameter(torch.zeros(4))
    delta = torch.tensor([1.0, -2.0, 0.5, 3.0])
    hooks = GuidanceHooks(
        Guide("absolute"), [Target("theta", theta, PriorTerm.build(delta, "absolute", dtype=torch.float32))], "backward"
    )
    (theta * 0).sum().backward()
    torch.optim.SGD([theta], lr=0.1).step()
    torch.testing.assert_close(theta.detach(), 0.1 * delta)
    hooks.remove()


def _toy(seed: int) -> tuple[nn.Linear, torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(6, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(4, 6, generator=gen))
        layer.bias.copy_(torch.randn(4, generator=gen))
    delta = torch.randn(4, 6, generator=gen) * 0.2
    batches = [torch.randn(3, 6, generator=gen) for _ in range(2)]
    return layer, delta, batches


def _micro_grad(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    probe = nn.Linear(6, 4)
    probe.load_state_dict(layer.state_dict())
    (probe(x) ** 2).sum().backward()
    assert probe.weight.grad is not None
    return probe.weight.grad.clone()


@pytest.mark.parametrize("variant", VARIANTS)
def test_backward_hooks_guide_each_micro_batch(variant: str) -> None:
    """timing=backward: with accumulation, .grad = Σ g̃(g_i) — the prior enters once per micro-batch."""
    layer, delta, batches = _toy(0)
    expected = sum(reference_guided(_micro_grad(layer, x), delta, variant) for x in batches)
    term = PriorTerm.build(delta, variant, dtype=torch.float32)
    hooks = GuidanceHooks(Guide(variant), [Target("weight", layer.weight, term)], "backward")
    for x in batches:
        (layer(x) ** 2).sum().backward()
    torch.testing.assert_close(layer.weight.grad.double(), expected, rtol=1e-5, atol=1e-5)
    assert layer.bias.grad is not None and hooks.num_hooks == 1
    hooks.remove()


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_timing_guides_the_accumulated_gradient(variant: str) -> None:
    """timing=step: the optimizer sees g̃(Σ g_i), applied once, just before it steps."""
    layer, delta, batches = _toy(1)
    accumulated = sum(_micro_grad(layer, x) for x in batches)
    expected = layer.weight.detach().double() - reference_guided(accumulated, delta, variant)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    term = PriorTerm.build(delta, variant, dtype=torch.float32)
    hooks = GuidanceHooks(Guide(variant), [Target("weight", layer.weight, term)], "step", optimizer)
    for x in batches:
        (layer(x) ** 2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, accumulated)  # untouched until the step
    optimizer.step()
    torch.testing.assert_close(layer.weight.detach().double(), expected, rtol=1e-5, atol=1e-5)
    hooks.remove()


@pytest.mark.parametrize("placement", ["device", "pinned", "host_copy"])
def test_placements_compute_the_same_gradient(placement: str) -> None:
    layer, delta, batches = _toy(2)
    expected = reference_guided(_micro_grad(layer, batches[0]), delta, "adaptive")
    term = PriorTerm.build(delta, "adaptive", dtype=torch.float32, placement=placement)
    hooks = GuidanceHooks(Guide("adaptive"), [Target("weight", layer.weight, term)], "backward")
    (layer(batches[0]) ** 2).sum().backward()
    torch.testing.assert_close(layer.weight.grad.double(), expected, rtol=1e-5, atol=1e-5)
    assert term.tensor.dtype == torch.float32 and term.tensor.device.type == "cpu"
    hooks.remove()


def test_bf16_prior_is_close_and_keeps_gradient_dtype() -> None:
    """Δ̂ stored in bf16 changes g̃ by bf16 rounding only; a bf16 gradient stays bf16."""
    g, delta = _pair((64, 32), 4)
    guide = Guide("adaptive")
    term = PriorTerm.build(delta, "adaptive", dtype=torch.bfloat16)
    got = guide.guided(g, term)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference_guided(g, delta, "adaptive"), rtol=2e-2, atol=2e-2 * float(g.abs().max()))
    assert guide.guided(g.bfloat16(), term).dtype == torch.bfloat16
    assert guide.guided(g.half(), term).dtype == torch.float16


def test_mean_cos_is_tracked_for_adaptive() -> None:
    g, delta = _pair((20,), 5)
    guide = Guide("adaptive")
    guide.guided(g, PriorTerm.build(delta, "adaptive", dtype=torch.float32))
    expected = float((g.double() @ delta.double()) / (g.double().norm() * delta.double().norm()))
    assert guide.calls == 1 and guide.mean_cos() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("bad", ["relative", "adaptiv", ""])
def test_unknown_variant_lists_the_valid_ones(bad: str) -> None:
    with pytest.raises(DriftOptionError, match="absolute, grad_norm, adaptive"):
        Guide(bad)


def test_variant_aliases() -> None:
    assert Guide("grad-norm").variant == "grad_norm"
    assert Guide(" Adaptive ").variant == "adaptive"

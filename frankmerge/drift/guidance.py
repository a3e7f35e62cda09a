"""DRIFT's gradient guidance: the three variants and the hooks that apply them.

With SFT gradient g of one parameter tensor, prior Δ = θ_R − θ_V and α (−1 by default):

* absolute:  g̃ = g + α Δ
* grad_norm: g̃ = g + α ‖g‖ Δ/‖Δ‖
* adaptive:  α' = α (1 + cos(g, Δ))/2,  g̃ = g + α' ‖g‖ Δ/‖Δ‖

Norms and the dot product are per tensor, each norm clamped below at ε = 1e-12. An optimizer
moves θ by −lr·g̃, so α < 0 adds +lr·|α|·(…)Δ: a step toward the reasoner. What a hook needs is
precomputed once per tensor (``PriorTerm``): Δ itself for absolute, Δ̂ = Δ/max(‖Δ‖, ε) and ‖Δ‖
otherwise, so cos(g, Δ) = ⟨g, Δ̂⟩ / max(‖g‖, ε) and no per-step work touches ‖Δ‖.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from frankmerge.drift.errors import DriftOptionError

log = logging.getLogger(__name__)

EPS = 1e-12
VARIANTS: tuple[str, ...] = ("absolute", "grad_norm", "adaptive")
# device: Δ resident beside its parameter; pinned: in (pinned) host memory, copied per use
# without blocking; host_copy: the public implementation's float32 host Δ copied on every
# backward with ‖Δ‖ recomputed, kept only as a measured comparison.
PLACEMENTS: tuple[str, ...] = ("device", "pinned", "host_copy")
# backward: a tensor hook per parameter on each micro-batch gradient, before accumulation and
# before any data-parallel reduction (the paper's code); step: once per optimizer step on the
# accumulated, reduced .grad.
TIMINGS: tuple[str, ...] = ("backward", "step")


def _choose(kind: str, value: str, valid: tuple[str, ...]) -> str:
    name = value.strip().lower().replace("-", "_")
    if name not in valid:
        raise DriftOptionError(f"--{kind} {value!r}: unknown {kind}; valid ones are {', '.join(valid)}")
    return name


def parse_variant(value: str) -> str:
    return _choose("variant", value, VARIANTS)


def parse_placement(value: str) -> str:
    return _choose("placement", value, PLACEMENTS)


def parse_timing(value: str) -> str:
    return _choose("timing", value, TIMINGS)


@dataclass
class PriorTerm:
    """One tensor's precomputed prior: Δ (absolute) or Δ̂ (norm-based variants), and ‖Δ‖."""

    tensor: torch.Tensor
    norm: float
    placement: str = "device"

    @classmethod
    def build(
        cls,
        delta: torch.Tensor,
        variant: str,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        placement: str = "device",
        eps: float = EPS,
    ) -> PriorTerm:
        # The arithmetic runs where Δ will live: on the accelerator for `device`, not on the host.
        work = torch.device(device) if placement == "device" else torch.device("cpu")
        delta32 = delta.detach().to(work).to(torch.float32)
        norm = float(torch.linalg.vector_norm(delta32, dtype=torch.float64))
        if placement == "host_copy":  # as the public code: raw float32 Δ on the host, nothing precomputed
            return cls(delta32.contiguous(), norm, placement)
        stored = (delta32 if variant == "absolute" else delta32 / max(norm, eps)).to(dtype).contiguous()
        if placement == "pinned" and _can_pin():
            stored = stored.pin_memory()
        return cls(stored, norm, placement)

    @property
    def nbytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size()

    def on(self, device: torch.device) -> torch.Tensor:
        if self.placement == "device":
            return self.tensor
        if self.placement == "pinned":
            return self.tensor.to(device, non_blocking=True)
        return self.tensor.to(device, copy=True)  # host_copy: a fresh transfer every call


def _can_pin() -> bool:
    try:
        return torch.cuda.is_available() or bool(getattr(torch, "accelerator", None) and torch.accelerator.is_available())
    except RuntimeError:
        return False


@dataclass
class Guide:
    """The variant's arithmetic, shared by the backward hooks, the step hook and the tests."""

    variant: str
    alpha: float = -1.0
    eps: float = EPS
    calls: int = 0
    _cos_sums: dict[torch.device, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.variant = parse_variant(self.variant)

    def coefficient(self, g: torch.Tensor, d: torch.Tensor) -> torch.Tensor | float:
        """c such that g̃ = g + c·d, with d the stored Δ (absolute) or Δ̂; a device scalar, no sync."""
        if self.variant == "absolute":
            self.record(1)
            return self.alpha
        g_norm = torch.linalg.vector_norm(g, dtype=torch.float32)
        return self.from_sums(g_norm, dot32(g, d) if self.variant == "adaptive" else None)

    def from_sums(self, g_norm: torch.Tensor, dot: torch.Tensor | None) -> torch.Tensor:
        """c from ‖g‖ and ⟨g, d⟩ (d = Δ̂) already reduced, one entry per tensor (norm-based variants).

        The single place the norm-based formulas live: the per-tensor hooks pass one tensor's
        values, the sharded step hook the all-reduced values of every tensor at once.
        """
        if self.variant == "grad_norm":
            self.record(g_norm.numel())
            return self.alpha * g_norm
        if dot is None:
            raise DriftOptionError("adaptive guidance needs ⟨g, Δ̂⟩")
        cos = dot / g_norm.clamp_min(self.eps)
        self.record(g_norm.numel(), cos.detach().sum())
        return self.alpha * 0.5 * (1.0 + cos) * g_norm

    def record(self, count: int, cos_sum: torch.Tensor | None = None) -> None:
        """Count ``count`` guided gradients and add their cosines (a device scalar: no host sync)."""
        self.calls += count
        if cos_sum is not None:
            total = self._cos_sums.get(cos_sum.device)
            self._cos_sums[cos_sum.device] = cos_sum if total is None else total + cos_sum

    def guided(self, g: torch.Tensor, term: PriorTerm) -> torch.Tensor:
        """g̃ as a new tensor (what a tensor hook must return; autograd owns ``g``)."""
        d = self._direction(term, g.device)
        c = self.coefficient(g, d)
        out = torch.add(g, d, alpha=c) if isinstance(c, float) else torch.addcmul(g, d, c.to(g.dtype))
        return out if out.dtype == g.dtype else out.to(g.dtype)

    def guide_(self, grad: torch.Tensor, term: PriorTerm) -> None:
        """g ← g̃ in place (for an accumulated ``.grad`` that nobody else holds)."""
        d = self._direction(term, grad.device)
        c = self.coefficient(grad, d)
        if isinstance(c, float):
            grad.add_(d, alpha=c)
        else:
            grad.addcmul_(d, c.to(grad.dtype))

    def _direction(self, term: PriorTerm, device: torch.device) -> torch.Tensor:
        d = term.on(device)
        if term.placement == "host_copy" and self.variant != "absolute":
            d = d / torch.linalg.vector_norm(d).clamp_min(self.eps)  # recomputed every call, as the paper's code
        return d

    def mean_cos(self) -> float | None:
        """Mean cos(g, Δ) over every guided gradient so far (adaptive only; one host sync)."""
        if not self._cos_sums or not self.calls:
            return None
        total = sum(float(t) for t in self._cos_sums.values())
        return total / self.calls


def guided_gradient(g: torch.Tensor, delta: torch.Tensor, variant: str, alpha: float = -1.0, eps: float = EPS) -> torch.Tensor:
    """g̃ for one tensor from g and the raw Δ, in float32 — the formulas above, for checks and tests."""
    term = PriorTerm.build(delta, parse_variant(variant), device=g.device, dtype=torch.float32, eps=eps)
    return Guide(variant, alpha, eps).guided(g.to(torch.float32), term)


def dot32(g: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    if g.dtype == d.dtype == torch.float32:
        return torch.dot(g.reshape(-1), d.reshape(-1))
    return torch.sum(g * d, dtype=torch.float32)


@dataclass(frozen=True)
class Target:
    """A guided parameter: its name in the model, the parameter, and its prior."""

    name: str
    param: torch.nn.Parameter
    term: PriorTerm


class GuidanceHooks:
    """Registers the guide on every target, per backward pass or once per optimizer step."""

    def __init__(self, guide: Guide, targets: list[Target], timing: str, optimizer: torch.optim.Optimizer | None = None):
        self.guide = guide
        self.targets = targets
        self.timing = parse_timing(timing)
        self._handles: list[Any] = []
        if self.timing == "backward":
            for target in targets:
                self._handles.append(target.param.register_hook(partial(self._backward_hook, target.term)))
        else:
            if optimizer is None:
                raise DriftOptionError("timing 'step' needs the optimizer whose step applies the guidance")
            self._handles.append(innermost_optimizer(optimizer).register_step_pre_hook(self._step_hook))

    @property
    def num_hooks(self) -> int:
        """Guided tensors (one tensor hook each, or all served by one optimizer pre-step hook)."""
        return len(self.targets)

    def _backward_hook(self, term: PriorTerm, grad: torch.Tensor) -> torch.Tensor:
        return self.guide.guided(grad, term)

    def _step_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for target in self.targets:
                grad = target.param.grad
                if grad is not None:
                    self.guide.guide_(grad, target.term)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def innermost_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer under wrappers (accelerate's AcceleratedOptimizer, ...).

    Its pre-step hooks run inside a GradScaler's ``step``, after unscaling, and not at all when
    the scaler skips a step with non-finite gradients.
    """
    inner = optimizer
    while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):
        inner = inner.optimizer
    if not isinstance(inner, torch.optim.Optimizer):
        raise DriftOptionError(f"timing 'step' needs a torch optimizer, got {type(optimizer).__name__}")
    return inner

"""Element-wise merge rules: TIES and DARE, as published, and as mergekit implements them.

Each rule maps the two task vectors of one tensor (float32, whole tensor) to the merged delta
that is added to θ_0. Paper semantics (method.md):

* TIES: trim each τ to its top ``density`` fraction by magnitude; elect the sign of Σ τ̃;
  disjoint mean of the *weighted* entries that agree with it (divided by the number of agreeing
  models); scale by λ.
* DARE: drop each entry with probability p, rescale the survivors by 1/(1 − p); then a weighted
  sum (DARE-linear) or the TIES election and disjoint mean (DARE-TIES).

``mergekit_compat`` reproduces mergekit 0.1.x instead: the sign is elected on the weighted
deltas (a zero sum counts as +), TIES divides by the summed *weights* of the agreeing models,
DARE-TIES does not divide at all, and DARE rescales survivors to the tensor's original L1 norm.
"""

from __future__ import annotations

import zlib

import torch


def trim_by_magnitude(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (at least one)."""
    if density >= 1.0 or tau.numel() == 0:
        return tau
    k = max(1, int(density * tau.numel()))
    flat = tau.reshape(-1)
    keep = torch.topk(flat.abs(), k, sorted=False).indices
    out = torch.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(tau.shape)


def drop_and_rescale(tau: torch.Tensor, drop_rate: float, generator: torch.Generator, *, l1_rescale: bool) -> torch.Tensor:
    """DARE: Bernoulli(1 − p) keep mask; survivors × 1/(1 − p), or (mergekit) × ‖τ‖₁/‖kept‖₁."""
    keep = torch.rand(tau.shape, generator=generator) >= drop_rate
    kept = tau * keep
    if not l1_rescale:
        return kept / (1.0 - drop_rate)
    before, after = tau.abs().sum(), kept.abs().sum()
    if before < 1e-7 or after < 1e-7:
        return kept
    return kept * (before / after)


def elect_and_merge(
    deltas: list[torch.Tensor], weights: list[float], *, mergekit_compat: bool, normalize: bool = True
) -> torch.Tensor:
    """TIES sign election and disjoint merge of already sparsified deltas."""
    weighted = [w * d for w, d in zip(weights, deltas, strict=True)]
    if mergekit_compat:
        total = torch.stack(weighted).sum(0)
        elected = torch.where(total >= 0, 1.0, -1.0)
        agree = [torch.sign(d) == elected for d in weighted]
        merged = sum(d * a for d, a in zip(weighted, agree, strict=True))
        if not normalize:
            return merged  # type: ignore[return-value]
        divisor = sum(w * a for w, a in zip(weights, agree, strict=True))
        divisor = torch.where(divisor == 0, 1.0, divisor)  # type: ignore[arg-type]
        return merged / divisor  # type: ignore[operator]
    elected = torch.sign(torch.stack(deltas).sum(0))
    agree = [(torch.sign(d) == elected) & (d != 0) for d in deltas]
    merged = sum(d * a for d, a in zip(weighted, agree, strict=True))
    count = sum(a.to(torch.float32) for a in agree)
    return merged / torch.clamp(count, min=1.0)  # type: ignore[operator,arg-type]


def tensor_generator(seed: int, role: str, name: str) -> torch.Generator:
    """A generator that depends only on (seed, role, tensor name): order-independent and reproducible."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(f"{role}:{name}".encode())) % (2**63))

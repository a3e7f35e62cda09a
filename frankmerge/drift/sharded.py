"""DRIFT on FSDP2-sharded parameters: each rank guides its own shard with its own rows of Δ.

The variants need three per-tensor numbers, ‖g‖, ‖Δ‖ and ⟨g, Δ⟩, and each is a sum over the
tensor's elements, so it is the sum of the same quantity over the shards. A rank therefore

* reads only its rows of Δ from the prior (``DriftPrior.rows``) and keeps only those, so the
  resident prior per rank is |Δ| / world size;
* computes ‖Δ‖ once at attach time (local sums of squares, one all-reduce for every tensor);
* at each optimizer step, on the reduced, accumulated sharded gradient, computes the local
  ‖g‖² and ⟨g, Δ̂⟩ of every guided tensor into one vector, all-reduces that vector once (one
  collective per step, whatever the number of tensors; none for ``absolute``), and applies
  g̃ = g + c·d shard by shard with the coefficients of ``Guide.from_sums``.

The result is the single-process ``timing="step"`` update up to float32 summation order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from frankmerge.drift.guidance import EPS, Guide, PriorTerm, dot32, innermost_optimizer
from frankmerge.drift.prior_file import DriftPrior
from frankmerge.drift.sharding import RowShard, is_dtensor, row_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardTarget:
    """A guided parameter on this rank: its name, the (DTensor) parameter, its rows and its rows of Δ."""

    name: str
    param: nn.Parameter
    shard: RowShard
    term: PriorTerm  # Δ or Δ̂ restricted to the rows; ``norm`` is the whole tensor's ‖Δ‖


def reduce_by_group(values: torch.Tensor, groups: list[Any]) -> int:
    """Sum row i of ``values`` over ``groups[i]`` in place, one all-reduce per distinct group; return the count.

    FSDP2 shards every parameter over the same mesh dimension, so this is one collective.
    Rows whose group is None (an unsharded tensor) are already whole.
    """
    distinct: list[Any] = []
    for group in groups:
        if group is not None and all(group is not seen for seen in distinct):
            distinct.append(group)
    for group in distinct:
        rows = [i for i, g in enumerate(groups) if g is group]
        if len(rows) == len(groups):
            dist.all_reduce(values, group=group)
        else:
            index = torch.tensor(rows, device=values.device)
            part = values.index_select(0, index)
            dist.all_reduce(part, group=group)
            values.index_copy_(0, index, part)
    return len(distinct)


def shard_targets(
    trainable: dict[str, tuple[str, nn.Parameter]],
    prior: DriftPrior,
    variant: str,
    *,
    dtype_of: Any,
    placement: str = "device",
    eps: float = EPS,
) -> list[ShardTarget]:
    """This rank's rows of Δ for every trainable covered parameter, with ‖Δ‖ reduced over the shards."""
    shards = {canonical: row_shard(param) for canonical, (_, param) in trainable.items()}
    local = dict(prior.rows((c, s.start, s.stop) for c, s in shards.items()))
    names = list(shards)
    device = _local(trainable[names[0]][1]).device
    sums = torch.stack([torch.sum(local[c].to(device, torch.float64).square()) for c in names])
    reduce_by_group(sums, [shards[c].group for c in names])
    norms = sums.sqrt().tolist()  # one host sync, at attach time
    targets = []
    for canonical, norm in zip(names, norms, strict=True):
        name, param = trainable[canonical]
        work = _local(param).device if placement == "device" else torch.device("cpu")
        delta32 = local.pop(canonical).to(work, torch.float32)
        stored = (delta32 if variant == "absolute" else delta32 / max(norm, eps)).to(dtype_of(param)).contiguous()
        if placement == "pinned" and torch.cuda.is_available():
            stored = stored.pin_memory()
        targets.append(ShardTarget(name, param, shards[canonical], PriorTerm(stored, norm, placement)))
    return targets


class ShardedGuidanceHooks:
    """One optimizer pre-step hook that guides every sharded gradient with one all-reduce."""

    timing = "step"

    def __init__(self, guide: Guide, targets: list[ShardTarget], optimizer: torch.optim.Optimizer) -> None:
        self.guide = guide
        self.targets = targets
        self.collectives = 0  # all-reduces issued by the step hook, over the whole run
        self.steps = 0
        self._handle = innermost_optimizer(optimizer).register_step_pre_hook(self._step_hook)

    @property
    def num_hooks(self) -> int:
        return len(self.targets)

    def _step_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """g ← g̃ on every sharded ``.grad`` (what the optimizer is about to use)."""
        present = [(t, _local(t.param.grad)) for t in self.targets if t.param.grad is not None]
        if not present:
            return
        self.steps += 1
        if self.guide.variant == "absolute":
            self.guide.record(len(present))
            for target, grad in present:
                grad.add_(target.term.on(grad.device), alpha=self.guide.alpha)
            return
        directions = [target.term.on(grad.device) for target, grad in present]
        sums = torch.stack(
            [torch.stack((dot32(grad, grad), dot32(grad, d))) for (_, grad), d in zip(present, directions, strict=True)]
        ).to(torch.float64)
        self.collectives += reduce_by_group(sums, [target.shard.group for target, _ in present])
        g_norm = sums[:, 0].clamp_min(0).sqrt()
        coefficients = self.guide.from_sums(g_norm, sums[:, 1] if self.guide.variant == "adaptive" else None)
        for i, ((_, grad), d) in enumerate(zip(present, directions, strict=True)):
            grad.addcmul_(d, coefficients[i].to(grad.dtype))

    def remove(self) -> None:
        self._handle.remove()


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if is_dtensor(tensor) else tensor  # type: ignore[attr-defined]

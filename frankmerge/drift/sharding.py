"""Where a rank's shard of an FSDP2 parameter lies: a contiguous row range of the whole tensor.

FSDP2 (``torch.distributed.fsdp.fully_shard``) turns each parameter into a ``DTensor`` placed
``Shard(0)`` on its mesh's sharding dimension (``Replicate()`` on an HSDP replica dimension), and
splits dim 0 as ``torch.chunk`` does: every rank but the last few holds ⌈n/world⌉ rows, so a
shard may be shorter than the others or empty (a dim-0 of 1 or 3 across 2 ranks). The rows a
rank holds are the only bytes of Δ it has to read and keep, and the ranks that hold other rows
of the same tensor form the group over which per-tensor sums are reduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from frankmerge.drift.errors import DriftSetupError


@dataclass(frozen=True)
class RowShard:
    """Rows ``[start, stop)`` of a tensor of ``shape`` held by this rank; ``group`` holds the other rows."""

    shape: tuple[int, ...]
    start: int
    stop: int
    group: Any = None  # the process group of the mesh dimension that shards dim 0; None: not sharded

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def local_shape(self) -> tuple[int, ...]:
        return (self.rows, *self.shape[1:]) if self.shape else ()


def is_dtensor(tensor: object) -> bool:
    """A ``DTensor`` parameter (FSDP2 or another DTensor-based parallelism)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(tensor, DTensor)


def unsupported_sharding(param: object) -> str | None:
    """Why a parameter's sharding cannot be guided (ZeRO-3, FSDP1), or None when it can."""
    if hasattr(param, "ds_shape"):
        return (
            "a DeepSpeed ZeRO-3 partitioned parameter (its data lives in flat partitions outside the module, and no "
            "hook sees its gradient as a tensor); use FSDP2 (drift-train --fsdp, or an accelerate FSDP2 config) "
            "or ZeRO-1/2"
        )
    if type(param).__name__ == "FlatParameter" or getattr(param, "_is_flat_param", False):
        return (
            "an FSDP1 FlatParameter (many tensors flattened into one, so per-tensor norms do not exist); "
            "use FSDP2 (fsdp_version: 2 in the accelerate config, or drift-train --fsdp)"
        )
    return None


def row_shard(param: torch.Tensor) -> RowShard:
    """The rows of ``param`` this rank holds: all of them for a plain tensor, its ``Shard(0)`` rows for a DTensor."""
    shape = tuple(param.shape)
    if not is_dtensor(param):
        return RowShard(shape, 0, shape[0] if shape else 0)
    from torch.distributed.tensor import Replicate, Shard

    mesh, placements = param.device_mesh, param.placements  # type: ignore[attr-defined]
    sharded = [dim for dim, p in enumerate(placements) if isinstance(p, Shard)]
    if any(not isinstance(p, (Shard, Replicate)) for p in placements) or any(placements[d].dim != 0 for d in sharded):
        raise DriftSetupError(
            f"a parameter of shape {list(shape)} is placed {placements}; sharded guidance supports FSDP2's Shard(0) "
            "(with Replicate for HSDP) only"
        )
    if len(sharded) > 1:
        raise DriftSetupError(f"a parameter of shape {list(shape)} is sharded on dim 0 by {len(sharded)} mesh dimensions")
    local = tuple(param.to_local().shape)  # type: ignore[attr-defined]
    if not sharded:
        return RowShard(shape, 0, shape[0] if shape else 0)
    dim = sharded[0]
    size, rank = mesh.size(dim), mesh.get_local_rank(dim)
    chunk = -(-shape[0] // size)  # torch.chunk: ⌈n/size⌉ rows per rank, the tail short or empty
    start = min(rank * chunk, shape[0])
    stop = min(start + chunk, shape[0])
    result = RowShard(shape, start, stop, mesh.get_group(dim))
    if result.local_shape != local:
        raise DriftSetupError(
            f"a parameter of shape {list(shape)}: this rank's shard is {list(local)}, expected rows {start}:{stop} "
            "(torch.chunk split); this torch version shards differently"
        )
    return result

"""Streaming safetensors writer: shards planned up front, data written as it is produced.

Every output tensor's name, dtype and shape is known before the merge starts, so each shard's
header can be written first and the tensor bytes streamed after it, chunk by chunk. Memory use is
one chunk, whatever the shard size; ``max_shard_bytes`` only decides how the files are split.
"""

from __future__ import annotations

import errno
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from frankmerge.checkpoints.dtypes import TORCH_TO_SAFETENSORS, element_size
from frankmerge.checkpoints.reader import SAFE_INDEX
from frankmerge.errors import DiskFullError

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel * element_size(self.dtype)


def parse_size(text: str | int) -> int:
    """``"5GB"`` -> 5_000_000_000 (decimal units, as transformers' ``max_shard_size``)."""
    if isinstance(text, int):
        return text
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1}
    cleaned = text.strip().upper()
    for unit, factor in units.items():
        if cleaned.endswith(unit):
            return int(float(cleaned[: -len(unit)]) * factor)
    return int(cleaned)


def _disk_error(exc: OSError, path: Path) -> Exception:
    if exc.errno in _DISK_FULL:
        return DiskFullError(f"disk full while writing {path}; free space on {path.parent} or choose another --out")
    return exc


class ShardedWriter:
    """Writes planned tensors, in plan order, into ``model-XXXXX-of-YYYYY.safetensors`` files."""

    def __init__(self, directory: Path, plan: list[PlannedTensor], max_shard_bytes: int) -> None:
        self.directory = directory
        self.shards = _split(plan, max_shard_bytes)
        self._order = [t for shard in self.shards for t in shard]
        self._shard_of = {t.name: i for i, shard in enumerate(self.shards) for t in shard}
        self._position = 0  # index into _order of the tensor being written
        self._written = 0  # bytes of the current tensor written so far
        self._handle: io.FileIO | None = None
        self._open_shard = -1

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self._order)

    def shard_name(self, index: int) -> str:
        return f"model-{index + 1:05d}-of-{len(self.shards):05d}.safetensors"

    def expect(self) -> PlannedTensor:
        return self._order[self._position]

    def write(self, name: str, chunk: torch.Tensor) -> None:
        """Append a flat chunk of tensor ``name``; tensors must arrive whole and in plan order."""
        planned = self._begin(name)
        if chunk.dtype != planned.dtype:
            raise TypeError(f"{name}: chunk dtype {chunk.dtype} != planned {planned.dtype}")
        data = chunk.contiguous().reshape(-1).view(torch.uint8).numpy()
        self._append(planned, memoryview(data))

    def copy_from(self, name: str, source_fd: int, offset: int, nbytes: int) -> None:
        """Append raw bytes of ``name`` straight from another file (kernel-side copy when possible)."""
        planned = self._begin(name)
        assert self._handle is not None
        fd = self._handle.fileno()
        path = self.directory / self.shard_name(self._open_shard)
        done = 0
        try:
            while done < nbytes:
                got = os.copy_file_range(source_fd, fd, nbytes - done, offset + done)
                if got == 0:
                    break
                done += got
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise _disk_error(exc, path) from exc
            # Not supported here (old kernel, some filesystems): fall back to plain reads below.
        while done < nbytes:
            block = os.pread(source_fd, min(64 << 20, nbytes - done), offset + done)
            if not block:
                raise OSError(errno.EIO, f"short read copying {name}")
            self._raw_write(block, path)
            done += len(block)
        self._advance(planned, nbytes)

    def close(self) -> dict[str, str]:
        """Finish the last shard and write the index; return the weight map."""
        if self._position != len(self._order):
            missing = self._order[self._position].name
            raise RuntimeError(f"writer closed before tensor {missing!r} was written")
        self._close_shard()
        weight_map = {t.name: self.shard_name(self._shard_of[t.name]) for t in self._order}
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        path = self.directory / SAFE_INDEX
        try:
            path.write_text(json.dumps(index, indent=2) + "\n")
        except OSError as exc:
            raise _disk_error(exc, path) from exc
        return weight_map

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    # -- internals -----------------------------------------------------------------------------
    def _begin(self, name: str) -> PlannedTensor:
        planned = self._order[self._position]
        if planned.name != name:
            raise RuntimeError(f"expected tensor {planned.name!r} next, got {name!r}")
        shard = self._shard_of[name]
        if shard != self._open_shard:
            self._close_shard()
            self._open(shard)
        return planned

    def _append(self, planned: PlannedTensor, data: memoryview) -> None:
        self._raw_write(data, self.directory / self.shard_name(self._open_shard))
        self._advance(planned, len(data))

    def _advance(self, planned: PlannedTensor, nbytes: int) -> None:
        self._written += nbytes
        if self._written > planned.nbytes:
            raise RuntimeError(f"{planned.name}: wrote {self._written} bytes, planned {planned.nbytes}")
        if self._written == planned.nbytes:
            self._position += 1
            self._written = 0

    def _raw_write(self, data: bytes | memoryview, path: Path) -> None:
        assert self._handle is not None
        view = memoryview(data).cast("B")
        try:
            while view:
                written = self._handle.write(view)
                if not written:
                    raise OSError(errno.ENOSPC, "write returned 0 bytes")
                view = view[written:]
        except OSError as exc:
            raise _disk_error(exc, path) from exc

    def _open(self, shard: int) -> None:
        path = self.directory / self.shard_name(shard)
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for tensor in self.shards[shard]:
            header[tensor.name] = {
                "dtype": TORCH_TO_SAFETENSORS[tensor.dtype],
                "shape": list(tensor.shape),
                "data_offsets": [offset, offset + tensor.nbytes],
            }
            offset += tensor.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        try:
            self._handle = io.FileIO(path, "wb")
        except OSError as exc:
            raise _disk_error(exc, path) from exc
        self._open_shard = shard
        self._raw_write(len(raw).to_bytes(8, "little") + raw, path)
        if not self.shards[shard]:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._handle is None:
            return
        path = self.directory / self.shard_name(self._open_shard)
        try:
            self._handle.close()
        except OSError as exc:
            raise _disk_error(exc, path) from exc
        finally:
            self._handle = None


def _split(plan: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Greedy split in plan order; a tensor larger than the budget gets a shard of its own."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for tensor in plan:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards

"""Streaming safetensors writer: shards planned up front, data written as it is produced.

Every output tensor's name, dtype and shape is known before the merge starts, so each shard's
header can be written first and the tensor bytes streamed after it, chunk by chunk. Memory use is
one chunk, whatever the shard size; ``max_shard_bytes`` only decides how the files are split.

With ``background=True`` the file writes run on a thread of their own, overlapping the merge's
arithmetic: on a VM, writing into the page cache costs as much CPU as the merge itself. Chunks go
through a ring of a few preallocated slots (``buffer`` lends one to fill in place, so nothing is
copied twice); the bookkeeping stays on the caller's thread, errors surface there, in order.
Chunks are numpy arrays (a dtype's ``storage`` type, see ``dtypes.py``); torch tensors are taken too.
"""

from __future__ import annotations

import errno
import io
import json
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frankmerge import timing
from frankmerge.checkpoints.dtypes import DType, as_dtype, element_size, from_torch
from frankmerge.checkpoints.reader import SAFE_INDEX
from frankmerge.errors import DiskFullError

if TYPE_CHECKING:
    import torch

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: DType  # a torch dtype or a name is turned into its DType
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", as_dtype(self.dtype))

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

    def __init__(
        self,
        directory: Path,
        plan: list[PlannedTensor],
        max_shard_bytes: int,
        *,
        background: bool = False,
        slot_bytes: int = 32 << 20,
        slots: int = 3,
    ) -> None:
        self.directory = directory
        self.shards = _split(plan, max_shard_bytes)
        self._order = [t for shard in self.shards for t in shard]
        self._shard_of = {t.name: i for i, shard in enumerate(self.shards) for t in shard}
        self._position = 0  # index into _order of the tensor being written
        self._written = 0  # bytes of the current tensor written so far
        self._handle: io.FileIO | None = None
        self._open_shard = -1
        self._background = _Background(slot_bytes, slots) if background else None
        self._lent: np.ndarray[Any, Any] | None = None  # the slot ``buffer`` handed out, not yet written

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self._order)

    def shard_name(self, index: int) -> str:
        return f"model-{index + 1:05d}-of-{len(self.shards):05d}.safetensors"

    def expect(self) -> PlannedTensor:
        return self._order[self._position]

    def buffer(self, count: int, dtype: DType | torch.dtype) -> np.ndarray[Any, Any]:
        """A flat array of ``dtype``'s storage type to fill and pass to ``write`` (a free background slot; else a new array)."""
        dtype = as_dtype(dtype)
        if self._background is None or count * element_size(dtype) > self._background.slot_bytes:
            return np.empty(count, dtype=dtype.storage)
        slot = self._background.acquire()
        self._lent = slot
        return slot[: count * element_size(dtype)].view(dtype.storage)

    def write(self, name: str, chunk: np.ndarray[Any, Any] | torch.Tensor) -> None:
        """Append a flat chunk of tensor ``name``; tensors must arrive whole and in plan order."""
        planned = self._begin(name)
        if not isinstance(chunk, np.ndarray):
            if as_dtype(chunk.dtype) != planned.dtype:
                raise TypeError(f"{name}: chunk dtype {chunk.dtype} != planned {planned.dtype}")
            chunk = from_torch(chunk.contiguous())
        elif chunk.dtype != planned.dtype.storage:
            raise TypeError(f"{name}: chunk of numpy type {chunk.dtype} != planned {planned.dtype} ({planned.dtype.storage})")
        data = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
        if self._background is None:
            self._append(planned, memoryview(data))
            return
        lent, self._lent = self._lent, None
        if lent is not None and data.size and data.ctypes.data == lent.ctypes.data:
            self._queue_data(lent, data.size)
        else:
            if lent is not None:
                self._background.release(lent)
            for start in range(0, data.size, self._background.slot_bytes):
                piece = data[start : start + self._background.slot_bytes]
                slot = self._background.acquire()
                slot[: piece.size] = piece
                self._queue_data(slot, piece.size)
        self._advance(planned, data.size)

    def copy_from(self, name: str, source_fd: int, offset: int, nbytes: int) -> None:
        """Append raw bytes of ``name`` straight from another file (kernel-side copy when possible)."""
        planned = self._begin(name)
        self._drain()
        with timing.phase("copies"):  # after the drain: the queued writes are counted as writes
            self._copy_bytes(planned, source_fd, offset, nbytes)

    def _copy_bytes(self, planned: PlannedTensor, source_fd: int, offset: int, nbytes: int) -> None:
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
                raise OSError(errno.EIO, f"short read copying {planned.name}")
            self._raw_write(block, path)
            done += len(block)
        self._advance(planned, nbytes)

    def close(self) -> dict[str, str]:
        """Finish the last shard and write the index; return the weight map."""
        if self._position != len(self._order):
            missing = self._order[self._position].name
            raise RuntimeError(f"writer closed before tensor {missing!r} was written")
        self._drain()
        self._close_shard()
        if self._background is not None:
            self._background.stop()
        weight_map = {t.name: self.shard_name(self._shard_of[t.name]) for t in self._order}
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        path = self.directory / SAFE_INDEX
        try:
            path.write_text(json.dumps(index, indent=2) + "\n")
        except OSError as exc:
            raise _disk_error(exc, path) from exc
        return weight_map

    def abort(self) -> None:
        if self._background is not None:
            self._background.stop(discard=True)
            self._background = None
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
            self._drain()  # the previous shard's bytes are written before it is closed
            self._close_shard()
            self._open(shard)
        return planned

    def _append(self, planned: PlannedTensor, data: memoryview) -> None:
        self._raw_write(data, self.directory / self.shard_name(self._open_shard))
        self._advance(planned, len(data))

    def _queue_data(self, slot: np.ndarray[Any, Any], nbytes: int) -> None:
        assert self._background is not None
        path = self.directory / self.shard_name(self._open_shard)
        self._background.submit(lambda data: self._raw_write(data, path), slot, nbytes)

    def _drain(self) -> None:
        """Wait until every queued write is on its way to the file; raise the first error it had."""
        if self._background is not None:
            self._background.wait()

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
                "dtype": tensor.dtype.code,
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


class _Background:
    """One writer thread and a ring of reusable byte slots; the first error is kept and re-raised.

    A slot goes back to the ring once its bytes are written, or skipped after an error.
    """

    def __init__(self, slot_bytes: int, slots: int) -> None:
        self.slot_bytes = slot_bytes
        self._free: queue.SimpleQueue[np.ndarray[Any, Any]] = queue.SimpleQueue()
        for _ in range(max(2, slots)):
            self._free.put(np.empty(slot_bytes, dtype=np.uint8))
        self._jobs: queue.Queue[tuple[Callable[[memoryview], None], np.ndarray[Any, Any], int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="frankmerge-writer", daemon=True)
        self._thread.start()

    def acquire(self) -> np.ndarray[Any, Any]:
        self._raise()
        return self._free.get()

    def release(self, slot: np.ndarray[Any, Any]) -> None:
        self._free.put(slot)

    def submit(self, write: Callable[[memoryview], None], slot: np.ndarray[Any, Any], nbytes: int) -> None:
        self._raise()
        self._jobs.put((write, slot, nbytes))

    def wait(self) -> None:
        self._jobs.join()
        self._raise()

    def stop(self, *, discard: bool = False) -> None:
        if discard:
            self._failed = True
        self._jobs.put(None)
        self._thread.join()
        if not discard:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                write, slot, nbytes = job
                try:
                    if not self._failed:
                        with timing.phase("writes"):
                            write(memoryview(slot[:nbytes]))
                finally:
                    self.release(slot)
            except BaseException as exc:  # handed to the caller's thread
                self._failed = True
                self._error = exc
            finally:
                self._jobs.task_done()


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

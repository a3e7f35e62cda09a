"""Lazy, tensor-by-tensor reading of Hugging Face checkpoints.

Safetensors files are parsed from their JSON header (checked in ``header.py``) and memory-mapped (privately: writes never
reach the file); a chunk is a view of the mapping, so reading costs no copy out of the page cache. Callers ``release`` each
chunk once consumed, which drops its pages from the process's mapping (not from the page cache),
so touched pages never accumulate in resident memory and a merge's peak RSS stays flat whatever
the model size. Chunks are numpy arrays (``read_array``; bfloat16 as its ``uint16`` bits, see
``dtypes.py``), so the merge never imports torch; ``read_chunk``, ``chunks`` and ``load`` give torch
tensors to the commands that compute with torch. Pickled ``.bin`` checkpoints are only opened when the caller allows it, and then
with ``torch.load(weights_only=True)``, which cannot execute code.
"""

from __future__ import annotations

import json
import mmap
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frankmerge.checkpoints.dtypes import as_dtype, element_size, from_torch, to_torch
from frankmerge.checkpoints.header import TensorInfo, read_safetensors_header
from frankmerge.errors import CorruptCheckpointError, UnsafeCheckpointError, one_line

if TYPE_CHECKING:
    import torch

# Reads smaller than this are copied with ``pread`` rather than mapped. A page fault maps not one
# page but the page-cache pages around it (fault-around: 64 KiB by default, a whole large folio on
# recent kernels; on Linux 6.18 here 64 scattered rows of a 12 MiB matrix left all 12 MiB mapped),
# and ``release`` can only drop the pages inside the range it was given. The pair doctor's lineage
# reads ~14,000 single rows at 1.5B (64 rows of every tensor of three blocks, six reads per row
# set), which left 0.58 GB of the inputs mapped until the merge passed over them again: the peak of
# the merge's RSS (1.14 GB). Copies of up to 256 KiB cost microseconds; the merge's 2 MiB chunks
# stay zero-copy views, each released as the next one is read.
COPY_BELOW = 256 << 10

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"


class Checkpoint:
    """All tensors of one checkpoint directory, read on demand."""

    def __init__(self, directory: Path, *, allow_pickle: bool = False) -> None:
        self.directory = directory
        self.format = "safetensors"
        self.files: list[Path] = []
        self.header_bytes: dict[str, bytes] = {}
        self._tensors: dict[str, TensorInfo] = {}
        self._pickled: dict[str, torch.Tensor] = {}
        self._fds: dict[Path, int] = {}
        self._maps: dict[Path, np.ndarray[Any, Any]] = {}
        self._mmaps: dict[Path, mmap.mmap] = {}
        self._fd_lock = threading.Lock()
        index = directory / SAFE_INDEX
        if index.is_file():
            self._open_sharded(index)
        elif (directory / SAFE_SINGLE).is_file():
            self._open_file(directory / SAFE_SINGLE)
        elif (directory / PICKLE_INDEX).is_file() or (directory / PICKLE_SINGLE).is_file():
            if not allow_pickle:
                raise UnsafeCheckpointError(
                    f"{directory}: only pickled .bin weights found; pickles can run code, so pass --allow-pickle "
                    "to load them with torch.load(weights_only=True), or convert them to safetensors"
                )
            self._open_pickled(directory)
        else:
            raise CorruptCheckpointError(
                f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin found"
            )

    def _open_sharded(self, index: Path) -> None:
        weight_map = _read_weight_map(index)
        self.files.append(index)
        for shard_name in sorted(set(weight_map.values())):
            shard = self.directory / shard_name
            if not shard.is_file():
                raise CorruptCheckpointError(f"{shard}: shard listed in {index.name} is missing; re-download the checkpoint")
            self._open_file(shard)
        for name, shard_name in weight_map.items():
            info = self._tensors.get(name)
            if info is None or info.file.name != shard_name:
                raise CorruptCheckpointError(
                    f"{index}: tensor {name!r} is listed in shard {shard_name} but is not in it; re-download the checkpoint"
                )

    def _open_file(self, path: Path) -> None:
        tensors, raw = read_safetensors_header(path)
        for name in tensors:
            if name in self._tensors:
                raise CorruptCheckpointError(f"{path}: tensor {name!r} also appears in {self._tensors[name].file.name}")
        self._tensors.update(tensors)
        self.header_bytes[path.name] = raw
        self.files.append(path)

    def _open_pickled(self, directory: Path) -> None:
        self.format = "pickle"
        index = directory / PICKLE_INDEX
        shards = sorted(set(_read_weight_map(index).values())) if index.is_file() else [PICKLE_SINGLE]
        for shard_name in shards:
            path = directory / shard_name
            if not path.is_file():
                raise CorruptCheckpointError(f"{path}: shard listed in {index.name} is missing; re-download the checkpoint")
            import torch

            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # torch raises many types for bad archives
                raise CorruptCheckpointError(f"{path}: cannot load with weights_only=True ({one_line(exc)})") from exc
            for name, tensor in state.items():
                self._pickled[name] = tensor
                self._tensors[name] = TensorInfo(name, as_dtype(tensor.dtype), tuple(tensor.shape), path, -1)
            self.files.append(path)

    # -- queries -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def info(self, name: str) -> TensorInfo:
        return self._tensors[name]

    def total_bytes(self) -> int:
        return sum(info.nbytes for info in self._tensors.values())

    # -- reads ---------------------------------------------------------------------------------
    def read_array(self, name: str, start: int, count: int) -> np.ndarray[Any, Any]:
        """Elements ``[start, start+count)`` of the flattened tensor, as its dtype's ``storage`` array.

        For safetensors the result is a view of the file's private (copy-on-write) mapping: writing
        into it never reaches the file, but a ``release`` discards what was written. ``release`` the
        range once it is consumed. Reads under ``COPY_BELOW`` bytes are copies (``pread``) instead:
        see there why.
        """
        info = self._tensors[name]
        if info.offset < 0:
            return from_torch(self._pickled[name].reshape(-1)[start : start + count])
        size = element_size(info.dtype)
        begin = info.offset + start * size
        if count * size < COPY_BELOW:
            return self._copy(name, info, begin, count)
        whole = self._mapped(info.file)
        _populate(self._mmaps[info.file], begin, count * size)
        data = whole[begin : begin + count * size]
        if begin % size:  # a writer that does not align tensors: the view needs its own aligned bytes
            data = data.copy()
        return data.view(info.dtype.storage)

    def read_chunk(self, name: str, start: int, count: int) -> torch.Tensor:
        """``read_array`` as a torch tensor of the stored dtype (a view of the same bytes; imports torch)."""
        return to_torch(self.read_array(name, start, count), self._tensors[name].dtype)

    def release(self, name: str, start: int, count: int) -> None:
        """Drop the pages of a consumed chunk from this process's mapping (they stay in the page cache)."""
        info = self._tensors[name]
        size = element_size(info.dtype)
        if info.offset < 0 or count * size < COPY_BELOW:  # pickles and copies: nothing was mapped
            return
        begin = -(-(info.offset + start * size) // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (info.offset + (start + count) * size) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > begin:
            self._mmaps[info.file].madvise(mmap.MADV_DONTNEED, begin, end - begin)

    def _copy(self, name: str, info: TensorInfo, begin: int, count: int) -> np.ndarray[Any, Any]:
        """``count`` elements from byte ``begin`` of ``info``'s file, read into a new array."""
        out = np.empty(count, dtype=info.dtype.storage)
        buffer = out.view(np.uint8)
        fd, done = self._fd(info.file), 0
        while done < buffer.size:
            got = os.preadv(fd, [buffer[done:]], begin + done)
            if got == 0:
                raise CorruptCheckpointError(f"{info.file}: tensor {name!r} ends past the end of the file (truncated?)")
            done += got
        return out

    def _mapped(self, path: Path) -> np.ndarray[Any, Any]:
        whole = self._maps.get(path)
        if whole is None:
            fd = self._fd(path)
            with self._fd_lock:
                whole = self._maps.get(path)
                if whole is None:
                    # Private and writable: arrays built on it are ordinary writable arrays whose
                    # writes stay in this process (copy-on-write), never in the checkpoint.
                    mapping = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
                    self._mmaps[path] = mapping
                    whole = self._maps[path] = np.frombuffer(mapping, dtype=np.uint8)
        return whole

    def byte_range(self, name: str) -> tuple[int, int, int] | None:
        """(file descriptor, byte offset, byte count) of a safetensors tensor's data; None for pickles."""
        info = self._tensors[name]
        if info.offset < 0:
            return None
        return self._fd(info.file), info.offset, info.numel * element_size(info.dtype)

    def arrays(self, name: str, chunk: int) -> Iterator[tuple[int, np.ndarray[Any, Any]]]:
        """Yield ``(start, flat_chunk)`` over the whole tensor, each chunk released once the next is asked for."""
        numel = self._tensors[name].numel
        for start in range(0, numel, chunk):
            count = min(chunk, numel - start)
            yield start, self.read_array(name, start, count)
            self.release(name, start, count)

    def chunks(self, name: str, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
        """``arrays`` as torch tensors."""
        dtype = self._tensors[name].dtype
        for start, values in self.arrays(name, chunk):
            yield start, to_torch(values, dtype)

    def load(self, name: str) -> torch.Tensor:
        """The whole tensor in memory (for small tensors and tests)."""
        info = self._tensors[name]
        values = self.read_chunk(name, 0, info.numel).clone().reshape(info.shape)
        self.release(name, 0, info.numel)
        return values

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            with self._fd_lock:  # the merge reads from two threads (statistics ahead, merge)
                fd = self._fds.get(path)
                if fd is None:
                    fd = os.open(path, os.O_RDONLY)
                    self._fds[path] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._maps.clear()
        self._mmaps.clear()  # views still held elsewhere keep their mapping alive until freed
        self._pickled.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Linux >= 5.14: map a whole range of page-cache pages in one call instead of one fault per 64 KiB
# (the merge maps every input byte twice, so faults cost it a second of CPU). Elsewhere: faults.
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22) if sys.platform == "linux" else None
_populate_works = _MADV_POPULATE_READ is not None


def _populate(mapping: mmap.mmap, begin: int, nbytes: int) -> None:
    """Prefault ``[begin, begin + nbytes)`` of a mapping; a no-op where the kernel cannot."""
    global _populate_works
    if not _populate_works or nbytes < mmap.PAGESIZE:
        return
    start = begin // mmap.PAGESIZE * mmap.PAGESIZE
    try:
        mapping.madvise(_MADV_POPULATE_READ, start, begin + nbytes - start)
    except OSError:  # EINVAL on older kernels; the reads then fault the pages in as usual
        _populate_works = False


def _read_weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise ValueError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"{index}: unreadable index ({one_line(exc)}); re-download the checkpoint") from exc
    return {str(k): str(v) for k, v in weight_map.items()}

"""The threads that run the fused kernels: every core the process may use, or ``--threads`` of them.

The kernels release the GIL (numba ``nogil``), so plain threads run them in parallel. Work is cut
into pieces of a fixed number of elements (``PIECE``), whatever the thread count, and the
callers add the pieces' sums in piece order: results are the same bit for bit with one thread or
sixteen. A thread pool of our own rather than numba's ``parallel=True``: the merge calls kernels
from two threads at once (statistics of block l+1 while block l is merged), which numba's default
``workqueue`` threading layer does not allow, and the cap applies to both callers together.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from types import ModuleType

T = TypeVar("T")

# Elements per piece: 256 Ki, a quarter of the merge's 1 Mi-element chunk. A piece's kernel takes
# ~0.1-0.3 ms, so handing it to a thread (~20 µs) costs little, and its inputs stay in L2.
PIECE = 1 << 18


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def pieces(count: int, piece: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` of each piece of ``count`` elements (``PIECE`` each by default), in order."""
    step = piece or PIECE
    return [(start, min(start + step, count)) for start in range(0, count, step)]


class Workers:
    """Runs a kernel over pieces on ``threads`` threads (in the caller's thread when there is one)."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="frankmerge-kernel") if self.threads > 1 else None

    def map(self, function: Callable[[int, int], T], count: int, piece: int | None = None) -> list[T]:
        """``function(start, end)`` for each piece of ``count`` elements; results in piece order."""
        ranges = pieces(count, piece)
        if self._pool is None:
            return [function(start, end) for start, end in ranges]
        futures = [self._pool.submit(function, start, end) for start, end in ranges]
        return [future.result() for future in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


_INLINE = Workers(1)
_shared: dict[str, Workers] = {}  # process-wide: the merge's statistics thread uses the same workers


def current() -> Workers:
    """The workers of the innermost ``using`` (one thread, the caller's, outside any)."""
    return _shared.get("workers") or _INLINE


@contextmanager
def using(threads: int) -> Iterator[Workers]:
    """Kernels called inside (from any thread) run on ``threads`` threads; the pool closes on exit."""
    workers = Workers(threads)
    previous = _shared.get("workers")
    _shared["workers"] = workers
    try:
        yield workers
    finally:
        if previous is None:
            _shared.pop("workers", None)
        else:
            _shared["workers"] = previous
        workers.close()


_torch_setting: dict[str, int] = {}  # "threads": what torch should use inside ``torch_threads``; "restore": its own


def torch_module() -> ModuleType:
    """torch, imported on first use (~1.5 s, so only where it computes), on the threads ``torch_threads`` set."""
    import torch

    wanted = _torch_setting.get("threads")
    if wanted is not None and torch.get_num_threads() != wanted:
        _torch_setting.setdefault("restore", torch.get_num_threads())
        torch.set_num_threads(wanted)
    return torch


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch, if used inside (by ``torch_module``), runs on ``threads`` threads; its count is restored on exit.

    torch's reductions split by thread count, so a merge gives torch one thread unless its work is element-wise.
    """
    _torch_setting.clear()
    _torch_setting["threads"] = threads
    if "torch" in sys.modules:
        torch_module()
    try:
        yield
    finally:
        restore = _torch_setting.get("restore")
        _torch_setting.clear()
        if restore is not None:
            sys.modules["torch"].set_num_threads(restore)

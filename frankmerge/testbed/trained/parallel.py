"""Independent testbed jobs (evaluations, training stages) spread over the machine's cores.

Each tiny model trains and generates single-threaded (extra OpenMP threads only add contention),
so the demo's wall time is set by how many such jobs run at once. Workers are spawned processes
with one torch thread each; every job seeds itself, so results do not depend on the worker count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

from frankmerge.testbed.trained.evaluate import ModelEvaluation, evaluate_checkpoint

T = TypeVar("T")


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _one_thread() -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Spawned single-threaded workers (fork would copy a parent holding OpenMP threads)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_one_thread)


def stop(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down now, its running jobs too (Ctrl-C must not wait for a training run).

    Python 3.11 has no public way to end running workers (3.14's ``terminate_workers``), so the
    pool's own process table is read, defensively.
    """
    for process in list(getattr(pool, "_processes", {}).values()):
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def run_all(jobs: Sequence[tuple[Callable[..., T], tuple[Any, ...]]], workers: int) -> list[T]:
    """``[f(*args) for f, args in jobs]``, in order, on up to ``workers`` processes."""
    if workers <= 1 or len(jobs) <= 1:
        return [function(*args) for function, args in jobs]
    pool = worker_pool(min(workers, len(jobs)))
    try:
        futures: list[Future[T]] = [pool.submit(function, *args) for function, args in jobs]
        results = [future.result() for future in futures]
    except BaseException:
        stop(pool)
        raise
    pool.shutdown()
    return results


def evaluate_many(models: Sequence[tuple[str, Path]], tasks: Sequence[str], n_items: int, workers: int) -> list[ModelEvaluation]:
    """``evaluate_checkpoint`` of every (name, path), in order, ``workers`` at a time."""
    return run_all([(evaluate_checkpoint, (name, path, tuple(tasks), n_items)) for name, path in models], workers)

"""Where a merge's time goes: seconds per phase, summed over the threads that ran it.

Phases overlap (the statistics of block l+1 run while block l is merged and its bytes written),
so they add up to more than the wall time; each says how long that part kept a thread busy.
The merge report records them, and ``benchmarks/merge_speed.py`` prints them beside the floor.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Phases:
    """Thread-safe seconds per named phase."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def set(self, name: str, seconds: float | None) -> None:
        if seconds is not None:
            with self._lock:
                self._seconds[name] = seconds

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return {name: round(value, 3) for name, value in self._seconds.items()}


_current: list[Phases] = []  # the running merge's phases (one merge per process at a time)


@contextmanager
def recording() -> Iterator[Phases]:
    """Collect the phases timed inside (from any thread) into a fresh ``Phases``."""
    phases = Phases()
    _current.append(phases)
    try:
        yield phases
    finally:
        _current.remove(phases)


def current() -> Phases | None:
    """The recording merge's phases, if one is recording."""
    return _current[-1] if _current else None


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the time spent inside to phase ``name`` of the recording merge, if any."""
    started = time.perf_counter()
    try:
        yield
    finally:
        if _current:
            _current[-1].add(name, time.perf_counter() - started)


def process_age() -> float | None:
    """Seconds since this process started (Linux, 10 ms resolution), so start-up includes the
    interpreter's own and the imports; None where /proc does not say."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None

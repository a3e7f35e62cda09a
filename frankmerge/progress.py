"""Progress reporting, one helper for every loop: a tqdm bar on a terminal, plain lines elsewhere.

A bar redraws itself with carriage returns several times a second; written to a log file or a
pipe, that is tens of kilobytes of unreadable ``\\r`` noise. When stderr is not a terminal, a
loop instead reports one ordinary line at most every ``INTERVAL_S`` seconds, and one at the end.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Generic, TypeVar

T = TypeVar("T")
INTERVAL_S = 10.0


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (stderr by default) can show a redrawn bar: a terminal, or a notebook."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty() or "ipykernel" in sys.modules
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def quiet_library_bars() -> None:
    """When stderr is not a terminal, switch off the bars huggingface_hub and transformers draw themselves
    (downloads, "Writing model shards"); both read this variable when first imported."""
    if not interactive():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    unit: str = "it",
    total: int | None = None,
    initial: int = 0,
    disable: bool = False,
) -> Any:
    """A tqdm bar over ``iterable`` on a terminal, else a :class:`ProgressLines` with the same use
    (iterate, ``update``, ``set_postfix``, ``close``, ``with``)."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if disable or not interactive():
        return ProgressLines(iterable, desc=desc, unit=unit, total=total, initial=initial, disable=disable)
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total, initial=initial)


class ProgressLines(Generic[T]):
    """Reports ``desc: done/total (pct%) elapsed`` as a plain line every ``interval`` seconds and at the end."""

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        *,
        desc: str,
        unit: str = "it",
        total: int | None = None,
        initial: int = 0,
        disable: bool = False,
        interval: float = INTERVAL_S,
        stream: IO[str] | None = None,
    ) -> None:
        self.iterable, self.desc, self.unit, self.total = iterable, desc, unit, total
        self.n, self.disable, self.interval = initial, disable, interval
        self.stream = stream
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("ProgressLines without an iterable: call update() instead")
        try:
            for value in self.iterable:
                yield value
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> ProgressLines[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self.last >= self.interval:
            self.last = now
            self._write(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if not self.closed and not self.disable:
            self._write(time.monotonic())
        self.closed = True

    def line(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.start
        done = f"{self.n}/{self.total}" if self.total else f"{self.n} {self.unit}"
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {done}{percent} {elapsed:.1f} s{postfix}"

    def _write(self, now: float) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        stream.write(self.line(now) + "\n")
        stream.flush()

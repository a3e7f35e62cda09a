"""Where a merge's resident memory goes: RSS sampled every few ms, with the merge's phases marked.

Runs one FRANK merge (no prior) in this process on the triple that ``merge_speed.py`` builds and
caches, while a thread reads ``RssAnon`` and ``RssFile`` from ``/proc/self/status``. Anonymous memory
is what the process allocated (torch, numba, buffers); file memory is mapped checkpoint and library
pages. Prints the peak, the memory at each phase's start and end (``frankmerge.timing`` phases) and
writes everything to ``benchmarks/results/merge_rss_trace_SHAPE.json``. Linux only.

    python benchmarks/merge_rss_trace.py [--shape 1.5b] [--threads N]

This is how the 1.14 GB peak at 1.5B was traced to the pair doctor's row reads (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
GB = 1e9
FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def memory() -> dict[str, int]:
    """This process's resident memory in bytes, by kind."""
    found: dict[str, int] = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in FIELDS:
                found[key] = int(value.split()[0]) * 1024
    return found


class Sampler:
    """Samples ``memory()`` every ``interval`` seconds on a thread; marks events with the memory then."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.started = interval, time.perf_counter()
        self.samples: list[tuple[float, int, int, int]] = []  # (t, rss, anon, file)
        self.events: list[tuple[float, str, int, int]] = []  # (t, label, anon, file)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = memory()
            self.samples.append((time.perf_counter() - self.started, now["VmRSS"], now["RssAnon"], now["RssFile"]))
            time.sleep(self.interval)

    def mark(self, label: str) -> None:
        now = memory()
        self.events.append((time.perf_counter() - self.started, label, now["RssAnon"], now["RssFile"]))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="1.5b", help="a shape merge_speed.py has built [1.5b]")
    parser.add_argument("--cache", type=Path, help="the triple's directory [benchmarks/.cache/SHAPE]")
    parser.add_argument("--threads", type=int, help="frankmerge's --threads [every core]")
    parser.add_argument("--results", type=Path, help="[benchmarks/results/merge_rss_trace_SHAPE.json]")
    args = parser.parse_args()
    cache = (args.cache or HERE / ".cache" / args.shape).resolve()
    if not (cache / "spec.json").is_file():
        print(f"no triple in {cache}: build it with `python benchmarks/merge_speed.py --shape {args.shape}`", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE.parent))  # this checkout's frankmerge, whichever one the venv installed
    with Sampler() as sampler:
        sampler.mark("start")
        import torch  # noqa: F401 - the imports' memory is part of what is traced

        sampler.mark("torch imported")
        from frankmerge import MergeRecipe, Prior, merge, timing

        sampler.mark("frankmerge imported")
        original = timing.phase

        @contextmanager
        def traced(name: str) -> Iterator[None]:
            thread = threading.current_thread().name
            sampler.mark(f"begin {name} ({thread})")
            with original(name):
                yield
            sampler.mark(f"end {name} ({thread})")

        timing.phase = traced  # every module looks it up as timing.phase at call time
        roles = {role: str(cache / role) for role in ("vlm", "reasoner", "base")}
        out = Path(tempfile.mkdtemp(prefix="rss-trace-", dir=cache)) / "merged"
        try:
            merge(MergeRecipe(**roles, prior=Prior(kind="none")), out, progress=False, threads=args.threads)
        finally:
            timing.phase = original
            shutil.rmtree(out.parent, ignore_errors=True)
        sampler.mark("merged")
        time.sleep(0.05)
    peak = max(sampler.samples, key=lambda s: s[1])
    hwm = memory()["VmHWM"]
    print(f"peak RSS (VmHWM) {hwm / GB:.3f} GB; sampled peak {peak[1] / GB:.3f} GB at {peak[0]:.2f} s: "
          f"anon {peak[2] / GB:.3f} GB, file {peak[3] / GB:.3f} GB")  # fmt: skip
    print(f"{'t (s)':>7}  {'event':<44} {'anon GB':>8} {'file GB':>8}")
    for at, label, anon, file in sampler.events:
        if label.split(" ")[-2:-1] not in (["statistics"], ["merge"], ["writes"]):  # per-block phases: too many
            print(f"{at:7.2f}  {label:<44} {anon / GB:8.3f} {file / GB:8.3f}")
    results = args.results or HERE / "results" / f"merge_rss_trace_{args.shape}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "shape": args.shape,
        "threads": args.threads,
        "peak_rss_bytes": hwm,
        "sampled_peak": {"t_s": peak[0], "rss": peak[1], "anon": peak[2], "file": peak[3]},
        "events": [{"t_s": t, "event": e, "anon": a, "file": f} for t, e, a, f in sampler.events],
        "samples": [{"t_s": t, "rss": r, "anon": a, "file": f} for t, r, a, f in sampler.samples[::10]],
    }
    results.write_text(json.dumps(record, indent=1) + "\n")
    print(f"results: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

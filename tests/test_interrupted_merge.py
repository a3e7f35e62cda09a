"""Merges killed or raced as a user meets it: real processes, real signals, then a look at the disk.

A merge is held mid-write deterministically (not by timing): a small launcher runs the real CLI
with the block merge patched to wait, once the first block is reached, until the test says go.
The test polls for that point with generous timeouts, so a loaded machine only makes it slower.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from frankmerge import MergeRecipe, Prior, merge

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 240.0  # generous: a cold torch import on a loaded two-core machine takes tens of seconds

LAUNCHER = """
import importlib, os, sys, time
from pathlib import Path
merge_module = importlib.import_module("frankmerge.merge")  # the package exports a function of that name
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
real = merge_module.write_merged
def held(*args, **kwargs):
    if not ready.exists():
        ready.write_text(str(os.getpid()))
        while not go.exists():
            time.sleep(0.05)
    return real(*args, **kwargs)
merge_module.write_merged = held
sys.argv = ["frankmerge", *sys.argv[3:]]
from frankmerge.cli import entry_point
entry_point()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _merge_args(triple, out: Path) -> list[str]:  # type: ignore[no-untyped-def]
    return ["merge", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base)] + [
        "--out",
        str(out),
        "--no-prior",
        "-q",
    ]


class HeldMerge:
    """A merge process stopped at its first decoder block, with a shard already in its partial directory."""

    def __init__(self, triple, out: Path, scratch: Path) -> None:  # type: ignore[no-untyped-def]
        launcher = scratch / "launcher.py"
        launcher.write_text(LAUNCHER)
        self.ready, self.go = scratch / "ready", scratch / "go"
        self.stderr = scratch / "held.stderr"
        with self.stderr.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(launcher), str(self.ready), str(self.go), *_merge_args(triple, out)],
                cwd=REPO,
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.partial = out.parent / f".{out.name}.frankmerge-partial-{self.process.pid}"
        _wait_for(lambda: self.ready.exists() and any(self.partial.rglob("*.safetensors")), self)

    def release(self) -> int:
        self.go.touch()
        return self.process.wait(timeout=WAIT_S)


def _wait_for(condition, held: HeldMerge) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if held.process.poll() is not None:
            pytest.fail(f"the held merge exited early ({held.process.returncode}): {held.stderr.read_text()}")
        if time.monotonic() > deadline:
            held.process.kill()
            pytest.fail("the held merge never reached its first block")
        time.sleep(0.05)


def _cli(triple, out: Path) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    command = [sys.executable, "-m", "frankmerge.cli", *_merge_args(triple, out)]
    return subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=WAIT_S)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "frankmerge-" in p.name)


def _weights(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.safetensors*"))}


@pytest.fixture
def triple(tiny_triple):  # type: ignore[no-untyped-def]
    return tiny_triple("qwen2_vl")


@pytest.fixture
def reference(triple, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("reference") / "merged"
    recipe = MergeRecipe(vlm=str(triple.vlm), reasoner=str(triple.reasoner), base=str(triple.base), prior=Prior(kind="none"))
    merge(recipe, out, progress=False)
    return out


def test_rerun_after_kill_9_removes_the_stale_partial_and_completes(triple, reference: Path, tmp_path: Path):
    out = tmp_path / "work" / "merged"
    out.parent.mkdir()
    held = HeldMerge(triple, out, tmp_path)
    held.process.send_signal(signal.SIGKILL)
    held.process.wait(timeout=WAIT_S)
    assert held.partial.is_dir() and not out.exists()  # what kill -9 leaves: nothing can clean up

    result = _cli(triple, out)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if held.partial.name in line]
    assert len(lines) == 1, result.stderr
    assert re.search(rf"removed .*{re.escape(held.partial.name)}.*pid {held.process.pid}.*: \d+\.\d (KB|MB|GB) freed", lines[0])
    assert _weights(out) == _weights(reference) and (out / "merge_report.json").is_file()
    assert _leftovers(out.parent) == [], "partial, lock or old directories left behind"


def test_concurrent_merge_to_the_same_out_fails_at_once_and_leaves_nothing(triple, reference: Path, tmp_path: Path):
    out = tmp_path / "work" / "merged"
    out.parent.mkdir()
    held = HeldMerge(triple, out, tmp_path)
    before = _leftovers(out.parent)

    second = _cli(triple, out)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 1 and lines == [f"error: another merge (pid {held.process.pid}) is writing {out}"], second.stderr
    assert _leftovers(out.parent) == before and held.process.poll() is None  # the first merge's files untouched

    assert held.release() == 0, held.stderr.read_text()
    assert _weights(out) == _weights(reference)
    assert _leftovers(out.parent) == [], "the finished merge must remove its lock file"


def test_sigterm_mid_write_removes_the_partial_output(triple, tmp_path: Path):
    out = tmp_path / "work" / "merged"
    out.parent.mkdir()
    held = HeldMerge(triple, out, tmp_path)
    held.process.send_signal(signal.SIGTERM)
    assert held.process.wait(timeout=WAIT_S) == 130
    assert "interrupted" in held.stderr.read_text()
    assert not out.exists() and _leftovers(out.parent) == []

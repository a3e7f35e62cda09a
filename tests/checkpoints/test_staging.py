"""The --out lock and the partial directories: stale ones go, live ones stay, no failure leaves one."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from frankmerge.checkpoints.staging import (
    OWNER_FILE,
    _start_time,
    human_bytes,
    lock_path,
    output_lock,
    partial_path,
    remove_stale_partials,
    staging_directory,
)
from frankmerge.errors import OutputBusyError, OutputExistsError


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a process that runs for the whole test."""
    process = subprocess.Popen(["sleep", "300"])
    yield process.pid
    process.kill()
    process.wait()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()  # reaped: the pid names no process now
    return process.pid


def _partial(out: Path, pid: int, owner: str | None, size: int = 2_500) -> Path:
    directory = partial_path(out, pid)
    directory.mkdir()
    (directory / "model-00001-of-00002.safetensors").write_bytes(bytes(size))
    if owner is not None:
        (directory / OWNER_FILE).write_text(owner)
    return directory


def test_stale_partials_are_removed_and_live_ones_kept(tmp_path: Path, live_pid: int, caplog: pytest.LogCaptureFixture):
    out = tmp_path / "merged"
    dead = _partial(out, _dead_pid(), None, size=3_000_000)
    live = _partial(out, live_pid, f"{live_pid} {_start_time(live_pid)}\n")
    gone = _dead_pid()
    dead_marked = _partial(out, gone, f"{gone} 4242\n")
    other_out = _partial(tmp_path / "other", _dead_pid(), None)  # another --out's: not ours to judge
    with caplog.at_level(logging.WARNING):
        remove_stale_partials(out)
    assert not dead.exists() and not dead_marked.exists()
    assert live.is_dir() and other_out.is_dir()
    lines = [r.getMessage() for r in caplog.records if dead.name in r.getMessage()]
    assert len(lines) == 1 and "no longer runs: 3.0 MB freed" in lines[0], lines


def test_a_recycled_pid_does_not_keep_a_dead_merges_partial(tmp_path: Path, live_pid: int):
    """The pid runs again, but the process that started with it is gone: its start time differs."""
    out = tmp_path / "merged"
    recycled = _partial(out, live_pid, f"{live_pid} 1\n")
    remove_stale_partials(out)
    assert not recycled.exists()


def test_a_live_pid_without_marker_is_kept(tmp_path: Path, live_pid: int):
    out = tmp_path / "merged"
    unmarked = _partial(out, live_pid, None)  # a merge between mkdir and writing its marker
    remove_stale_partials(out)
    assert unmarked.is_dir()


def test_an_interrupted_replace_is_rolled_back_or_cleared(tmp_path: Path):
    out = tmp_path / "merged"
    old = tmp_path / f".merged.frankmerge-old-{_dead_pid()}"
    old.mkdir()
    (old / "config.json").write_text("{}")
    remove_stale_partials(out)  # killed between the two renames: the previous output comes back
    assert (out / "config.json").is_file() and not old.exists()
    old.mkdir()
    remove_stale_partials(out)  # killed while deleting the replaced output: the rest goes
    assert not old.exists() and (out / "config.json").is_file()


def test_lock_refuses_a_second_holder_names_the_first_and_leaves_no_file(tmp_path: Path):
    out = tmp_path / "a" / "b" / "merged"
    with output_lock(out):
        assert lock_path(out).read_text().strip().isdigit()
        with pytest.raises(OutputBusyError, match=rf"^another merge \(pid \d+\) is writing {out}$"), output_lock(out):
            pass
    assert not (tmp_path / "a").exists(), "the lock's parent directories are removed when left empty"


def test_lock_left_by_a_killed_merge_is_taken_over(tmp_path: Path):
    out = tmp_path / "merged"
    lock_path(out).write_text("12345\n")  # kill -9 leaves the file but no lock on it
    with output_lock(out):
        assert lock_path(out).read_text() == f"{os.getpid()}\n"
    assert not lock_path(out).exists()


def test_lost_race_and_failures_remove_the_partial(tmp_path: Path):
    out = tmp_path / "merged"
    with pytest.raises(OutputExistsError), staging_directory(out, overwrite=False) as staging:
        (staging / "weights.safetensors").write_bytes(b"x")
        out.mkdir()
        (out / "precious").write_text("someone else's output appeared meanwhile")
    assert [p.name for p in tmp_path.iterdir()] == ["merged"] and (out / "precious").exists()
    with pytest.raises(RuntimeError), staging_directory(tmp_path / "other", overwrite=False):
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_finished_staging_holds_no_owner_marker(tmp_path: Path):
    out = tmp_path / "merged"
    with staging_directory(out, overwrite=False) as staging:
        assert (staging / OWNER_FILE).is_file()
        (staging / "config.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0 B"), (999, "999 B"), (1_536, "1.5 KB"), (2_400_000, "2.4 MB"), (3 * 10**9, "3.0 GB")]
)
def test_human_bytes(count: int, text: str):
    assert human_bytes(count) == text

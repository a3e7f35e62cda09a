"""Who may write ``--out``: one lock per output path, hidden staging directories, and their cleanup.

A merge takes ``.OUT.frankmerge-lock`` (an advisory ``flock`` beside OUT) before anything else is
written there, so a second merge to the same path stops at once instead of racing the first. It
then writes into ``.OUT.frankmerge-partial-PID``, renamed to OUT only when complete. A merge killed
outright (``kill -9``, the OOM killer) cannot clean up after itself, so every merge first removes
the partial directories of OUT whose owner is gone; the owner is the pid plus that process's start
time, recorded inside the directory, so a recycled pid does not keep a dead merge's files alive.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from frankmerge.checkpoints.output import check_output_free
from frankmerge.errors import OutputBusyError

log = logging.getLogger(__name__)
OWNER_FILE = ".frankmerge-owner"
PID_WAIT_S = 2.0  # how long a refused merge waits for the lock holder to write its pid


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.frankmerge-lock"


def partial_path(out: Path, pid: int) -> Path:
    return out.parent / f".{out.name}.frankmerge-partial-{pid}"


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold OUT's lock for the block, or raise OutputBusyError naming the merge that holds it.

    The lock file is removed on release. That is safe because a locker checks, once it holds the
    lock, that the path still names the file it locked (and starts over if not): whoever locked
    a file just unlinked by its holder finds out and never writes beside a live merge. After a
    ``kill -9`` the file stays (a few bytes, the dead pid); the next merge takes and removes it.
    Parent directories created for the lock are removed again if the merge leaves them empty.
    """
    out = out.absolute()
    created: list[Path] = []
    try:
        created = _make_parents(out.parent)
        fd = _acquire(out)
    except OSError as exc:  # a read-only or foreign parent directory
        _remove_empty(created)
        raise OutputBusyError(f"--out {out}: cannot lock it ({exc}); choose a writable --out") from exc
    except BaseException:
        _remove_empty(created)
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with suppress(FileNotFoundError):
            os.unlink(lock_path(out))  # still ours: nobody else can lock this file while we hold it
        os.close(fd)
        _remove_empty(created)


def _acquire(out: Path) -> int:
    path = lock_path(out)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise OutputBusyError(f"another merge (pid {_holder(path)}) is writing {out}") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed this file while we waited for it: lock the new one


def _holder(path: Path) -> str:
    """The pid in a held lock file; its holder writes it just after locking, so wait a moment for it."""
    deadline = time.monotonic() + PID_WAIT_S
    while True:
        with suppress(OSError):
            text = path.read_text().strip()
            if text.isdigit():
                return text
        if time.monotonic() > deadline:
            return "unknown"
        time.sleep(0.02)


@contextmanager
def staging_directory(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """A temporary directory beside ``out``; renamed to ``out`` on success, removed on any failure.

    Take ``output_lock(out)`` first: the final rename and the check before it are only safe under it.
    """
    out = out.absolute()
    staging = partial_path(out, os.getpid())
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        (staging / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        yield staging
        (staging / OWNER_FILE).unlink()
        _replace(staging, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, out: Path, *, overwrite: bool) -> None:
    old: Path | None = None
    if out.exists():
        check_output_free(out, overwrite=overwrite)
        old = out.parent / f".{out.name}.frankmerge-old-{os.getpid()}"
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_partials(out: Path) -> None:
    """Remove what merges into ``out`` that no longer run left beside it, saying so on one line each.

    A partial directory is removed once its owner is gone. A ``-old-`` directory (the output a
    merge with --overwrite was replacing) is removed if OUT exists, and renamed back to OUT if the
    kill came between the two renames. Entries of live processes are never touched.
    """
    out = out.absolute()
    pattern = re.compile(rf"\.{re.escape(out.name)}\.frankmerge-(partial|old)-(\d+)")
    with suppress(FileNotFoundError):
        for entry in sorted(out.parent.iterdir()):
            match = pattern.fullmatch(entry.name)
            if match is None or not entry.is_dir() or entry.is_symlink():
                continue
            kind, pid = match.group(1), int(match.group(2))
            if _owner_alive(entry, pid):
                continue
            if kind == "old" and not out.exists():
                entry.rename(out)
                log.warning("restored %s from %s, left by a merge (pid %d) that stopped while replacing it", out, entry.name, pid)
                continue
            freed = _tree_bytes(entry)
            shutil.rmtree(entry, ignore_errors=True)
            log.warning("removed %s, left by a merge (pid %d) that no longer runs: %s freed", entry, pid, human_bytes(freed))


def _owner_alive(directory: Path, pid: int) -> bool:
    """Whether the merge that made ``directory`` still runs: its pid exists, is no zombie, and (where
    recorded) started when the owner did, so a pid the system has since given to another process
    does not count."""
    if pid == os.getpid():
        return False  # our own pid: left by an earlier process with it (this one has no partial yet)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    state = _proc_stat(pid)
    if state is not None and state[0] in "ZX":
        return False
    try:
        recorded = (directory / OWNER_FILE).read_text().split()
    except OSError:
        return True  # no marker (being written, or an older version's): the pid alone decides
    if state is None or len(recorded) != 2 or recorded[1] == "None":
        return True  # no start time to compare (no /proc here or there)
    return recorded[1] == state[1]


def _start_time(pid: int) -> str | None:
    state = _proc_stat(pid)
    return state[1] if state is not None else None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc; None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], fields[19]


def _tree_bytes(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def human_bytes(count: int) -> str:
    """1536 -> '1.5 KB' (decimal units, as the free-space check and --max-shard-size use)."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and missing ancestors; return those created, deepest first."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return missing


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (the merge succeeded, or someone else uses it): keep it and its parents

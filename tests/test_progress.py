"""Progress: tqdm bars on a terminal only; redirected to a file or pipe, a plain line now and then."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from frankmerge import progress as progress_module
from frankmerge.progress import ProgressLines, progress_bar


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_interval_and_once_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    stream = io.StringIO()
    lines = ProgressLines(range(28), desc="merging blocks", unit="block", total=28, stream=stream)
    for index in lines:
        clock.now += 0.45  # 28 blocks x 0.45 s = 12.6 s: one line at 10 s, one at the end
        lines.set_postfix(lambda_v=f"{index / 28:.3f}")
    assert stream.getvalue().splitlines() == [
        "merging blocks: 23/28 (82%) 10.3 s, lambda_v=0.786",
        "merging blocks: 28/28 (100%) 12.6 s, lambda_v=0.964",
    ]


def test_update_without_total_and_disabled_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    with ProgressLines(desc="profiling", unit="image", stream=stream) as lines:
        lines.update(3)
    assert stream.getvalue().startswith("profiling: 3 image ")
    quiet = io.StringIO()
    assert list(ProgressLines(range(3), desc="x", disable=True, stream=quiet)) == [0, 1, 2]
    assert quiet.getvalue() == ""


def test_factory_uses_tqdm_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "interactive", lambda stream=None: False)
    assert isinstance(progress_bar(range(3), desc="x"), ProgressLines)
    monkeypatch.setattr(progress_module, "interactive", lambda stream=None: True)
    from tqdm.auto import tqdm

    bar = progress_bar(range(3), desc="x")
    assert isinstance(bar, tqdm) and bar.total == 3
    bar.close()


def test_a_terminal_bar_would_show_up_as_carriage_returns() -> None:
    """The check below can fail: tqdm writing to a pipe draws with '\r' (read as bytes)."""
    code = "from tqdm import tqdm\nfor _ in tqdm(range(3), mininterval=0):\n    pass\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert b"\r" in done.stderr


def test_redirected_stderr_gets_no_carriage_returns(tmp_path: Path) -> None:
    code = (
        "import time\nfrom frankmerge.progress import progress_bar\n"
        "for _ in progress_bar(range(2000), desc='merging blocks', unit='block'):\n    time.sleep(0.0002)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, cwd=Path.cwd())
    stderr = done.stderr.decode()  # bytes: text mode would turn every '\r' into '\n'
    assert done.returncode == 0, stderr
    assert "\r" not in stderr and stderr.splitlines()[-1].startswith("merging blocks: 2000/2000 (100%)")
    assert len(stderr.splitlines()) <= 2


def test_merge_with_stderr_in_a_file_writes_plain_lines(tiny_triple, tmp_path: Path) -> None:
    triple = tiny_triple("qwen2_vl")
    log = tmp_path / "merge.log"
    command = [sys.executable, "-m", "frankmerge.cli", "merge", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner)]
    command += ["--base", str(triple.base), "--out", str(tmp_path / "merged"), "--no-prior"]
    with log.open("w") as stderr:
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=stderr, timeout=600, cwd=Path.cwd())
    text = log.read_bytes().decode()  # read_text would turn every '\r' into '\n'
    assert done.returncode == 0, text
    assert "\r" not in text and len(text.splitlines()) <= 3, text
    assert any(line.startswith("merging blocks: ") and "(100%)" in line for line in text.splitlines()), text

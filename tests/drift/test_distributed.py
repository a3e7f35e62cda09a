"""drift-train under torchrun with two CPU processes (DDP over gloo), both timings.

Two interpreter start-ups and model loads per run; the GPU equivalent is
``accelerate launch -m frankmerge.cli drift-train``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from frankmerge.testbed.tiny import SPECS
from tests.drift.helpers import write_chat_data


@pytest.mark.parametrize("timing", ["backward", "step"])
def test_ddp_two_processes(tiny_triple, tmp_path: Path, timing: str) -> None:
    triple = tiny_triple("qwen2_vl")
    data = write_chat_data(tmp_path / "data", samples=8, image_px=SPECS["qwen2_vl"].image_px)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "frankmerge.cli", "drift-train"]
    command += ["--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--data", str(data)]
    command += ["--out", str(tmp_path / "out"), "--max-steps", "2", "--grad-accum", "2", "--lr", "1e-3", "--timing", timing]
    done = subprocess.run(command, capture_output=True, timeout=600, check=False)
    stdout, stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")  # bytes: keep any '\r'
    assert done.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "\r" not in stderr and "training: 2/2 (100%)" in stderr  # plain progress lines, not bar redraws
    report = json.loads((tmp_path / "out" / "drift_report.json").read_text())
    assert report["world_size"] == 2 and report["steps"] == 2
    micro_batches = 2 * 2 if timing == "backward" else 2  # per rank: guided per micro-batch, or per step
    assert report["drift"]["guided_gradients"] == report["drift"]["hooks_attached"] * micro_batches
    assert report["movement_along_prior"]["all"]["cos_moved_delta"] > 0.3

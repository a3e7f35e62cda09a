"""drift-train --fsdp under torchrun and accelerate launch (two CPU processes, FSDP2 over gloo) equals
the single-process run.

Both runs see the same two samples at every optimizer step (FSDP2: one per rank; single process:
two accumulated micro-batches) with ``--timing step``, so for every variant the trained weights
must agree to float32 rounding. One torchrun launch per variant, as a user runs it: ``drift-train``
leaves the process group before its process exits, so one process cannot run it twice (a second
``init_process_group`` on torchrun's store can hang on the first group's keys).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from frankmerge.drift.guidance import VARIANTS
from frankmerge.drift.prior import build_prior
from frankmerge.drift.train import TrainOptions, drift_train
from frankmerge.testbed.tiny import SPECS
from tests.drift.helpers import write_chat_data

STEPS = 2
SHARED = ["--max-steps", str(STEPS), "--lr", "1e-3", "--timing", "step", "--warmup-ratio", "0", "--scheduler", "constant"]


@pytest.fixture(scope="module")
def runs(tiny_triple, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    triple = tiny_triple("qwen2_vl")
    root = tmp_path_factory.mktemp("fsdp-train")
    data = write_chat_data(root / "data", samples=2, image_px=SPECS["qwen2_vl"].image_px)
    prior = build_prior(triple.vlm, triple.reasoner, root / "prior.safetensors").path
    repo = str(Path(__file__).resolve().parents[2])
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    common = ["--vlm", str(triple.vlm), "--prior", str(prior), "--data", str(data), *SHARED, "--fsdp"]
    env = {**os.environ, "PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}
    for variant in VARIANTS:
        command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "frankmerge.cli", "drift-train", *common]
        command += ["--variant", variant, "--out", str(root / "fsdp" / variant)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False, env=env, cwd=repo)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The other usual launcher: accelerate with an FSDP2 config. On CPU accelerate ignores its FSDP
    # plugin (the run would silently be DDP), so --fsdp shards at load time, as under torchrun.
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    command = [accelerate, "launch", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--use_fsdp", "--fsdp_version", "2", "-m", "frankmerge.cli", "drift-train"]
    command += [*common, "--variant", "adaptive", "--out", str(root / "accelerate" / "adaptive")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False, env=env, cwd=repo)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for variant in VARIANTS:
        options = TrainOptions(
            variant=variant, prior=prior, timing="step", grad_accum=2, max_steps=STEPS, learning_rate=1e-3,
            warmup_ratio=0.0, scheduler="constant", progress=False,
        )  # fmt: skip
        drift_train(triple.vlm, data, root / "single" / variant, options=options)
    return {"root": root, "vlm": triple.vlm, "prior": prior}


@pytest.mark.parametrize("variant", VARIANTS)
def test_fsdp2_run_equals_single_process_step_run(runs, variant: str) -> None:
    sharded = load_file(runs["root"] / "fsdp" / variant / "model.safetensors")
    single = load_file(runs["root"] / "single" / variant / "model.safetensors")
    start = load_file(runs["vlm"] / "model.safetensors")
    assert sharded.keys() == single.keys() == start.keys()  # a whole, normal checkpoint from the sharded run
    moved = max(float((single[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3  # two AdamW steps at lr 1e-3
    for name in single:  # Adam divides by √v, so float32 summation order shows at ~1e-7 of 1e-3 steps
        torch.testing.assert_close(sharded[name], single[name], rtol=0, atol=2e-6, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_fsdp2_report_shows_sharded_guidance(runs, variant: str) -> None:
    report = json.loads((runs["root"] / "fsdp" / variant / "drift_report.json").read_text())
    single = json.loads((runs["root"] / "single" / variant / "drift_report.json").read_text())
    drift = report["drift"]
    assert report["fsdp"] and drift["sharded"] and report["world_size"] == 2 and report["frozen_unchanged"]
    assert drift["collectives"] == (0 if variant == "absolute" else STEPS)  # one all-reduce per step
    assert drift["guided_gradients"] == single["drift"]["guided_gradients"] == drift["hooks_attached"] * STEPS
    assert drift["delta_bytes"] * 2 == single["drift"]["delta_bytes"]  # each rank holds half of Δ (even shapes here)
    assert drift["delta_bytes_read"] * 2 == sum(t.nbytes for t in load_file(runs["prior"]).values())
    movement, reference = report["movement_along_prior"]["all"], single["movement_along_prior"]["all"]
    assert movement["cos_moved_delta"] == pytest.approx(reference["cos_moved_delta"], abs=1e-4)
    assert movement["tensors"] == reference["tensors"]


def test_fsdp_needs_step_timing() -> None:
    from frankmerge.drift.errors import DriftOptionError
    from frankmerge.drift.train import _validated

    with pytest.raises(DriftOptionError, match="--timing step"):
        _validated(TrainOptions(fsdp=True, prior=Path("p.safetensors")), None)


def test_accelerate_launch_with_an_fsdp2_config_equals_single_process(runs) -> None:
    """`accelerate launch --use_fsdp --fsdp_version 2 … drift-train --fsdp` shards and guides like torchrun."""
    out = runs["root"] / "accelerate" / "adaptive"
    report = json.loads((out / "drift_report.json").read_text())
    assert report["fsdp"] and report["drift"]["sharded"] and report["world_size"] == 2
    assert report["drift"]["collectives"] == STEPS
    sharded = load_file(out / "model.safetensors")
    single = load_file(runs["root"] / "single" / "adaptive" / "model.safetensors")
    for name in single:
        torch.testing.assert_close(sharded[name], single[name], rtol=0, atol=2e-6, msg=lambda m, n=name: f"{n}: {m}")

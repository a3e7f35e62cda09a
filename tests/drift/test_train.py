"""End to end on a tiny Qwen2-VL: DRIFT moves the decoder toward the reasoner, plain SFT does not.

Both runs share the data, seed and hyper-parameters (a larger lr than the paper's, so that a
dozen steps move the weights measurably); the only difference is the guidance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers as tf
from click.testing import CliRunner

from frankmerge.cli import main
from frankmerge.drift.train import TrainOptions, drift_train
from frankmerge.testbed.tiny import SPECS, image_forward_inputs
from tests.conftest import block_key
from tests.drift.helpers import covered_names, write_chat_data
from tests.reference import load_dir

FAMILY = "qwen2_vl"
STEPS = 12
SHARED = dict(max_steps=STEPS, learning_rate=1e-3, warmup_ratio=0.0, logging_steps=4, seed=0)


@pytest.fixture(scope="module")
def runs(tiny_triple, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    triple = tiny_triple(FAMILY)
    root = tmp_path_factory.mktemp("drift-e2e")
    data = write_chat_data(root / "data", samples=6, image_px=SPECS[FAMILY].image_px)
    sft = drift_train(triple.vlm, data, root / "sft", reasoner=triple.reasoner, options=TrainOptions(variant="none", **SHARED))
    drift = drift_train(triple.vlm, data, root / "drift", reasoner=triple.reasoner, options=TrainOptions(**SHARED))
    return {"triple": triple, "data": data, "root": root, "sft": sft, "drift": drift}


def _cos_toward_reasoner(out: Path, vlm: Path, reasoner: Path) -> float:
    """cos(θ_T − θ_0, θ_R − θ_V) over the covered tensors, computed from the files alone."""
    trained, start, target = load_dir(out), load_dir(vlm), load_dir(reasoner)
    by_block = {block_key(n): n for n in target if block_key(n) is not None}
    dot = moved_sq = delta_sq = 0.0
    for name in covered_names(list(start)):
        moved = trained[name].double() - start[name].double()
        delta = target[by_block[block_key(name)]].double() - start[name].double()
        dot += float(moved.flatten() @ delta.flatten())
        moved_sq += float(moved.square().sum())
        delta_sq += float(delta.square().sum())
    return dot / math.sqrt(moved_sq * delta_sq)


def test_drift_moves_further_toward_the_reasoner_than_sft(runs) -> None:
    triple = runs["triple"]
    cos_sft = _cos_toward_reasoner(runs["sft"].out, triple.vlm, triple.reasoner)
    cos_drift = _cos_toward_reasoner(runs["drift"].out, triple.vlm, triple.reasoner)
    assert cos_drift > 0.3 and cos_drift > cos_sft + 0.25, (cos_sft, cos_drift)
    assert abs(cos_sft) < 0.15
    # the report computes the same quantity (from the bf16 prior, hence the tolerance)
    assert runs["drift"].report["movement_along_prior"]["all"]["cos_moved_delta"] == pytest.approx(cos_drift, abs=0.01)
    assert runs["sft"].report["movement_along_prior"]["all"]["cos_moved_delta"] == pytest.approx(cos_sft, abs=0.01)


def test_vision_tower_does_not_move_and_the_output_is_a_normal_checkpoint(runs) -> None:
    triple = runs["triple"]
    start = load_dir(triple.vlm)
    for run in ("sft", "drift"):
        trained = load_dir(runs[run].out)
        assert trained.keys() == start.keys()  # same tensor names: the VLM's own layout
        vision = [n for n in start if "visual" in n]
        assert vision and all(torch.equal(trained[n], start[n]) for n in vision)
        assert not (runs[run].out / "training_args.bin").exists()
    model = tf.AutoModelForImageTextToText.from_pretrained(runs["drift"].out)
    with torch.no_grad():
        assert torch.isfinite(model(**image_forward_inputs(runs["drift"].out)).logits).all()


def test_report_records_the_run(runs) -> None:
    report = json.loads((runs["drift"].out / "drift_report.json").read_text())
    expected_hooks = len(covered_names(list(load_dir(runs["triple"].vlm))))
    assert report["method"] == "drift-adaptive" and report["steps"] == STEPS
    assert report["drift"]["hooks_attached"] == expected_hooks
    assert report["drift"]["guided_gradients"] == expected_hooks * STEPS  # batch 1, no accumulation
    assert -1 <= report["drift"]["mean_cos_g_delta"] <= 1
    assert report["frozen_unchanged"] is True and report["frozen_parameters"] > 0
    assert [entry["step"] for entry in report["losses"]] == [1, 4, 8, 12]
    assert report["options"]["learning_rate"] == 1e-3 and report["prior"]["modules"] == ["attn", "mlp"]
    assert set(report["movement_along_prior"]) == {"all", "attn", "mlp"}
    assert runs["sft"].report["drift"] is None and runs["sft"].report["method"] == "sft"


def test_step_timing_with_accumulation_through_the_cli(runs) -> None:
    """timing=step guides once per optimizer step; timing=backward once per micro-batch."""
    triple, root = runs["triple"], runs["root"]
    counts = {}
    for timing in ("step", "backward"):
        out = root / f"cli-{timing}"
        args = ["drift-train", "--vlm", str(triple.vlm), "--prior", str(runs["drift"].out / "drift" / "prior.safetensors")]
        args += ["--data", str(runs["data"]), "--out", str(out), "--variant", "grad-norm", "--timing", timing]
        args += ["--grad-accum", "2", "--max-steps", "2", "--lr", "1e-3"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "hooks attached: 40 (grad_norm, alpha=-1.0" in result.output
        counts[timing] = json.loads((out / "drift_report.json").read_text())["drift"]["guided_gradients"]
    assert counts == {"step": 40 * 2, "backward": 40 * 2 * 2}

"""The DRIFT commands: a prior from the command line, and one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from frankmerge.cli import main
from frankmerge.drift.prior_file import load_prior
from frankmerge.testbed.tiny import SPECS
from tests.drift.helpers import write_chat_data


def run_cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def test_drift_prior_command(tiny_triple, tmp_path: Path) -> None:
    triple = tiny_triple("idefics3", layout="v5")
    out = tmp_path / "prior.safetensors"
    code, output = run_cli(["drift-prior", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--out", str(out)])
    assert code == 0, output
    assert f"prior written to {out}: 28 tensors (attn, mlp)" in output
    prior = load_prior(out)
    assert prior.meta.entries["layers.0.mlp.up_proj.weight"].vlm_name == "model.text_model.layers.0.mlp.up_proj.weight"
    code, output = run_cli(["drift-prior", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--out", str(out)])
    assert code == 1 and "--overwrite" in output


def _train_args(tiny_triple, tmp_path: Path, *extra: str, data: Path | None = None) -> list[str]:
    triple = tiny_triple("llava")
    data = data or write_chat_data(tmp_path / "data", samples=2, image_px=SPECS["llava"].image_px)
    return ["drift-train", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--data", str(data)] + [
        "--out",
        str(tmp_path / "out"),
        "--max-steps",
        "1",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--variant", "relative"), "--variant 'relative': unknown variant; valid ones are absolute, grad_norm, adaptive"),
        (("--modules", "attn,vision"), "unknown module group 'vision'; valid groups are attn, mlp, norm, embed, head"),
        (("--timing", "later"), "valid ones are backward, step"),
        (("--placement", "disk"), "valid ones are device, pinned (the public"),
        (("--placement", "host_copy"), "kept only as a comparison"),
        (("--precision", "fp8"), "valid ones are auto, fp32, bf16, fp16"),
        (("--warmup-ratio", "1.5"), "--warmup-ratio 1.5: a fraction of the training steps in [0, 1)"),
    ],
)
def test_bad_options_fail_with_one_line(tiny_triple, tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    code, output = run_cli(_train_args(tiny_triple, tmp_path, *extra))
    assert code == 1 and output.startswith("error: ") and message in output and output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_image_fails_before_training(tiny_triple, tmp_path: Path) -> None:
    data = write_chat_data(tmp_path / "data", samples=3, image_px=28)
    (tmp_path / "data" / "images" / "1.png").unlink()
    code, output = run_cli(_train_args(tiny_triple, tmp_path, data=data))
    assert code == 1 and "train.jsonl line 2: image file" in output and "images/1.png does not exist" in output
    assert not (tmp_path / "out").exists()


def test_prior_of_other_models_fails_before_training(tiny_triple, tmp_path: Path) -> None:
    other = tiny_triple("qwen2_vl")
    prior = tmp_path / "qwen.safetensors"
    assert run_cli(["drift-prior", "--vlm", str(other.vlm), "--reasoner", str(other.reasoner), "--out", str(prior)])[0] == 0
    code, output = run_cli(_train_args(tiny_triple, tmp_path, "--prior", str(prior)))
    assert code == 1 and "does not fit this model" in output and "layers.0.self_attn.k_proj.bias" in output
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_drift_needs_a_reasoner_or_a_prior(tiny_triple, tmp_path: Path) -> None:
    args = _train_args(tiny_triple, tmp_path)
    del args[3:5]  # --reasoner R
    code, output = run_cli(args)
    assert code == 1 and "needs --reasoner" in output

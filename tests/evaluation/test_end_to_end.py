"""`frankmerge eval` / `score` / `compare` end to end with a tiny random Qwen2-VL on CPU."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from frankmerge.cli import main
from frankmerge.evaluation.records import GenerationSettings, read_records
from frankmerge.evaluation.run import default_backend, evaluate

from . import builders

TOKENS = "6"


@pytest.fixture(scope="module")
def tiny_vlm(tiny_triple: Callable[..., Any]) -> Path:
    return tiny_triple("qwen2_vl").vlm


@pytest.fixture()
def mmmu_data(tmp_path: Path) -> Path:
    rows = builders.mmmu_rows()
    broken = {**rows[1], "id": "validation_Physics_9", "image_1": {"bytes": b"\x89PNG broken", "path": "9.png"}}
    return builders.write_parquet(tmp_path / "data" / "validation-0.parquet", [*rows, broken])


def _eval(model: Path, data: Path, out: Path, *extra: str) -> Any:
    args = ["eval", "--model", str(model), "--benchmark", "mmmu", "--data", str(data), "--out", str(out)]
    return CliRunner().invoke(main, [*args, "--max-new-tokens", TOKENS, "--batch-size", "2", "-q", *extra])


def test_eval_generates_scores_and_resumes(tiny_vlm: Path, mmmu_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _eval(tiny_vlm, mmmu_data, out)
    assert result.exit_code == 0, result.output
    assert "MMMU (val): accuracy" in result.output
    records = {r.id: r for r in read_records(out / "generations.jsonl")}
    assert len(records) == 4
    broken = records["validation_Physics_9"]
    assert broken.finish_reason == "error" and "image_1 of item validation_Physics_9" in (broken.error or "")
    for record in (r for r in records.values() if r.error is None):
        assert record.finish_reason in ("stop", "length") and 0 <= record.n_tokens <= int(TOKENS)
        assert record.settings.max_new_tokens == int(TOKENS) and len(record.model.sha256) == 64
        assert record.n_prompt_tokens > 0 and record.prompt_sha256
    report = json.loads((out / "report.json").read_text())
    assert report["n_items"] == 4 and [e["id"] for e in report["item_errors"]] == ["validation_Physics_9"]
    assert report["model"]["name"] == "vlm" and (out / "report.md").is_file()
    assert len((out / "scores.jsonl").read_text().splitlines()) == 4

    # A re-run generates nothing: every id is already in generations.jsonl.
    def refuse(*_: Any) -> Any:
        raise AssertionError("nothing should be generated on a complete re-run")

    settings = GenerationSettings(max_new_tokens=int(TOKENS), batch_size=2)
    again = evaluate(tiny_vlm, "mmmu", mmmu_data, out, settings, progress=False, backend_factory=refuse)
    assert again.score == report["score"]

    # An interrupted run (last two records lost) regenerates exactly those two.
    lines = (out / "generations.jsonl").read_text().splitlines()
    (out / "generations.jsonl").write_text("\n".join(lines[:2]) + "\n")
    seen: list[str] = []

    def counting(model: Path, s: GenerationSettings, max_images: int) -> Any:
        backend = default_backend(model, s, max_images)
        original = backend.generate
        backend.generate = lambda prompts: (seen.extend(p.item_id for p in prompts), original(prompts))[1]  # type: ignore[method-assign]
        return backend

    evaluate(tiny_vlm, "mmmu", mmmu_data, out, settings, progress=False, backend_factory=counting)
    assert sorted(seen) == sorted(
        r.id for r in records.values() if r.id not in {json.loads(x)["id"] for x in lines[:2]} and r.error is None
    )
    assert len(read_records(out / "generations.jsonl")) == 4

    # Other output-affecting settings are refused, not mixed into the same file.
    conflict = _eval(tiny_vlm, mmmu_data, out, "--temperature", "0.7")
    assert conflict.exit_code == 1 and "error: " in conflict.output and "temperature: 0.0 -> 0.7" in conflict.output


def test_score_and_compare_reproduce_eval(tiny_vlm: Path, mmmu_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _eval(tiny_vlm, mmmu_data, out, "--think-template", "open").exit_code == 0
    records = read_records(out / "generations.jsonl")
    assert all(r.think_open_in_prompt for r in records if r.error is None)
    rescored = tmp_path / "rescored"
    result = CliRunner().invoke(
        main,
        [
            "score",
            "--benchmark",
            "mmmu",
            "--data",
            str(mmmu_data),
            "--predictions",
            str(out / "generations.jsonl"),
            "--out",
            str(rescored),
        ],
    )
    assert result.exit_code == 0, result.output
    first, second = (json.loads((d / "report.json").read_text()) for d in (out, rescored))
    assert first["score"] == second["score"] and first["extraction"] == second["extraction"]
    # Random words never close the <think> block the template opened: every reply counts as truncated.
    assert first["generation"]["truncation_rate"] == 100.0

    table_dir = tmp_path / "cmp"
    result = CliRunner().invoke(
        main, ["compare", str(out), str(rescored), "--out", str(table_dir), "--name", "vlm", "--name", "merged"]
    )
    assert result.exit_code == 0, result.output
    table = json.loads((table_dir / "comparison.json").read_text())
    assert table["models"] == ["vlm", "merged"] and table["rows"][0]["score"]["merged"] == first["score"]
    markdown = (table_dir / "comparison.md").read_text()
    assert (table_dir / "comparison.png").stat().st_size > 0 and "| MMMU (val) |" in markdown
    for word in ("Wait", "Hmm", "Alternatively", "Check", "Mistake"):
        assert f"| MMMU (val) | {word} |" in markdown, word


def test_cli_bad_input_is_one_line(tiny_vlm: Path, mmmu_data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["eval", "--model", str(tiny_vlm), "--benchmark", "mathvista2", "--data", str(mmmu_data), "--out", str(tmp_path)]
    )
    assert result.exit_code == 1 and "unknown benchmark 'mathvista2'; known: mmmu, mmmu_pro" in result.output
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "none"), "--out", str(tmp_path / "c")])
    assert result.exit_code == 1 and "no report.json found" in result.output

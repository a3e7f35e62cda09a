"""`frankmerge score` on predictions made elsewhere: minimal JSONL and VLMEvalKit's .tsv / .xlsx files.

What such predictions do not record (token counts, finish reasons) must come out as unknown,
never as zero or as an estimate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from frankmerge.cli import main
from frankmerge.evaluation.compare import load_runs
from frankmerge.evaluation.errors import PredictionsError
from frankmerge.evaluation.predictions import read_predictions
from frankmerge.evaluation.run import score_predictions

from . import builders

REPLIES = {
    "validation_Art_Theory_1": "<think>the second is older</think>**B**",
    "validation_Physics_2": "The speed is \\boxed{3.5} m/s.",
    "validation_Computer_Science_3": "<think>never closes",
}


@pytest.fixture()
def mmmu_data(tmp_path: Path) -> Path:
    return builders.write_parquet(tmp_path / "data" / "validation-0.parquet", builders.mmmu_rows())


def _jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _tsv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    def cell(value: object) -> str:  # as pandas' to_csv writes it: quoted when it holds a tab, quote or newline
        text = str(value)
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in '\t"\n') else text

    path.write_text("\n".join("\t".join(cell(v) for v in line) for line in [header, *rows]) + "\n", encoding="utf-8")
    return path


def test_minimal_jsonl_is_scored_and_lengths_are_unknown(mmmu_data: Path, tmp_path: Path) -> None:
    records = [{"id": k, "raw_text": v} for k, v in REPLIES.items()]
    records[1] = {"id": records[1]["id"], "prediction": records[1]["raw_text"]}  # the other accepted spelling
    predictions = _jsonl(tmp_path / "preds.jsonl", records)
    report = score_predictions("mmmu", mmmu_data, predictions, tmp_path / "out")
    assert report.score == pytest.approx(200 / 3)
    gen = report.generation
    assert (gen.mean_tokens, gen.truncation_rate, gen.truncated_by_length) == (None, None, None)
    assert gen.mean_tokens_by_difficulty == () and gen.unclosed_think == 1  # the text still shows the open <think>
    assert report.extraction.whole_answer == 1
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["generation"]["mean_tokens"] is None and saved["generation"]["truncation_rate"] is None
    scores = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert [s["finish_reason"] for s in scores] == ["unknown", "unknown", "unknown"] and scores[0]["n_tokens"] is None
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Truncation rate unknown" in markdown and "mean output length unknown" in markdown
    (run,) = load_runs([tmp_path / "out"])  # compare reads it, unknowns included
    assert run.truncation_rate is None and run.mean_tokens is None


def test_lengths_are_unknown_when_only_some_records_carry_them(mmmu_data: Path, tmp_path: Path) -> None:
    records = [{"id": k, "raw_text": v} for k, v in REPLIES.items()]
    records[0].update(finish_reason="stop", n_tokens=4)
    report = score_predictions("mmmu", mmmu_data, _jsonl(tmp_path / "p.jsonl", records), tmp_path / "out")
    assert report.generation.mean_tokens is None and report.generation.truncation_rate is None


def test_score_command_prints_unknowns_and_the_whole_answer_count(mmmu_data: Path, tmp_path: Path) -> None:
    predictions = _jsonl(tmp_path / "preds.jsonl", [{"id": k, "raw_text": v} for k, v in REPLIES.items()])
    args = ["score", "--benchmark", "mmmu", "--data", str(mmmu_data), "--predictions", str(predictions)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "truncated unknown, mean unknown tokens" in result.output
    assert "no answer span (whole answer parsed) 1" in result.output


def test_vlmevalkit_tsv_matches_the_data_by_its_id_column(mmmu_data: Path, tmp_path: Path) -> None:
    header = ["index", "id", "question", "answer", "prediction"]
    rows = [[i, k, "q\twith a tab", "?", v] for i, (k, v) in enumerate(REPLIES.items())]
    predictions = _tsv(tmp_path / "Model_MMMU_DEV_VAL.tsv", header, rows)
    report = score_predictions("mmmu", mmmu_data, predictions, tmp_path / "out")
    assert report.score == pytest.approx(200 / 3) and report.generation.mean_tokens is None


def test_vlmevalkit_tsv_by_index(tmp_path: Path) -> None:
    data = builders.write_parquet(tmp_path / "mme.parquet", builders.mme_rows())
    rows = [["existence/1.png#1", "Yes"]]  # a table whose only id column is index
    predictions = _tsv(tmp_path / "preds.tsv", ["index", "prediction"], rows)
    (record,) = read_predictions(predictions, [rows[0][0]])
    assert (record.id, record.raw_text, record.n_tokens, record.finish_reason) == (rows[0][0], "Yes", None, None)
    report = score_predictions("mme", data, predictions, tmp_path / "out")
    assert report.n_items == len(builders.mme_rows()) and report.generation.n_generated == 1


def test_prediction_table_without_the_columns_is_one_line(tmp_path: Path) -> None:
    predictions = _tsv(tmp_path / "preds.tsv", ["index", "answer"], [[1, "A"]])
    with pytest.raises(PredictionsError, match="column 'prediction' missing") as caught:
        read_predictions(predictions)
    assert "\n" not in str(caught.value)


def test_xlsx_without_openpyxl_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    predictions = tmp_path / "Model_MMMU.xlsx"
    predictions.write_bytes(b"PK\x03\x04")
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # import openpyxl now raises ImportError
    with pytest.raises(PredictionsError, match="pip install openpyxl") as caught:
        read_predictions(predictions)
    assert "\n" not in str(caught.value)


def test_xlsx_predictions_with_openpyxl(mmmu_data: Path, tmp_path: Path) -> None:
    import openpyxl  # a test dependency (pyproject: test, dev)

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["index", "id", "prediction"])
    for i, (k, v) in enumerate(REPLIES.items()):
        sheet.append([i, k, v])
    workbook.save(tmp_path / "preds.xlsx")
    report = score_predictions("mmmu", mmmu_data, tmp_path / "preds.xlsx", tmp_path / "out")
    assert report.score == pytest.approx(200 / 3)


class _Sheet:
    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.rows = rows

    def iter_rows(self, values_only: bool) -> list[tuple[object, ...]]:
        return self.rows


class _Workbook:
    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.worksheets = [_Sheet(rows)]

    def close(self) -> None:
        pass


def test_xlsx_rows_as_openpyxl_returns_them(mmmu_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without openpyxl installed, a stand-in returning what openpyxl's values_only rows look like:
    whole-number ids as floats, empty cells as None."""
    rows = [("index", "id", "prediction"), *((float(i), k, v) for i, (k, v) in enumerate(REPLIES.items())), (None, None, None)]
    stub = type(sys)("openpyxl")
    stub.load_workbook = lambda path, read_only, data_only: _Workbook(rows)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "openpyxl", stub)
    (tmp_path / "preds.xlsx").write_bytes(b"")
    records = read_predictions(tmp_path / "preds.xlsx", list(REPLIES))
    assert [r.id for r in records] == list(REPLIES)
    assert [r.id for r in read_predictions(tmp_path / "preds.xlsx")] == ["0", "1", "2"]  # no data ids: index
    report = score_predictions("mmmu", mmmu_data, tmp_path / "preds.xlsx", tmp_path / "out")
    assert report.score == pytest.approx(200 / 3)

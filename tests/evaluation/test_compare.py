"""`compare` tables: one column per model, and MMMU-Pro's overall score where both settings ran."""

from __future__ import annotations

import json
from pathlib import Path

from frankmerge.evaluation.compare import compare


def _report(directory: Path, model: str, benchmark: str, score: float) -> Path:
    directory.mkdir(parents=True)
    report = {
        "model": {"name": model},
        "benchmark": benchmark,
        "title": benchmark,
        "metric": "accuracy",
        "score": score,
        "official": True,
        "generation": {"truncation_rate": 1.0, "mean_tokens": 900.0, "reflection_words": {"Wait": 3}},
        "extraction": {"parse_failures": 0, "random_fallbacks": 1, "nearest_choice_fallbacks": 0},
    }
    (directory / "report.json").write_text(json.dumps(report))
    return directory


def test_mmmu_pro_overall_is_the_mean_of_both_settings(tmp_path: Path) -> None:
    runs = [
        _report(tmp_path / "a-std", "vlm", "mmmu_pro", 40.0),
        _report(tmp_path / "a-vis", "vlm", "mmmu_pro_vision", 30.0),
        _report(tmp_path / "b-std", "merged", "mmmu_pro", 44.0),  # no vision run: no overall for it
    ]
    table = compare(runs, tmp_path / "table")
    overall = next(r for r in table["rows"] if r["benchmark"] == "mmmu_pro_overall")
    assert overall["score"] == {"vlm": 35.0, "merged": None}
    assert overall["derived_from"] == ["mmmu_pro", "mmmu_pro_vision"] and overall["official"]
    assert table["benchmarks"] == ["mmmu_pro", "mmmu_pro_vision", "mmmu_pro_overall"]
    markdown = (tmp_path / "table" / "comparison.md").read_text()
    assert "| MMMU-Pro overall (mean of standard and vision) | accuracy | 35.00 | – |" in markdown
    assert (tmp_path / "table" / "comparison.png").is_file()


def test_no_overall_without_both_settings(tmp_path: Path) -> None:
    table = compare([_report(tmp_path / "a", "vlm", "mmmu_pro", 40.0)], tmp_path / "table")
    assert [r["benchmark"] for r in table["rows"]] == ["mmmu_pro"]

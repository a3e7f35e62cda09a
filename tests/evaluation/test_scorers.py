"""MathVista, MathVision, MathVerse, WeMath, LogicVista and MME scorers on hand-computed cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from frankmerge.evaluation.benchmarks import get_benchmark
from frankmerge.evaluation.benchmarks.letters import choice_letters
from frankmerge.evaluation.benchmarks.math_equal import is_equal, latex_value, safe_eval
from frankmerge.evaluation.benchmarks.mathvision import extract_model_answer
from frankmerge.evaluation.benchmarks.mme import official_yes_no
from frankmerge.evaluation.benchmarks.wemath import four_dimensional, official_answer
from frankmerge.evaluation.data.tables import read_table
from frankmerge.evaluation.records import GenerationRecord
from frankmerge.evaluation.scoring import BenchmarkReport, ItemScore, score_records

from . import builders


def run(tmp_path: Path, name: str, rows: list[dict[str, Any]], replies: list[str]) -> tuple[BenchmarkReport, list[ItemScore]]:
    bench = get_benchmark(name)
    items = bench.load(read_table(builders.write_parquet(tmp_path / f"{name}.parquet", rows)), "reasoning")
    records = [
        GenerationRecord(id=i.id, raw_text=r, finish_reason="stop", n_tokens=1) for i, r in zip(items, replies, strict=True)
    ]
    return score_records(bench, items, records)


def test_mathvista_choice_text_gold_letters_and_precision(tmp_path: Path) -> None:
    rows = builders.mathvista_rows()
    _, scores = run(tmp_path, "mathvista", rows, ["<think>x</think>\\boxed{C}", "\\boxed{1.452}"])
    assert [(s.parsed, s.correct) for s in scores] == [("6", True), ("1.45", True)]
    report, scores = run(tmp_path, "mathvista", rows, ["x is about seven", "the ratio is 1.4"])
    assert [s.correct for s in scores] == [False, False]
    assert scores[0].nearest_fallback and report.extraction.nearest_choice_fallbacks == 1
    report, scores = run(tmp_path, "mathvista", rows, ["The answer is 6", "no number here"])
    assert scores[0].correct and scores[1].parse_failed and not scores[1].correct
    skills = {g.group: (g.n, g.score) for g in report.breakdowns[0].groups}
    assert skills == {"algebraic reasoning": (1, 100.0), "arithmetic reasoning": (1, 0.0), "geometry reasoning": (1, 100.0)}
    assert not get_benchmark("mathvista").official


def test_mathvista_list_answers(tmp_path: Path) -> None:
    """List golds (answer_type "list") compare as lists, whether the cell is a string or a list."""
    base = {**builders.mathvista_rows()[1], "answer_type": "list", "precision": None, "query": None}
    as_string = [{**base, "pid": "3", "answer": "[2, 3, 5]"}, {**base, "pid": "4", "answer": "['1', '4']"}]
    report, scores = run(tmp_path / "a", "mathvista", as_string, ["\\boxed{[2,3,5]}", "so the list is [1, 4]"])
    assert [(s.parsed, s.correct) for s in scores] == [("[2, 3, 5]", True), ("[1, 4]", True)]
    _, scores = run(tmp_path / "b", "mathvista", as_string, ["\\boxed{[2, 3]}", "no list at all"])
    assert [s.correct for s in scores] == [False, False] and scores[1].parse_failed
    _, scores = run(tmp_path / "c", "mathvista", [{**base, "pid": "5", "answer": ["1", "4"]}], ["[1, 4]"])
    assert scores[0].correct


def test_mathvision_official_equality(tmp_path: Path) -> None:
    rows = builders.mathvision_rows()
    report, scores = run(tmp_path, "mathvision", rows, ["\\boxed{C}", "\\boxed{\\frac{1}{2}}"])
    assert [s.correct for s in scores] == [True, True] and report.score == 100.0
    _, scores = run(tmp_path, "mathvision", rows, ["The answer is (D).", "so the answer is 1/2."])
    assert [s.correct for s in scores] == [False, True]
    _, scores = run(tmp_path, "mathvision", rows, ["C", "so the area is 1/2."])  # no answer marker: official misses it
    assert [s.correct for s in scores] == [True, False]
    _, scores = run(tmp_path, "mathvision", rows, ["(C)\nbecause", "0.51"])
    assert [s.correct for s in scores] == [True, False]
    assert {g.group: g.score for g in report.breakdowns[1].groups} == {"2": 100.0, "5": 100.0}


def test_mathvision_helpers() -> None:
    assert extract_model_answer("so x=\\boxed{12}") == "12"
    assert extract_model_answer("The final answer is 7. Done") == "7"
    assert is_equal("(1, 2)", "(1.0,2.0)") and is_equal("\\sqrt{4}", "2") and not is_equal("", "2")
    assert latex_value("2\\pi") == pytest.approx(6.2832, abs=1e-4)
    with pytest.raises(ValueError):
        safe_eval("__import__('os')")


def test_mathverse_keeps_vision_only_rows_and_compares_values(tmp_path: Path) -> None:
    rows = builders.mathverse_rows()
    report, scores = run(tmp_path, "mathverse", rows[1:], ["\\boxed{B}", "\\boxed{1.5}"])
    assert [s.correct for s in scores] == [True, True]
    items = get_benchmark("mathverse").load(read_table(builders.write_parquet(tmp_path / "all.parquet", rows)), "reasoning")
    assert [i.id for i in items] == ["5", "10"]
    _, scores = run(tmp_path, "mathverse", rows[1:], ["I pick (C)", "x = 1.5"])
    assert [s.correct for s in scores] == [False, True]


def test_wemath_strict_and_loose_on_a_two_and_a_three_step_group(tmp_path: Path) -> None:
    # 2-step group: sub 1 right, sub 2 wrong, multi right -> RM (strict) / CM (loose)
    # 3-step group: every sub right, multi wrong -> IG
    replies = ["\\boxed{A}", "\\boxed{D}", "Answer: C", "\\boxed{A}", "\\boxed{B}", "<Answer>: <<C>>", "\\boxed{A}"]
    report, _ = run(tmp_path, "wemath", builders.wemath_rows(), replies)
    m = report.metrics
    assert (m["groups"], m["ik_count"], m["ig_count"], m["rm_strict_count"], m["cm_loose_count"]) == (2, 0, 1, 1, 1)
    assert m["score_strict"] == pytest.approx(25.0)  # (2 - 0.5*1 - 1 - 0) / 2
    assert m["score_loose"] == pytest.approx(75.0)  # (2 - 0.5*1 - 0 - 0) / 2
    assert (m["IG"], m["CM_strict"], m["CM_loose"], m["RM_strict"], m["RM_loose"]) == (50.0, 0.0, 50.0, 100.0, 0.0)
    assert (m["S1"], m["S2"], m["S3"]) == (80.0, 100.0, 0.0)
    assert report.score == m["score_strict"] and report.metric == "score (strict)"


def test_wemath_four_dimensional_cases_and_answer_rule() -> None:
    fd = four_dimensional([([False, True], False), ([False, False], True), ([True, True, True], True)])
    assert (fd.ik, fd.ig, fd.cm_strict, fd.cm_loose, fd.rm_strict, fd.rm_loose) == (1, 0, 1, 1, 1, 1)
    assert official_answer("<Thought process>: x <Answer>: <<B>>") == "B"
    assert official_answer("B") == "B" and official_answer("(B)") is None


def test_wemath_incomplete_group_is_reported_not_scored(tmp_path: Path) -> None:
    rows = builders.wemath_rows()[:-1]  # the 3-step group loses its multi-step problem
    report, _ = run(tmp_path, "wemath", rows, ["\\boxed{A}"] * len(rows))
    assert report.metrics["groups"] == 1 and report.metrics["incomplete_groups"] == 1


def test_logicvista_multi_select_letter_sets(tmp_path: Path) -> None:
    rows = builders.logicvista_rows()
    report, scores = run(tmp_path, "logicvista", rows, ["\\boxed{A, C}", "The answer is (B)."])
    assert [s.correct for s in scores] == [True, True]
    _, scores = run(tmp_path, "logicvista", rows, ["\\boxed{A}", "I pick option B and D"])
    assert [s.correct for s in scores] == [False, False]
    assert {g.group for g in report.breakdowns[0].groups} == {"spatial", "inductive"}
    assert choice_letters("CA") == ["A", "C"] and choice_letters("A cat sat") == [] and choice_letters("A and C") == ["A", "C"]


def test_mme_acc_and_acc_plus(tmp_path: Path) -> None:
    replies = ["Yes", "No, there is none.", "yes", "Yes", "\\boxed{Yes}", "maybe"]
    report, scores = run(tmp_path, "mme", builders.mme_rows(), replies)
    assert [s.correct for s in scores] == [True, True, True, False, True, False]
    by = {b.by: {g.group: g.score for g in b.groups} for b in report.breakdowns}
    assert by["acc"] == {"code_reasoning": 50.0, "existence": 75.0}
    assert by["acc+"] == {"code_reasoning": 0.0, "existence": 50.0}
    assert report.score == 125.0 and report.metrics["cognition"] == 50.0
    assert report.extraction.parse_failures == 1
    assert official_yes_no("No.") == "no" and official_yes_no("I cannot tell") == "other"

"""MMMU and MMMU-Pro: official parsers against hand-written replies, and the scored report."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from frankmerge.evaluation.benchmarks import get_benchmark
from frankmerge.evaluation.benchmarks.mmmu_rules import (
    OFFICIAL_SEED,
    choice_info,
    eval_open,
    parse_multi_choice,
    parse_open_response,
    parse_pro_multi_choice,
)
from frankmerge.evaluation.data.tables import read_table
from frankmerge.evaluation.extract import extract_answer
from frankmerge.evaluation.records import GenerationRecord
from frankmerge.evaluation.scoring import score_records

from .builders import mmmu_pro_rows, mmmu_rows, write_parquet

OPTIONS = ["the first", "the second", "both", "neither"]


def parse(reply: str, rng: random.Random | None = None) -> tuple[str, bool]:
    index2ans, letters = choice_info(OPTIONS)
    return parse_multi_choice(reply, letters, index2ans, rng or random.Random(OFFICIAL_SEED))


def test_official_parser_guesses_on_a_boxed_letter_but_not_on_the_extracted_span() -> None:
    guessed_letter, guessed = parse("The answer is \\boxed{B}")
    assert guessed  # the complaint: the official parser alone draws a random letter
    assert guessed_letter == random.Random(OFFICIAL_SEED).choice(["A", "B", "C", "D"])
    assert parse(extract_answer("The answer is \\boxed{B}").final) == ("B", False)


def test_seeded_fallback_matches_the_official_global_seed() -> None:
    random.seed(42)
    official = [random.choice(["A", "B", "C", "D"]) for _ in range(5)]
    rng = random.Random(OFFICIAL_SEED)
    assert [parse("no letter at all", rng)[0] for _ in range(5)] == official


def test_last_bracketed_candidate_wins_and_content_matches_count() -> None:
    assert parse("(A) is wrong, so (C) it is") == ("C", False)
    assert parse("B C") == ("C", False)
    assert parse("I am fairly sure it shows the second one here") == ("B", False)  # > 5 words, option text


def test_open_numeric_answers() -> None:
    assert eval_open("3.5", parse_open_response("The speed is 3.50 m/s."))
    assert not eval_open("3.5", parse_open_response("The speed is 3.49 m/s."))
    assert eval_open("1000", parse_open_response("So the total is 1,000"))
    assert eval_open("0.5", parse_open_response("x = 1/2 = 0.5"))
    assert 3.5 in parse_open_response("therefore 3.5")


def test_list_valued_gold_accepts_any_member() -> None:
    assert eval_open(["24/7", "3.429"], parse_open_response("It is 3.429"))
    assert eval_open(["24/7", "3.429"], parse_open_response("Open 24/7 hours"))
    assert eval_open(["24/7", "3.429"], parse_open_response("It is 3.43"))  # official: numbers rounded to 2 decimals
    assert not eval_open(["24/7", "3.429"], parse_open_response("It is 3.44"))


def test_mmmu_pro_answer_rule_then_fallback() -> None:
    index2ans, letters = choice_info([f"o{i}" for i in range(10)])
    rng = random.Random(OFFICIAL_SEED)
    assert parse_pro_multi_choice("(A) looks tempting... (B) too.\nAnswer: C", letters, index2ans, rng) == ("C", False)
    assert parse_pro_multi_choice("Answer: A or B", letters, index2ans, rng) == ("B", False)
    assert parse_pro_multi_choice("Clearly D. is right", letters, index2ans, rng) == ("D", False)
    assert parse_pro_multi_choice("no idea", letters, index2ans, rng)[1]


def _records(replies: dict[str, str]) -> list[GenerationRecord]:
    return [GenerationRecord(id=k, raw_text=v, finish_reason="stop", n_tokens=len(v.split())) for k, v in replies.items()]


def test_mmmu_report_from_a_hand_made_parquet(tmp_path: Path) -> None:
    bench = get_benchmark("MMMU")
    items = bench.load(read_table(write_parquet(tmp_path / "Art" / "validation-0.parquet", mmmu_rows())), "reasoning")
    assert [len(i.images) for i in items] == [7, 1, 1]
    assert items[2].gold == ("24/7", "3.429") and items[0].choices[1] == "the second"
    replies = {
        "validation_Art_Theory_1": "<think>Wait, hmm.</think>\\boxed{B}",
        "validation_Physics_2": "<think>v = d/t</think>The speed is **3.50** m/s.",
        "validation_Computer_Science_3": "<think>never closes",
    }
    report, scores = score_records(bench, items, _records(replies))
    assert report.score == pytest.approx(200 / 3)
    assert [s.correct for s in scores] == [True, True, False]
    by_discipline = {g.group: g.score for g in report.breakdowns[0].groups}
    assert by_discipline == {"Art and Design": 100.0, "Science": 100.0, "Tech and Engineering": 0.0}
    assert report.generation.unclosed_think == 1 and round(report.generation.truncation_rate, 2) == 33.33
    assert report.generation.reflection_words["Wait"] == 1 and report.generation.reflection_words["Hmm"] == 1
    lengths = {g.group: g.mean_tokens for g in report.generation.mean_tokens_by_difficulty}
    assert lengths == {"Easy": 2.0, "Hard": 7.0, "Medium": 2.0}  # whitespace-split word counts


def test_mmmu_pro_standard_and_vision_layouts(tmp_path: Path) -> None:
    for name, vision in (("mmmu_pro", False), ("mmmu_pro_vision", True)):
        bench = get_benchmark(name)
        table = read_table(write_parquet(tmp_path / f"{name}.parquet", mmmu_pro_rows(vision)))
        (item,) = bench.load(table, "reasoning")
        assert len(item.choices) == 10 and len(item.images) == 1
        assert ("Write out the multiple-choice question" in item.prompt) is vision
        report, _ = score_records(bench, [item], _records({item.id: "Reasoning...\nAnswer: C"}))
        assert report.score == 100.0 and report.extraction.random_fallbacks == 0


@pytest.mark.parametrize("answer", ["**B**", "*B*", "__B__", " B. ", "**B**.", "(B)"])
def test_a_bare_emphasised_letter_is_read_not_guessed(answer: str) -> None:
    span = extract_answer(f"<think>comparing the two</think>\n\n{answer}\n")
    assert span.kind == "none" and span.whole_answer and span.final == "B"
    assert parse(span.final) == ("B", False)


def test_official_parser_alone_guesses_on_an_emphasised_letter() -> None:
    assert parse("**B**")[1] and parse("__B__")[1]  # why the whole answer is cleaned before it is parsed


def test_report_counts_the_answers_parsed_whole(tmp_path: Path) -> None:
    bench = get_benchmark("MMMU")
    items = bench.load(read_table(write_parquet(tmp_path / "validation-0.parquet", mmmu_rows())), "reasoning")
    replies = {
        "validation_Art_Theory_1": "<think>older one</think>**B**",
        "validation_Physics_2": "<think>v = d/t</think>\\boxed{3.5}",
        "validation_Computer_Science_3": "<think>a rate</think>__24/7__.",
    }
    report, scores = score_records(bench, items, _records(replies))
    assert [s.correct for s in scores] == [True, True, True]
    assert [s.whole_answer for s in scores] == [True, False, True]
    assert report.extraction.whole_answer == 2 and report.extraction.random_fallbacks == 0

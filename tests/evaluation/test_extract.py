"""The shared answer-span extractor, exact-match scoring and reflection-word counts."""

from __future__ import annotations

import pytest

from frankmerge.evaluation.extract import (
    clean_answer_text,
    clean_span,
    exact_match,
    extract_answer,
    last_boxed,
    normalize_answer,
    score_exact,
    split_think,
)
from frankmerge.evaluation.textstats import reflection_counts, total_reflection_counts


def test_answer_follows_the_last_of_several_think_closings() -> None:
    raw = "<think>first</think>draft \\boxed{A}</think>final \\boxed{C}"
    span = extract_answer(raw)
    assert (span.think, span.kind, span.span) == ("closed", "boxed", "C")
    assert span.answer_text == "final \\boxed{C}"


def test_missing_think_opening_is_normal_when_the_template_opened_it() -> None:
    span = extract_answer("I reason here. Wait, no.\n</think>\n\nThe answer is 12.", prompt_opened_think=True)
    assert (span.think, span.kind, span.final, span.truncated) == ("closed", "answer_is", "12", False)


def test_unclosed_think_counts_as_truncated_with_no_answer() -> None:
    span = extract_answer("<think>so the answer is \\boxed{B} maybe")
    assert span.truncated and span.kind == "truncated" and span.final == ""


def test_think_opened_by_the_prompt_and_never_closed_is_truncated() -> None:
    assert extract_answer("long reasoning \\boxed{B}", prompt_opened_think=True).truncated
    assert not extract_answer("plain reply \\boxed{B}").truncated  # no think block at all


def test_nested_braces_and_nested_boxes() -> None:
    assert last_boxed("x \\boxed{\\frac{1}{\\sqrt{2}}} y") == "\\frac{1}{\\sqrt{2}}"
    assert last_boxed("\\boxed{\\boxed{B}}") == "B"
    assert last_boxed("\\boxed{1} then \\boxed{2}") == "2"
    assert last_boxed("\\boxed{7} and an unfinished \\boxed{8") == "7"
    assert last_boxed("\\fbox{D}") == "D"
    assert last_boxed("no box") is None


@pytest.mark.parametrize(
    ("reply", "kind", "span"),
    [
        ("The correct option is **B**.\n\nAnswer: **B**", "answer_line", "B"),
        ("**Final Answer:**\n\n(C)", "answer_line", "C"),
        ("<Thought process>: <<adds up>> <Answer>: <<D>>", "answer_line", "D"),
        ("So the answer is $\\text{42}$. Done.", "answer_is", "42"),
        ("Thus the final answer is (A).", "answer_is", "A"),
        ("Answer: A\nWait, \\boxed{B}", "boxed", "B"),  # a box wins over an Answer: line
        ("I think it is B", "none", ""),
    ],
)
def test_span_kinds(reply: str, kind: str, span: str) -> None:
    got = extract_answer(reply)
    assert (got.kind, got.span) == (kind, span)


def test_final_falls_back_to_the_whole_answer_text() -> None:
    assert extract_answer("<think>x</think>  I think it is B ").final == "I think it is B"


def test_whole_answer_is_cleaned_of_emphasis_and_surrounding_punctuation() -> None:
    assert clean_answer_text("  **D**.\n") == "D"
    assert clean_answer_text("'***C***'") == "C"
    assert clean_answer_text("I would pick **D** here.") == "I would pick D here"
    assert clean_answer_text("$\\text{(A)}$") == "A"
    assert clean_answer_text("a_1 + b_1 = 2*3*4") == "a_1 + b_1 = 2*3*4"  # no emphasis inside words or numbers
    assert clean_answer_text("...") == ""
    span = extract_answer("<think>x</think>**D**")
    assert (span.kind, span.span, span.final, span.whole_answer) == ("none", "", "D", True)
    assert not extract_answer("<think>x</think> \n").whole_answer  # nothing to parse: not counted


def test_clean_span_unwraps_markdown_and_latex() -> None:
    assert clean_span("**B**") == "B"
    assert clean_span("$\\text{(C)}$.") == "C"
    assert clean_span("<<A>>") == "A"
    assert clean_span("3.5.") == "3.5"
    assert clean_span("Paris") == "Paris"


def test_split_think_states() -> None:
    assert split_think("a</think>b") == ("b", "closed")
    assert split_think("<think>a") == ("", "unclosed")
    assert split_think("plain") == ("plain", "absent")


def test_exact_match_normalises_numbers_case_and_wrappers() -> None:
    assert normalize_answer("1,000.50") == "1000.5"
    assert exact_match("3.50", "3.5") and exact_match("**B**", "b") and exact_match("  Paris ", "paris")
    assert not exact_match("3.51", "3.5")
    assert score_exact("<think>hmm</think>\\boxed{12}", "12")
    assert not score_exact("<think>hmm \\boxed{12}", "12")  # truncated inside the think block
    assert not score_exact("", "12")


def test_reflection_words_are_whole_words_case_insensitive() -> None:
    text = "Wait, wait. Hmmm, let me check. Alternatively... a mistake? Checked; awaits; waiting."
    assert reflection_counts(text) == {"Wait": 2, "Hmm": 1, "Alternatively": 1, "Check": 1, "Mistake": 1}
    assert total_reflection_counts(["Wait", "WAIT hmm"]) == {"Wait": 2, "Hmm": 1, "Alternatively": 0, "Check": 0, "Mistake": 0}

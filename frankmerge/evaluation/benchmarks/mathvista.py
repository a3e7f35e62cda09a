"""MathVista (testmini): rules in place of the GPT answer extractor, then the official normalisation.

Officially a GPT model extracts the answer from the response; everything after that
(``normalize_extracted_answer``: option letter to choice text, nearest choice by edit distance,
integer / float rounding to the item's precision, exact string equality) is the official code's.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

from frankmerge.evaluation.benchmarks.base import (
    Aggregate,
    Benchmark,
    breakdown,
    join_prompt,
    option_letters,
    percent,
)
from frankmerge.evaluation.benchmarks.common import as_labels, format_options, item_id, literal_list, read_options, row_images
from frankmerge.evaluation.data.tables import Row, Table, cell, require_columns
from frankmerge.evaluation.items import Item, Judgement

DIMENSIONS: tuple[str, ...] = ("skills", "task", "question_type", "answer_type", "category", "context", "grade", "source")
REASONING_SUFFIX = "Think step by step, then give the final answer within \\boxed{}."
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LEADING_LETTER = re.compile(r"^\(?([A-Z])\)?(?:[.:)\s]|$)")
_QUICK = re.compile(r'The answer is "(.*)"\.')


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, the official get_most_similar's measure."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _answer_type(gold: str, choices: Sequence[str]) -> str:
    """For tables without MathVista's answer_type column (some TSV exports): read it off the gold."""
    if choices:
        return "text"
    try:
        value = float(gold)
    except ValueError:
        return "list" if gold.startswith("[") else "text"
    return "integer" if value.is_integer() and "." not in gold else "float"


def _metadata(row: Row, key: str) -> Any:
    meta = row.get("metadata")
    if isinstance(meta, dict) and meta.get(key) is not None:
        return meta[key]
    return cell(row, key)


def _hint(question_type: str, answer_type: str, precision: int) -> str:
    if question_type == "multi_choice":
        return "Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
    if answer_type == "integer":
        return "Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end."
    if answer_type == "float":
        example = "1.2, 1.3, 1.4" if precision == 1 else "1.23, 1.34, 1.45"
        places = "one decimal place" if precision == 1 else f"{precision} decimal places"
        return (
            f"Please answer the question requiring a floating-point number with {places} "
            f"and provide the final value, e.g., {example}, at the end."
        )
    return (
        "Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], at the end."
    )


def load(table: Table, style: str) -> list[Item]:
    require_columns(table, "mathvista", ("pid", "index"), "question", "answer")
    items = []
    for position, row in enumerate(table.rows):
        identifier = item_id(row, "pid", "index", position=position)
        choices = read_options(row, "choices")
        question_type = str(cell(row, "question_type", default="multi_choice" if choices else "free_form"))
        answer_type = str(cell(row, "answer_type", default=_answer_type(str(row["answer"]), choices)))
        gold = str(row["answer"])
        decimals = len(gold.split(".")[1]) if answer_type == "float" and "." in gold else 0
        precision = int(float(cell(row, "precision", default=decimals)))
        query = cell(row, "query")
        if query is None:
            parts = [f"Hint: {_hint(question_type, answer_type, precision)}", f"Question: {row['question']}"]
            if choices:
                parts.append("Choices:\n" + format_options(choices, "paren"))
            query = "\n".join(parts)
        groups = {d: as_labels(_metadata(row, d)) for d in DIMENSIONS if d not in ("question_type", "answer_type")}
        groups.update(question_type=(question_type,), answer_type=(answer_type,))
        items.append(
            Item(
                id=identifier,
                prompt=join_prompt(str(query), REASONING_SUFFIX if style == "reasoning" else ""),
                images=row_images(table, row, ("decoded_image", "image"), identifier)[:1],
                gold=canonical_list(row["answer"]) if answer_type == "list" else str(row["answer"]).strip(),
                kind="multiple-choice" if question_type == "multi_choice" else "open",
                choices=tuple(choices),
                groups=MappingProxyType({k: v for k, v in groups.items() if v}),
                extra=MappingProxyType({"answer_type": answer_type, "precision": precision}),
            )
        )
    return items


def rule_extract(response: str, item: Item) -> str:
    """The official extractor's rule steps, then rules standing in for its GPT call."""
    response = response.strip()
    answer_type = item.extra["answer_type"]
    if not response:
        return ""
    if item.kind == "multiple-choice" and response in item.choices:
        return response
    for cast, kind in ((int, "integer"), (float, "float")):
        if answer_type == kind:
            try:
                return str(cast(response))
            except ValueError:
                pass
    quick = _QUICK.search(response)
    if quick:
        return quick.group(1)
    if item.kind == "multiple-choice":
        letter = _LEADING_LETTER.match(response)
        if letter and letter.group(1) in option_letters(len(item.choices)):
            return letter.group(1)
        present = [(response.rfind(c), c) for c in item.choices if c and c in response]
        return max(present)[1] if present else response
    if answer_type == "list":
        bracket = re.findall(r"\[[^\[\]]*\]", response)
        return bracket[-1] if bracket else ""
    numbers = _NUMBER.findall(response.replace(",", ""))
    return numbers[-1] if numbers else ""


def normalize_extracted(extraction: str, item: Item) -> tuple[str | None, bool]:
    """Official normalize_extracted_answer: (normalised answer, whether the nearest choice was forced)."""
    answer_type, precision = item.extra["answer_type"], item.extra["precision"]
    if item.kind == "multiple-choice":
        extraction = extraction.strip()
        letters = re.findall(r"\(([a-zA-Z])\)", extraction)
        if letters:
            extraction = letters[0].upper()
        options = option_letters(len(item.choices))
        if extraction in options:
            return item.choices[options.index(extraction)], False
        if extraction in item.choices:
            return extraction, False
        distances = [edit_distance(extraction, c) for c in item.choices]
        return item.choices[distances.index(min(distances))], True
    if answer_type == "list":
        listed = canonical_list(extraction)
        return (listed, False) if listed.startswith("[") else (None, False)
    try:
        if answer_type == "integer":
            return str(int(float(extraction))), False
        if answer_type == "float":
            return str(round(float(extraction), precision)), False
    except ValueError:
        return None, False
    return str(extraction), False


def canonical_list(value: Any) -> str:
    """A list answer as "[a, b, c]" (the official check compares list strings; this ignores spacing
    and quoting, and keeps a gold stored as a list cell comparable); anything else stripped."""
    listed = literal_list(value)
    if listed is None:
        return str(value).strip()
    return "[" + ", ".join(str(v).strip() for v in listed) + "]"


def judge(item: Item, answer: str, rng: random.Random) -> Judgement:
    extraction = rule_extract(answer, item)
    normalized, nearest = normalize_extracted(extraction, item) if item.choices or extraction else (None, False)
    failed = not extraction or normalized is None
    return Judgement(
        parsed=normalized or "",
        correct=normalized is not None and normalized == item.gold,
        parse_failed=failed,
        nearest_fallback=nearest,
    )


def aggregate(items: Sequence[Item], judgements: Sequence[Judgement]) -> Aggregate:
    return Aggregate(
        metric="accuracy",
        score=percent(sum(j.correct for j in judgements), len(judgements)),
        breakdowns=tuple(breakdown(items, judgements, d) for d in DIMENSIONS),
    )


BENCHMARK = Benchmark(
    name="mathvista",
    title="MathVista (testmini)",
    official=False,
    scoring_note="rule-based substitute for the GPT answer extractor (span, option letter, choice text, last "
    "number), then the official normalize_extracted_answer and exact match",
    load=load,
    judge=judge,
    aggregate=aggregate,
    default_split="testmini",
)

"""MathVerse (testmini, vision-only): a rule-based scorer standing in for its two GPT stages.

Officially GPT extracts the answer and GPT judges it against the gold. Here: multiple-choice
answers are compared by option letter; free-form answers with MathVision's ``is_equal`` after its
LaTeX clean-up (so "x = 3", "3.0" and "\\frac{6}{2}" all equal "3").
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from types import MappingProxyType

from frankmerge.evaluation.benchmarks.base import Aggregate, Benchmark, breakdown, join_prompt, percent
from frankmerge.evaluation.benchmarks.common import as_labels, item_id, read_gold, row_images
from frankmerge.evaluation.benchmarks.letters import choice_letters
from frankmerge.evaluation.benchmarks.math_equal import is_equal
from frankmerge.evaluation.benchmarks.mathvision import find_math_answer
from frankmerge.evaluation.data.tables import Row, Table, cell, require_columns
from frankmerge.evaluation.errors import DataFileError
from frankmerge.evaluation.items import Item, Judgement

VISION_ONLY = "Vision Only"
REASONING_SUFFIX = "Think step by step, then give the final answer within \\boxed{}."
_GOLD_LETTER = re.compile(r"^\(?([A-H])\)?(?:$|[.:)\s])")


def _meta(row: Row, key: str) -> object:
    meta = row.get("metadata")
    return meta.get(key) if isinstance(meta, dict) else cell(row, key)


def load(table: Table, style: str) -> list[Item]:
    require_columns(table, "mathverse", ("sample_index", "index"), ("query_cot", "question"), "answer")
    rows = table.rows
    if rows and "problem_version" in rows[0]:
        rows = [r for r in rows if r.get("problem_version") == VISION_ONLY]
        if not rows:
            raise DataFileError(f"{table.files[0]}: no rows with problem_version == {VISION_ONLY!r}")
    items = []
    for position, row in enumerate(rows):
        identifier = item_id(row, "sample_index", "index", position=position)
        gold = read_gold(row["answer"])
        is_mc = str(cell(row, "question_type", default="")).startswith("multi") or bool(
            _GOLD_LETTER.match(str(gold)) and len(str(gold)) <= 3
        )
        query = str(cell(row, "query_cot", "question"))
        groups = {
            "subject": as_labels(_meta(row, "subject")),
            "subfield": as_labels(_meta(row, "subfield")),
            "problem_version": as_labels(cell(row, "problem_version")),
        }
        items.append(
            Item(
                id=identifier,
                prompt=join_prompt(query, REASONING_SUFFIX if style == "reasoning" else ""),
                images=row_images(table, row, ("image",), identifier)[:1],
                gold=gold,
                kind="multiple-choice" if is_mc else "open",
                groups=MappingProxyType({k: v for k, v in groups.items() if v}),
            )
        )
    return items


def judge(item: Item, answer: str, rng: random.Random) -> Judgement:
    gold = str(item.gold).strip()
    if item.kind == "multiple-choice":
        letters = choice_letters(answer)
        gold_letter = _GOLD_LETTER.match(gold)
        parsed = letters[0] if len(letters) == 1 else ""
        return Judgement(parsed, bool(parsed) and gold_letter is not None and parsed == gold_letter.group(1), not parsed)
    if not answer.strip():
        return Judgement("", False, parse_failed=True)
    parsed = find_math_answer(answer)
    candidates = {answer.strip(), parsed}
    golds = {gold, find_math_answer(gold)}
    correct = any(is_equal(c, g) for c in candidates for g in golds)
    return Judgement(parsed, correct, parse_failed=not parsed)


def aggregate(items: Sequence[Item], judgements: Sequence[Judgement]) -> Aggregate:
    return Aggregate(
        metric="accuracy",
        score=percent(sum(j.correct for j in judgements), len(judgements)),
        breakdowns=tuple(breakdown(items, judgements, d) for d in ("subject", "subfield", "problem_version")),
    )


BENCHMARK = Benchmark(
    name="mathverse",
    title="MathVerse (testmini, vision-only)",
    official=False,
    scoring_note="rule-based substitute for GPT extraction + GPT judging: option letter match, or MathVision "
    "is_equal after its LaTeX clean-up; only 'Vision Only' rows are kept",
    load=load,
    judge=judge,
    aggregate=aggregate,
    default_split="testmini",
)

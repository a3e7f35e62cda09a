"""LogicVista: rule-based letter-set matching in place of its GPT answer extractor.

Officially GPT reads the letter(s) a response chose; the answer is right when the sorted set of
letters equals the gold's (several letters for multi-select questions, e.g. "A, C"). Here the
letters come from the extracted span by rule (`choice_letters`); the comparison is the official one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from types import MappingProxyType

from frankmerge.evaluation.benchmarks.base import Aggregate, Benchmark, breakdown, instruction, join_prompt, percent
from frankmerge.evaluation.benchmarks.common import as_labels, item_id, row_images
from frankmerge.evaluation.benchmarks.letters import choice_letters
from frankmerge.evaluation.data.tables import Table, cell, require_columns
from frankmerge.evaluation.items import Item, Judgement

SKILLS: tuple[str, ...] = ("inductive", "deductive", "numerical", "spatial", "mechanical")
OFFICIAL_INSTRUCTION = "Answer with the letter(s) of the correct option(s)."


def load(table: Table, style: str) -> list[Item]:
    require_columns(table, "logicvista", "question", "answer")
    items = []
    for position, row in enumerate(table.rows):
        identifier = item_id(row, "index", "id", "question_id", "imagename", position=position)
        gold = choice_letters(str(row["answer"]))
        kind = "multi-select" if len(gold) > 1 else "multiple-choice"
        skill_text = " ".join(as_labels(cell(row, "skill"))).lower()
        groups = {
            "skill": tuple(s for s in SKILLS if s in skill_text),
            "capability": as_labels(cell(row, "broad_capability", "capability", "category")),
        }
        items.append(
            Item(
                id=identifier,
                prompt=join_prompt(str(row["question"]), instruction("multi-select", style, OFFICIAL_INSTRUCTION)),
                images=row_images(table, row, ("image", "imagename", "image_path"), identifier)[:1],
                gold=tuple(gold),
                kind=kind,
                groups=MappingProxyType({k: v for k, v in groups.items() if v}),
            )
        )
    return items


def judge(item: Item, answer: str, rng: random.Random) -> Judgement:
    letters = choice_letters(answer)
    return Judgement(", ".join(letters), bool(letters) and tuple(letters) == item.gold, parse_failed=not letters)


def aggregate(items: Sequence[Item], judgements: Sequence[Judgement]) -> Aggregate:
    return Aggregate(
        metric="accuracy",
        score=percent(sum(j.correct for j in judgements), len(judgements)),
        breakdowns=tuple(breakdown(items, judgements, d) for d in ("skill", "capability")),
    )


BENCHMARK = Benchmark(
    name="logicvista",
    title="LogicVista",
    official=False,
    scoring_note="rule-based substitute for the GPT letter extractor (option letters in the extracted span), "
    "official sorted-letter-set comparison, multi-select answers included",
    load=load,
    judge=judge,
    aggregate=aggregate,
    default_split=None,
)

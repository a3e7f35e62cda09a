"""MMMU (val): the official multiple-choice and open parsers, accuracy by subject and discipline."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from frankmerge.evaluation.benchmarks.base import (
    Aggregate,
    Benchmark,
    breakdown,
    instruction,
    join_prompt,
    percent,
)
from frankmerge.evaluation.benchmarks.common import format_options, item_id, read_gold, read_options, row_images
from frankmerge.evaluation.benchmarks.mmmu_rules import (
    choice_info,
    eval_multi_choice,
    eval_open,
    parse_multi_choice,
    parse_open_response,
)
from frankmerge.evaluation.data.tables import Table, cell, require_columns
from frankmerge.evaluation.items import Item, Judgement

IMAGE_COLUMNS: tuple[str, ...] = tuple(f"image_{i}" for i in range(1, 8)) + ("image",)
# mmmu/utils/data_utils.py DOMAIN_CAT2SUB_CAT
DISCIPLINES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
        "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
        "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
        "Health and Medicine": (
            "Basic_Medical_Science",
            "Clinical_Medicine",
            "Diagnostics_and_Laboratory_Medicine",
            "Pharmacy",
            "Public_Health",
        ),
        "Humanities and Social Science": ("History", "Literature", "Sociology", "Psychology"),
        "Tech and Engineering": (
            "Agriculture",
            "Architecture_and_Engineering",
            "Computer_Science",
            "Electronics",
            "Energy_and_Power",
            "Materials",
            "Mechanical_Engineering",
        ),
    }
)
_DISCIPLINE_OF = MappingProxyType({s: d for d, subjects in DISCIPLINES.items() for s in subjects})
_SUBJECT_IN_ID = re.compile(r"^[a-z]+_(.+)_\d+$")
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."


def subject_of(identifier: str, fallback: str | None = None) -> str:
    """MMMU ids are ``<split>_<Subject>_<n>``; the subject decides the discipline."""
    match = _SUBJECT_IN_ID.match(identifier)
    if match:
        return match.group(1)
    return (fallback or "unknown").replace(" ", "_")


def discipline_of(subject: str) -> str:
    return _DISCIPLINE_OF.get(subject.replace(" ", "_"), "unknown")


def load(table: Table, style: str) -> list[Item]:
    require_columns(table, "mmmu", ("id", "index"), "question", "answer")
    items = []
    for position, row in enumerate(table.rows):
        identifier = item_id(row, "id", "index", position=position)
        options = read_options(row, "options")
        question_type = str(cell(row, "question_type", default="multiple-choice" if options else "open"))
        kind = "multiple-choice" if question_type == "multiple-choice" else "open"
        question = str(row["question"])
        if kind == "multiple-choice":
            prompt = join_prompt(question, format_options(options, "paren"), instruction(kind, style, MC_INSTRUCTION))
        else:
            prompt = join_prompt(question, instruction(kind, style, OPEN_INSTRUCTION))
        subject = subject_of(identifier, cell(row, "subject", "category"))
        difficulty = cell(row, "topic_difficulty")
        items.append(
            Item(
                id=identifier,
                prompt=prompt,
                images=row_images(table, row, IMAGE_COLUMNS, identifier),
                gold=read_gold(row["answer"]),
                kind=kind,
                choices=tuple(options),
                groups=MappingProxyType(
                    {
                        "subject": (subject,),
                        "discipline": (discipline_of(subject),),
                        "question_type": (question_type,),
                        **({"difficulty": (str(difficulty),)} if difficulty else {}),
                    }
                ),
                difficulty=str(difficulty) if difficulty else None,
            )
        )
    return items


def judge(item: Item, answer: str, rng: random.Random) -> Judgement:
    if item.kind == "multiple-choice":
        index2ans, all_choices = choice_info(item.choices)
        pred, guessed = parse_multi_choice(answer, all_choices, index2ans, rng)
        return Judgement(pred, eval_multi_choice(item.gold, pred), parse_failed=guessed, random_fallback=guessed)
    preds = parse_open_response(answer)
    return Judgement(
        parsed=" | ".join(str(p) for p in preds),
        correct=eval_open(item.gold, preds),
        parse_failed=not answer.strip(),
    )


def aggregate(items: Sequence[Item], judgements: Sequence[Judgement]) -> Aggregate:
    """Instance-level accuracy (the official calculate_ins_level_acc over all subjects)."""
    dims = ("discipline", "subject", "question_type", "difficulty")
    return Aggregate(
        metric="accuracy",
        score=percent(sum(j.correct for j in judgements), len(judgements)),
        breakdowns=tuple(breakdown(items, judgements, d) for d in dims),
    )


BENCHMARK = Benchmark(
    name="mmmu",
    title="MMMU (val)",
    official=True,
    scoring_note="official MMMU parsers (parse_multi_choice_response with random.seed(42) fallback, "
    "parse_open_response + eval_open) on the extracted answer span",
    load=load,
    judge=judge,
    aggregate=aggregate,
    default_split="validation",
)

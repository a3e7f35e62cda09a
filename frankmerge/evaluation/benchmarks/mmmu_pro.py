"""MMMU-Pro, standard (10 options) and vision settings: the official "Answer:" rule, then MMMU's parser."""

from __future__ import annotations

import random
from collections.abc import Sequence
from types import MappingProxyType

from frankmerge.evaluation.benchmarks.base import Aggregate, Benchmark, Loader, breakdown, join_prompt, percent
from frankmerge.evaluation.benchmarks.common import format_options, item_id, read_gold, read_options, row_images
from frankmerge.evaluation.benchmarks.mmmu import IMAGE_COLUMNS, discipline_of
from frankmerge.evaluation.benchmarks.mmmu_rules import choice_info, eval_multi_choice, parse_pro_multi_choice
from frankmerge.evaluation.data.tables import Table, cell, require_columns
from frankmerge.evaluation.errors import DataFileError
from frankmerge.evaluation.items import Item, Judgement

# MMMU-Pro's chain-of-thought prompts (prompts.yaml); already a reasoning prompt, used for both styles.
_FORMAT = (
    "The last line of your response should be of the following format: 'Answer: $LETTER' (without quotes) "
    "where LETTER is one of options. Think step by step before answering."
)
STANDARD_COT = "Answer the following multiple-choice question. " + _FORMAT
VISION_COT = "Write out the multiple-choice question in the image and then solve it. " + _FORMAT


def _loader(vision: bool) -> Loader:
    def load(table: Table, style: str) -> list[Item]:
        name = "mmmu_pro_vision" if vision else "mmmu_pro"
        require_columns(table, name, ("id", "index"), ("options", "A"), "answer", *(() if vision else ("question",)))
        items = []
        for position, row in enumerate(table.rows):
            identifier = item_id(row, "id", "index", position=position)
            options = read_options(row, "options")
            if not options:
                raise DataFileError(f"{table.files[0]}: item {identifier} has no options (column 'options' or A, B, ...)")
            if vision:
                prompt = VISION_COT
            else:
                prompt = join_prompt(str(row["question"]) + "\n" + format_options(options, "dot"), STANDARD_COT)
            subject = str(cell(row, "subject", "category", default="unknown")).replace(" ", "_")
            difficulty = cell(row, "topic_difficulty")
            groups = {"subject": (subject,), "discipline": (discipline_of(subject),)}
            if difficulty:
                groups["difficulty"] = (str(difficulty),)
            items.append(
                Item(
                    id=identifier,
                    prompt=prompt,
                    images=row_images(table, row, IMAGE_COLUMNS, identifier),
                    gold=read_gold(row["answer"]),
                    kind="multiple-choice",
                    choices=tuple(options),
                    groups=MappingProxyType(groups),
                    difficulty=str(difficulty) if difficulty else None,
                )
            )
        return items

    return load


def judge(item: Item, answer: str, rng: random.Random) -> Judgement:
    index2ans, all_choices = choice_info(item.choices)
    pred, guessed = parse_pro_multi_choice(answer, all_choices, index2ans, rng)
    return Judgement(pred, eval_multi_choice(item.gold, pred), parse_failed=guessed, random_fallback=guessed)


def aggregate(items: Sequence[Item], judgements: Sequence[Judgement]) -> Aggregate:
    return Aggregate(
        metric="accuracy",
        score=percent(sum(j.correct for j in judgements), len(judgements)),
        breakdowns=tuple(breakdown(items, judgements, d) for d in ("discipline", "subject", "difficulty")),
    )


_NOTE = (
    "official MMMU-Pro rule (a unique option letter after the last 'Answer:'), then its MMMU-style parser "
    "with a seeded random fallback (seed 42, as MMMU); MMMU-Pro overall = mean of standard and vision"
)
BENCHMARK = Benchmark(
    name="mmmu_pro",
    title="MMMU-Pro (standard, 10 options)",
    official=True,
    scoring_note=_NOTE,
    load=_loader(vision=False),
    judge=judge,
    aggregate=aggregate,
    default_split="test",
)
VISION_BENCHMARK = Benchmark(
    name="mmmu_pro_vision",
    title="MMMU-Pro (vision)",
    official=True,
    scoring_note=_NOTE,
    load=_loader(vision=True),
    judge=judge,
    aggregate=aggregate,
    default_split="test",
)

"""MME: the official yes/no parser and per-category acc, acc+ and score, summed for perception.

Each image carries two questions. Per category (eval_tool/calculation.py): acc = % of questions
right, acc+ = % of images with both questions right, score = acc + acc+. The perception score is
the sum over the ten perception categories (at most 2000), cognition over the other four.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from types import MappingProxyType

from frankmerge.evaluation.benchmarks.base import Aggregate, Benchmark, Breakdown, GroupScore, instruction, join_prompt, percent
from frankmerge.evaluation.benchmarks.common import row_images
from frankmerge.evaluation.data.tables import Table, cell, require_columns
from frankmerge.evaluation.items import Item, Judgement

PERCEPTION: tuple[str, ...] = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION: tuple[str, ...] = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def official_yes_no(answer: str) -> str:
    """The official parse_pred_ans: "yes"/"no" exactly, else by the first four characters, else "other"."""
    answer = answer.strip().lower()
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def load(table: Table, style: str) -> list[Item]:
    require_columns(table, "mme", ("question_id", "image_path", "index"), "question", "answer", "category")
    seen: dict[str, int] = defaultdict(int)
    items = []
    for position, row in enumerate(table.rows):
        image_key = str(cell(row, "question_id", "image_path", default=position))
        seen[image_key] += 1
        identifier = str(row["index"]) if "index" in row and row["index"] not in (None, "") else f"{image_key}#{seen[image_key]}"
        question = str(row["question"])
        prompt = question if style == "official" else join_prompt(question, instruction("yes-no", style, ""))
        items.append(
            Item(
                id=identifier,
                prompt=prompt,
                images=row_images(table, row, ("image",), identifier)[:1],
                gold=str(row["answer"]).strip(),
                kind="yes-no",
                groups=MappingProxyType({"category": (str(row["category"]),)}),
                extra=MappingProxyType({"image_key": image_key}),
            )
        )
    return items


def judge(item: Item, answer: str, rng: random.Random) -> Judgement:
    parsed = official_yes_no(answer)
    return Judgement(parsed, parsed == str(item.gold).lower(), parse_failed=parsed == "other")


def aggregate(items: Sequence[Item], judgements: Sequence[Judgement]) -> Aggregate:
    questions: dict[str, list[bool]] = defaultdict(list)
    images: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for item, judgement in zip(items, judgements, strict=True):
        category = item.groups["category"][0]
        questions[category].append(judgement.correct)
        images[category][item.extra["image_key"]].append(judgement.correct)
    acc, acc_plus, scores = [], [], []
    metrics: dict[str, float] = {}
    for category in sorted(questions):
        results, per_image = questions[category], images[category]
        a = percent(sum(results), len(results))
        a_plus = percent(sum(all(v) for v in per_image.values()), len(per_image))
        acc.append(GroupScore(category, len(results), a))
        acc_plus.append(GroupScore(category, len(per_image), a_plus))
        scores.append(GroupScore(category, len(results), a + a_plus))
        metrics[f"{category}_score"] = a + a_plus
    perception = sum(g.score for g in scores if g.group in PERCEPTION)
    cognition = sum(g.score for g in scores if g.group in COGNITION)
    metrics.update(perception=perception, cognition=cognition, total=perception + cognition)
    return Aggregate(
        metric="perception score (sum of acc + acc+)",
        score=perception,
        breakdowns=(
            Breakdown("score", tuple(scores)),
            Breakdown("acc", tuple(acc)),
            Breakdown("acc+", tuple(acc_plus)),
        ),
        metrics=MappingProxyType(metrics),
    )


BENCHMARK = Benchmark(
    name="mme",
    title="MME (perception)",
    official=True,
    scoring_note="official yes/no parser on the extracted span; per category acc + acc+, perception = sum of 10",
    load=load,
    judge=judge,
    aggregate=aggregate,
    default_split="test",
)

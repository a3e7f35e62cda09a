"""What a benchmark is to the harness: a loader, a per-answer judge and an aggregate formula."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from frankmerge.evaluation.data.tables import Table
from frankmerge.evaluation.items import Item, Judgement

PROMPT_STYLES: tuple[str, ...] = ("reasoning", "official")

# The "reasoning" prompt style replaces a benchmark's "answer directly" instruction, which a
# reasoning model ignores anyway, by one that puts the final answer where the extractor looks.
REASONING_INSTRUCTIONS: Mapping[str, str] = MappingProxyType(
    {
        "multiple-choice": "Think step by step, then give the letter of the correct option as the final answer within \\boxed{}.",
        "multi-select": "Think step by step, then give the letters of all correct options as the final answer "
        "within \\boxed{}, for example \\boxed{A, C}.",
        "yes-no": "Think step by step, then answer Yes or No within \\boxed{}.",
        "open": "Think step by step, then give the final answer within \\boxed{}.",
    }
)


@dataclass(frozen=True)
class GroupScore:
    group: str
    n: int
    score: float


@dataclass(frozen=True)
class Breakdown:
    """Scores of one breakdown dimension (MMMU by discipline, MathVista by skill, ...)."""

    by: str
    groups: tuple[GroupScore, ...]


@dataclass(frozen=True)
class Aggregate:
    """A benchmark's headline number under its official formula, with its breakdowns."""

    metric: str
    score: float
    breakdowns: tuple[Breakdown, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


Loader = Callable[[Table, str], list[Item]]
Judge = Callable[[Item, str, random.Random], Judgement]
Aggregator = Callable[[Sequence[Item], Sequence[Judgement]], Aggregate]


@dataclass(frozen=True)
class Benchmark:
    """One registered benchmark. ``official`` is False where a rule-based scorer replaces a GPT judge."""

    name: str
    title: str
    official: bool
    scoring_note: str
    load: Loader
    judge: Judge
    aggregate: Aggregator
    default_split: str | None = None


def instruction(kind: str, style: str, official_text: str) -> str:
    """The closing instruction of a prompt under the chosen prompt style."""
    return official_text if style == "official" else REASONING_INSTRUCTIONS[kind]


def join_prompt(*parts: str) -> str:
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def percent(correct: int, n: int) -> float:
    return 100.0 * correct / n if n else 0.0


def breakdown(items: Sequence[Item], judgements: Sequence[Judgement], dimension: str) -> Breakdown:
    """Accuracy per value of one dimension; an item with several values counts in each."""
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item, judgement in zip(items, judgements, strict=True):
        for value in item.groups.get(dimension, ()):
            hits[value][0] += int(judgement.correct)
            hits[value][1] += 1
    groups = tuple(GroupScore(group=g, n=n, score=percent(c, n)) for g, (c, n) in sorted(hits.items()))
    return Breakdown(by=dimension, groups=groups)


def accuracy_aggregate(*dimensions: str) -> Aggregator:
    """Instance-level accuracy in percent, broken down by the given item dimensions."""

    def aggregate(items: Sequence[Item], judgements: Sequence[Judgement]) -> Aggregate:
        correct = sum(j.correct for j in judgements)
        return Aggregate(
            metric="accuracy",
            score=percent(correct, len(judgements)),
            breakdowns=tuple(breakdown(items, judgements, d) for d in dimensions),
        )

    return aggregate


def option_letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]

"""Score generation records against benchmark items: a pure function of the two, the same every time."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from frankmerge.evaluation.benchmarks.base import Benchmark, Breakdown, percent
from frankmerge.evaluation.benchmarks.mmmu_rules import OFFICIAL_SEED
from frankmerge.evaluation.errors import PredictionsError
from frankmerge.evaluation.extract import SPAN_KINDS, extract_answer
from frankmerge.evaluation.items import Item, Judgement
from frankmerge.evaluation.records import GenerationRecord, GenerationSettings, ModelInfo
from frankmerge.evaluation.textstats import REFLECTION_WORDS, reflection_counts


@dataclass(frozen=True)
class ItemScore:
    """What happened to one item, written to ``scores.jsonl`` for inspection."""

    id: str
    correct: bool
    finish_reason: str  # "stop", "length", "unknown" (not recorded), or "missing" / "error" when there is no reply
    difficulty: str | None
    parsed: str = ""
    span: str = ""
    span_kind: str = ""  # one of SPAN_KINDS, or finish_reason when there is no reply
    parse_failed: bool = True
    random_fallback: bool = False
    nearest_fallback: bool = False
    whole_answer: bool = False  # no span: the cleaned whole answer was parsed
    truncated: bool = False
    n_tokens: int | None = 0  # None: the prediction did not record it
    error: str | None = None


@dataclass(frozen=True)
class ItemError:
    id: str
    error: str


@dataclass(frozen=True)
class GroupMean:
    group: str
    n: int
    mean_tokens: float


@dataclass(frozen=True)
class ExtractionStats:
    """How answers were found, and how often a parser had to give up or guess."""

    span_kinds: Mapping[str, int]
    parse_failures: int
    random_fallbacks: int
    nearest_choice_fallbacks: int
    whole_answer: int  # no span found: the whole answer, cleaned of markdown and punctuation, went to the parser
    accuracy: float  # per-question accuracy, every benchmark
    accuracy_without_guesses: float  # the same, random / nearest-choice guesses counted wrong


@dataclass(frozen=True)
class GenerationStats:
    """Length and truncation of the replies; None where the predictions do not record what a number
    needs (token counts, finish reasons: predictions from other tools), never an estimate."""

    n_generated: int
    truncated_by_length: int | None  # finish_reason "length"
    unclosed_think: int  # a <think> block never closed
    truncation_rate: float | None  # percent of generated items with either
    mean_tokens: float | None
    mean_tokens_by_difficulty: tuple[GroupMean, ...]
    reflection_words: Mapping[str, int]
    reflection_words_per_item: float


@dataclass(frozen=True)
class BenchmarkReport:
    benchmark: str
    title: str
    metric: str
    score: float
    official: bool
    scoring_note: str
    n_items: int
    n_missing: int
    item_errors: tuple[ItemError, ...]
    breakdowns: tuple[Breakdown, ...]
    metrics: Mapping[str, float]
    extraction: ExtractionStats
    generation: GenerationStats
    model: ModelInfo | None
    settings: GenerationSettings | None


def check_prediction_ids(items: Sequence[Item], records: Sequence[GenerationRecord], benchmark: str) -> None:
    """Predictions for ids the data does not have mean a wrong data file or benchmark: stop."""
    known = {item.id for item in items}
    unknown = [r.id for r in records if r.id not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise PredictionsError(f"{len(unknown)} prediction id(s) are not in the {benchmark} data: {shown}")


def score_item(
    benchmark: Benchmark, item: Item, record: GenerationRecord | None, rng: random.Random
) -> tuple[ItemScore, Judgement]:
    if record is None or record.error is not None:
        judgement = Judgement("", False, parse_failed=True)
        reason = "missing" if record is None else "error"
        score = ItemScore(item.id, False, reason, item.difficulty, span_kind=reason, error=record and record.error)
        return score, judgement
    span = extract_answer(record.raw_text, record.think_open_in_prompt)
    judgement = benchmark.judge(item, span.final, rng)
    score = ItemScore(
        id=item.id,
        whole_answer=span.whole_answer,
        correct=judgement.correct,
        parsed=judgement.parsed,
        span=span.span,
        span_kind=span.kind,
        parse_failed=judgement.parse_failed,
        random_fallback=judgement.random_fallback,
        nearest_fallback=judgement.nearest_fallback,
        truncated=span.truncated or record.finish_reason == "length",
        finish_reason=record.finish_reason or "unknown",
        n_tokens=record.n_tokens,
        difficulty=item.difficulty,
    )
    return score, judgement


def score_records(
    benchmark: Benchmark, items: Sequence[Item], records: Sequence[GenerationRecord]
) -> tuple[BenchmarkReport, list[ItemScore]]:
    """The benchmark's report and per-item scores; items without a record count as wrong."""
    by_id = {r.id: r for r in records}
    rng = random.Random(OFFICIAL_SEED)  # drawn in data order, as the official scripts do
    scores, judgements = [], []
    for item in items:
        score, judgement = score_item(benchmark, item, by_id.get(item.id), rng)
        scores.append(score)
        judgements.append(judgement)
    aggregate = benchmark.aggregate(items, judgements)
    generated = [s for s in scores if s.finish_reason not in ("missing", "error")]
    used = [by_id[s.id] for s in generated]
    first = used[0] if used else None
    report = BenchmarkReport(
        benchmark=benchmark.name,
        title=benchmark.title,
        metric=aggregate.metric,
        score=aggregate.score,
        official=benchmark.official,
        scoring_note=benchmark.scoring_note,
        n_items=len(items),
        n_missing=sum(s.finish_reason == "missing" for s in scores),
        item_errors=tuple(ItemError(s.id, s.error or "") for s in scores if s.finish_reason == "error"),
        breakdowns=aggregate.breakdowns,
        metrics=dict(aggregate.metrics),
        extraction=_extraction_stats(scores),
        generation=_generation_stats(generated, used),
        model=first.model if first else None,
        settings=first.settings if first else None,
    )
    return report, scores


def _extraction_stats(scores: Sequence[ItemScore]) -> ExtractionStats:
    kinds = Counter(s.span_kind for s in scores)
    n = len(scores)
    return ExtractionStats(
        span_kinds={k: kinds.get(k, 0) for k in (*SPAN_KINDS, "missing", "error")},
        parse_failures=sum(s.parse_failed for s in scores),
        random_fallbacks=sum(s.random_fallback for s in scores),
        nearest_choice_fallbacks=sum(s.nearest_fallback for s in scores),
        whole_answer=sum(s.whole_answer for s in scores),
        accuracy=percent(sum(s.correct for s in scores), n),
        accuracy_without_guesses=percent(sum(s.correct and not (s.random_fallback or s.nearest_fallback) for s in scores), n),
    )


def _generation_stats(generated: Sequence[ItemScore], records: Sequence[GenerationRecord]) -> GenerationStats:
    n = len(generated)
    tokens = [s.n_tokens for s in generated if s.n_tokens is not None]
    tokens_known = len(tokens) == n
    finish_known = all(s.finish_reason != "unknown" for s in generated)
    lengths: dict[str, list[int]] = defaultdict(list)
    for s in generated:
        if s.difficulty is not None and s.n_tokens is not None and tokens_known:
            lengths[s.difficulty].append(s.n_tokens)
    reflection = dict.fromkeys(REFLECTION_WORDS, 0)
    for record in records:
        for word, count in reflection_counts(record.raw_text).items():
            reflection[word] += count
    return GenerationStats(
        n_generated=n,
        truncated_by_length=sum(s.finish_reason == "length" for s in generated) if finish_known else None,
        unclosed_think=sum(s.span_kind == "truncated" for s in generated),
        truncation_rate=percent(sum(s.truncated for s in generated), n) if finish_known else None,
        mean_tokens=(sum(tokens) / n if n else 0.0) if tokens_known else None,
        mean_tokens_by_difficulty=tuple(GroupMean(g, len(v), sum(v) / len(v)) for g, v in sorted(lengths.items())),
        reflection_words=reflection,
        reflection_words_per_item=sum(reflection.values()) / n if n else 0.0,
    )

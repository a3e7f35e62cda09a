"""Per-run report: ``report.json`` (everything), ``report.md`` (for people), ``scores.jsonl`` (per item)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from frankmerge import __version__
from frankmerge.evaluation.scoring import BenchmarkReport, GenerationStats, ItemScore

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
SCORES = "scores.jsonl"


def report_dict(report: BenchmarkReport, data: Path | None = None, predictions: Path | None = None) -> dict[str, Any]:
    out = asdict(report)
    out.update(data=str(data) if data else None, predictions=str(predictions) if predictions else None)
    out["frankmerge_version"] = __version__
    return out


def write_report(
    out: Path, report: BenchmarkReport, scores: Sequence[ItemScore], data: Path | None = None, predictions: Path | None = None
) -> None:
    """Write the three report files into `out`."""
    out = Path(out)
    (out / REPORT_JSON).write_text(json.dumps(report_dict(report, data, predictions), indent=2, ensure_ascii=False) + "\n")
    (out / REPORT_MD).write_text(render_markdown(report))
    with (out / SCORES).open("w", encoding="utf-8") as handle:
        for score in scores:
            handle.write(json.dumps(asdict(score), ensure_ascii=False) + "\n")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def fmt(value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def unknown_or(value: float | int | None, template: str) -> str:
    """``template`` filled with ``value``, or "unknown" when the predictions did not record it."""
    return "unknown" if value is None else template.format(value)


def truncation_line(gen: GenerationStats) -> str:
    if gen.truncation_rate is None:
        return f"Truncation rate unknown (no finish reasons in the predictions; {gen.unclosed_think} left <think> open)"
    return (
        f"Truncation rate {gen.truncation_rate:.2f}% ({gen.truncated_by_length} hit max_new_tokens, "
        f"{gen.unclosed_think} left <think> open)"
    )


def render_markdown(report: BenchmarkReport) -> str:
    """A human-readable page: headline, extraction and truncation, lengths, reflection, breakdowns."""
    model = report.model.name if report.model else "unknown model"
    ex, gen = report.extraction, report.generation
    scoring = "official scoring" if report.official else "rule-based substitute for a GPT judge"
    lines = [
        f"# {report.title}: {model}",
        "",
        f"**{report.metric}: {report.score:.2f}** ({scoring}: {report.scoring_note})",
        "",
        f"{report.n_items} items, {gen.n_generated} generated, {report.n_missing} without a generation, "
        f"{len(report.item_errors)} not generated because of an error.",
        "",
        "## Answer extraction",
        "",
        *_table(["span", "items"], [[k, v] for k, v in ex.span_kinds.items() if v]),
        f"No answer span, whole answer cleaned and parsed: {ex.whole_answer}; parser found no answer: {ex.parse_failures}; "
        f"random-option fallbacks: {ex.random_fallbacks}; nearest-choice fallbacks: {ex.nearest_choice_fallbacks}.",
        f"Per-question accuracy {ex.accuracy:.2f}, {ex.accuracy_without_guesses:.2f} when guesses count as wrong.",
        "",
        "## Generation",
        "",
        f"{truncation_line(gen)}; mean output length {unknown_or(gen.mean_tokens, '{:.1f} tokens')}.",
        "",
    ]
    if gen.mean_tokens_by_difficulty:
        lines += _table(
            ["difficulty", "items", "mean tokens"], [[g.group, g.n, g.mean_tokens] for g in gen.mean_tokens_by_difficulty]
        )
    lines += _table(["reflection word", "count"], list(gen.reflection_words.items()))
    if report.metrics:
        lines += ["## Metrics", "", *_table(["metric", "value"], list(report.metrics.items()))]
    for breakdown in report.breakdowns:
        if breakdown.groups:
            lines += [
                f"## By {breakdown.by}",
                "",
                *_table([breakdown.by, "items", "score"], [[g.group, g.n, g.score] for g in breakdown.groups]),
            ]
    if report.item_errors:
        lines += ["## Items not generated", "", *[f"- `{e.id}`: {e.error}" for e in report.item_errors], ""]
    if report.settings:
        lines += ["## Settings", "", "```json", json.dumps(asdict(report.settings), indent=2), "```", ""]
    return "\n".join(lines)

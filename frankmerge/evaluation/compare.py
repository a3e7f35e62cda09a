"""Compare several models (e.g. VLM, reasoner-merged, DRIFT-tuned) across benchmarks: Markdown, JSON, plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from frankmerge.errors import one_line
from frankmerge.evaluation.errors import ReportError
from frankmerge.evaluation.report import REPORT_JSON

COMPARISON_MD = "comparison.md"
COMPARISON_JSON = "comparison.json"
COMPARISON_PNG = "comparison.png"


@dataclass(frozen=True)
class RunSummary:
    """The numbers of one (model, benchmark) report that a comparison shows."""

    model: str
    benchmark: str
    title: str
    metric: str
    score: float
    official: bool
    truncation_rate: float | None  # None: the predictions did not record it
    mean_tokens: float | None
    parse_failures: int
    random_fallbacks: int
    reflection_words: dict[str, int]
    source: str


def _summary(data: dict[str, Any], name: str | None, source: Path) -> RunSummary:
    try:
        gen, ex = data["generation"], data["extraction"]
        return RunSummary(
            model=name or (data.get("model") or {}).get("name") or source.parent.name,
            benchmark=data["benchmark"],
            title=data["title"],
            metric=data["metric"],
            score=float(data["score"]),
            official=bool(data["official"]),
            truncation_rate=None if gen["truncation_rate"] is None else float(gen["truncation_rate"]),
            mean_tokens=None if gen["mean_tokens"] is None else float(gen["mean_tokens"]),
            parse_failures=int(ex["parse_failures"]),
            random_fallbacks=int(ex["random_fallbacks"]) + int(ex["nearest_choice_fallbacks"]),
            reflection_words={k: int(v) for k, v in gen["reflection_words"].items()},
            source=str(source),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"{source}: not a frankmerge benchmark report ({one_line(exc)})") from exc


def load_runs(paths: Sequence[Path], names: Sequence[str] = ()) -> list[RunSummary]:
    """Reports from files or directories (searched for report.json); `names` label the paths in order."""
    if names and len(names) != len(paths):
        raise ReportError(f"got {len(names)} --name for {len(paths)} runs; give one per run or none")
    runs = []
    for index, path in enumerate(map(Path, paths)):
        files = sorted(path.rglob(REPORT_JSON)) if path.is_dir() else [path]
        if not files or not files[0].is_file():
            raise ReportError(f"{path}: no {REPORT_JSON} found (run `frankmerge eval` or `frankmerge score` first)")
        for file in files:
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ReportError(f"{file}: not valid JSON ({exc.msg})") from exc
            runs.append(_summary(data, names[index] if names else None, file))
    return runs


# Scores a benchmark's authors report as the mean of two of its settings, when both were run.
DERIVED = {
    "mmmu_pro_overall": ("MMMU-Pro overall (mean of standard and vision)", ("mmmu_pro", "mmmu_pro_vision")),
}


def _ordered(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def comparison_table(runs: Sequence[RunSummary]) -> dict[str, Any]:
    """Rows per benchmark with one column per model, for scores and the generation diagnostics."""
    models = _ordered([r.model for r in runs])
    benchmarks = _ordered([r.benchmark for r in runs])
    cell = {(r.model, r.benchmark): r for r in runs}
    rows = []
    for benchmark in benchmarks:
        first = next(r for r in runs if r.benchmark == benchmark)
        per_model = {m: cell.get((m, benchmark)) for m in models}
        rows.append(
            {
                "benchmark": benchmark,
                "title": first.title,
                "metric": first.metric,
                "official": first.official,
                "score": {m: r.score if r else None for m, r in per_model.items()},
                "truncation_rate": {m: r.truncation_rate if r else None for m, r in per_model.items()},
                "mean_tokens": {m: r.mean_tokens if r else None for m, r in per_model.items()},
                "parse_failures": {m: r.parse_failures if r else None for m, r in per_model.items()},
                "guesses": {m: r.random_fallbacks if r else None for m, r in per_model.items()},
                "reflection_words": {m: r.reflection_words if r else None for m, r in per_model.items()},
            }
        )
    rows += _derived_rows(rows, models)
    return {"models": models, "benchmarks": [r["benchmark"] for r in rows], "rows": rows, "runs": [asdict(r) for r in runs]}


def _derived_rows(rows: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """MMMU-Pro overall = mean of its standard and vision scores (the MMMU-Pro paper's headline
    number), for each model that has both; the diagnostics stay with the two settings' rows."""
    by_name = {row["benchmark"]: row for row in rows}
    derived = []
    for name, (title, parts) in DERIVED.items():
        if not all(part in by_name for part in parts):
            continue
        scores = {m: [by_name[p]["score"][m] for p in parts] for m in models}
        empty = dict.fromkeys(models)
        derived.append(
            {
                "benchmark": name,
                "title": title,
                "metric": by_name[parts[0]]["metric"],
                "official": all(by_name[p]["official"] for p in parts),
                "derived_from": list(parts),
                "score": {m: None if None in v else sum(v) / len(v) for m, v in scores.items()},
                **{key: empty for key in ("truncation_rate", "mean_tokens", "parse_failures", "guesses", "reflection_words")},
            }
        )
    return derived


def _fmt(value: Any, digits: int = 1) -> str:
    return "–" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def _reflection_words(row: dict[str, Any], models: list[str]) -> list[str]:
    """Every reflection word any model's report counted (Wait, Hmm, Alternatively, Check, Mistake), in report order."""
    words: list[str] = []
    for model in models:
        for word in row["reflection_words"][model] or {}:
            if word not in words:
                words.append(word)
    return words


def render_markdown(table: dict[str, Any]) -> str:
    models = table["models"]
    header = "| " + " | ".join(["benchmark", "metric", *models]) + " |\n|" + "---|" * (len(models) + 2) + "\n"

    def section(title: str, key: str, digits: int = 1) -> str:
        body = "".join(
            "| "
            + " | ".join([row["title"] + ("" if row["official"] else " †"), row["metric"] if key == "score" else key])
            + " | "
            + " | ".join(_fmt(row[key][m], digits) for m in models)
            + " |\n"
            for row in table["rows"]
        )
        return f"## {title}\n\n{header}{body}\n"

    wait_rows = "".join(
        f"| {row['title']} | {word} | " + " | ".join(_fmt((row["reflection_words"][m] or {}).get(word)) for m in models) + " |\n"
        for row in table["rows"]
        for word in _reflection_words(row, models)
    )
    return (
        "# Model comparison\n\n"
        + section("Scores", "score", 2)
        + "† rule-based substitute for the official GPT judge.\n\n"
        + section("Truncation rate (%)", "truncation_rate")
        + section("Mean output length (tokens)", "mean_tokens")
        + section("Answers the parser could not find", "parse_failures")
        + section("Random / nearest-choice guesses", "guesses")
        + f"## Reflection words\n\n{header}{wait_rows}\n"
    )


def plot(table: dict[str, Any], path: Path) -> None:
    """Grouped bars: score and mean output length per benchmark, one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, rows = table["models"], table["rows"]
    width = 0.8 / max(len(models), 1)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows) * 2), 4))
    for ax, key, label in ((axes[0], "score", "score"), (axes[1], "mean_tokens", "mean output tokens")):
        for i, model in enumerate(models):
            values = [row[key][model] or 0.0 for row in rows]
            ax.bar([x + i * width for x in range(len(rows))], values, width, label=model)
        ax.set_xticks([x + width * (len(models) - 1) / 2 for x in range(len(rows))])
        ax.set_xticklabels([row["benchmark"] for row in rows], rotation=30, ha="right")
        ax.set_ylabel(label)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(paths: Sequence[Path], out: Path, names: Sequence[str] = ()) -> dict[str, Any]:
    """Write comparison.md, comparison.json and comparison.png for the given runs into `out`."""
    table = comparison_table(load_runs(paths, names))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPARISON_JSON).write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n")
    (out / COMPARISON_MD).write_text(render_markdown(table))
    plot(table, out / COMPARISON_PNG)
    return table

"""Evaluation commands: `eval` (generate + score), `score` (re-score saved generations), `compare`, `benchmarks`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from frankmerge.evaluation.records import BACKENDS, DEFAULT_MAX_NEW_TOKENS, GenerationSettings

if TYPE_CHECKING:
    from frankmerge.evaluation.scoring import BenchmarkReport

_PATH = click.Path(path_type=Path)


def _print_summary(report: BenchmarkReport) -> None:
    ex, gen = report.extraction, report.generation
    kind = "official" if report.official else "rule-based, no GPT judge"
    click.echo(f"{report.title}: {report.metric} {report.score:.2f} ({kind})")
    truncated = "unknown" if gen.truncation_rate is None else f"{gen.truncation_rate:.1f}%"
    tokens = "unknown" if gen.mean_tokens is None else f"{gen.mean_tokens:.0f}"
    click.echo(
        f"  items {report.n_items}, generated {gen.n_generated}, missing {report.n_missing}, errors {len(report.item_errors)}; "
        f"truncated {truncated}, mean {tokens} tokens"
    )
    click.echo(
        f"  no answer span (whole answer parsed) {ex.whole_answer}, no answer found {ex.parse_failures}, "
        f"random guesses {ex.random_fallbacks}, nearest-choice {ex.nearest_choice_fallbacks}; "
        f"Wait x{gen.reflection_words.get('Wait', 0)}"
    )


@click.command("eval")
@click.option("--model", "model_dir", required=True, type=_PATH, help="Model directory (loads with AutoModelForImageTextToText).")
@click.option("--benchmark", required=True, help="Benchmark name (see `frankmerge benchmarks`).")
@click.option(
    "--data", required=True, type=_PATH, help="Local data: parquet file, directory of parquet files, or VLMEvalKit TSV."
)
@click.option("--out", required=True, type=_PATH, help="Run directory: generations.jsonl, report.json/.md, scores.jsonl.")
@click.option("--backend", type=click.Choice(BACKENDS), default="transformers", show_default=True)
@click.option(
    "--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, show_default=True, help="Long enough for R1-style replies."
)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="auto | bfloat16 | float16 | float32 (auto = float32 on CPU).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N (transformers backend).")
@click.option(
    "--think-template",
    default="model",
    show_default=True,
    help="model (chat template as is), open (append <think>), or a Jinja file.",
)
@click.option(
    "--prompt-style",
    type=click.Choice(["reasoning", "official"]),
    default="reasoning",
    show_default=True,
    help="reasoning: ask for the final answer in \\boxed{}; official: the benchmark's own instruction.",
)
@click.option("--split", help="With a data directory: read the parquet files whose name contains this [benchmark default].")
@click.option("--limit", type=int, help="Only the first N items.")
@click.option("--max-model-len", type=int, help="vLLM context length [the model's].")
@click.option("--tensor-parallel", type=int, help="vLLM GPUs per model [chosen from model size and GPU memory].")
@click.option("--name", help="Model name in reports and comparisons [the directory name].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def eval_cmd(
    model_dir: Path,
    benchmark: str,
    data: Path,
    out: Path,
    split: str | None,
    limit: int | None,
    name: str | None,
    quiet: bool,
    **options: object,
) -> None:
    """Generate answers with a model on a benchmark, then score them; re-running skips done items."""
    from frankmerge.evaluation.run import evaluate

    settings = GenerationSettings(**options)  # type: ignore[arg-type]
    report = evaluate(model_dir, benchmark, data, out, settings, name=name, split=split, limit=limit, progress=not quiet)
    _print_summary(report)
    click.echo(f"report: {out / 'report.md'}")


@click.command("score")
@click.option("--benchmark", required=True, help="Benchmark name (see `frankmerge benchmarks`).")
@click.option("--data", required=True, type=_PATH, help="The benchmark data the generations answer.")
@click.option(
    "--predictions",
    required=True,
    type=_PATH,
    help="generations.jsonl, JSONL with id and raw_text (or prediction), or VLMEvalKit's .xlsx/.tsv predictions.",
)
@click.option("--out", required=True, type=_PATH, help="Where report.json/.md and scores.jsonl go.")
@click.option("--split", help="With a data directory: parquet files whose name contains this.")
@click.option("--limit", type=int, help="Only the first N items.")
@click.option("--name", help="Model name in the report.")
def score_cmd(
    benchmark: str, data: Path, predictions: Path, out: Path, split: str | None, limit: int | None, name: str | None
) -> None:
    """Score saved predictions (no model needed): ours, minimal JSONL, or VLMEvalKit's prediction files."""
    from frankmerge.evaluation.run import score_predictions

    report = score_predictions(benchmark, data, predictions, out, split=split, limit=limit, name=name)
    _print_summary(report)
    click.echo(f"report: {out / 'report.md'}")


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=_PATH)
@click.option("--out", required=True, type=_PATH, help="Where comparison.md/.json/.png go.")
@click.option("--name", "names", multiple=True, help="One name per RUN, in order [the model names in the reports].")
def compare_cmd(runs: tuple[Path, ...], out: Path, names: tuple[str, ...]) -> None:
    """Compare models across benchmarks; each RUN is a report.json or a directory holding some."""
    from frankmerge.evaluation.compare import compare, render_markdown

    table = compare(runs, out, names)
    click.echo(render_markdown(table))
    click.echo(f"written: {out / 'comparison.md'}, comparison.json, comparison.png")


@click.command("benchmarks")
def benchmarks_cmd() -> None:
    """List the benchmarks and how each is scored."""
    from frankmerge.evaluation.benchmarks import BENCHMARKS

    for bench in BENCHMARKS.values():
        kind = "official" if bench.official else "rule-based"
        click.echo(f"{bench.name:16} {bench.title:36} {kind:10} {bench.scoring_note}")


COMMANDS = [eval_cmd, score_cmd, compare_cmd, benchmarks_cmd]

"""Generate and score (``evaluate``), or re-score saved generations (``score_predictions``)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from frankmerge.evaluation.benchmarks import Benchmark, get_benchmark
from frankmerge.evaluation.data.tables import read_table
from frankmerge.evaluation.errors import DataFileError, EvaluationError
from frankmerge.evaluation.generate import Generation
from frankmerge.evaluation.items import Item
from frankmerge.evaluation.predictions import read_predictions
from frankmerge.evaluation.prompting import FailedPrompt, PreparedPrompt, prepare
from frankmerge.evaluation.records import (
    BACKENDS,
    GenerationRecord,
    GenerationSettings,
    ModelInfo,
    append_records,
    check_resumable,
    model_info,
    read_records,
)
from frankmerge.evaluation.report import write_report
from frankmerge.evaluation.scoring import BenchmarkReport, check_prediction_ids, score_records
from frankmerge.progress import progress_bar

log = logging.getLogger(__name__)
GENERATIONS = "generations.jsonl"


class Backend(Protocol):
    processor: Any

    def generate(self, prompts: Sequence[PreparedPrompt]) -> list[Generation]: ...


BackendFactory = Callable[[Path, GenerationSettings, int], Backend]


def load_items(benchmark: Benchmark, data: Path, split: str | None = None, prompt_style: str = "reasoning") -> list[Item]:
    """The benchmark's items from a local data copy; `split` filters files of a directory."""
    data = Path(data)
    table = read_table(data, split if split is not None else (benchmark.default_split if data.is_dir() else None))
    items = benchmark.load(table, prompt_style)
    if not items:
        raise DataFileError(f"{data}: no {benchmark.name} items")
    duplicates = [item_id for item_id, n in Counter(i.id for i in items).items() if n > 1]
    if duplicates:
        raise DataFileError(f"{data}: duplicate item ids {', '.join(duplicates[:5])}")
    return items


def default_backend(model_dir: Path, settings: GenerationSettings, max_images: int) -> Backend:
    if settings.backend == "vllm":
        from frankmerge.evaluation.vllm_backend import VllmBackend

        return VllmBackend(model_dir, settings, max_images)
    from frankmerge.evaluation.generate import TransformersBackend

    return TransformersBackend(model_dir, settings)


def _batches(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _record(
    prompt: PreparedPrompt | FailedPrompt,
    generation: Generation | None,
    benchmark: str,
    settings: GenerationSettings,
    model: ModelInfo,
    seconds: float,
) -> GenerationRecord:
    if isinstance(prompt, FailedPrompt) or generation is None:
        error = prompt.error if isinstance(prompt, FailedPrompt) else "no generation"
        return GenerationRecord(prompt.item_id, "", "error", 0, benchmark, settings=settings, model=model, error=error)
    return GenerationRecord(
        id=prompt.item_id,
        raw_text=generation.text,
        finish_reason=generation.finish_reason,
        n_tokens=generation.n_tokens,
        benchmark=benchmark,
        n_prompt_tokens=generation.n_prompt_tokens,
        think_open_in_prompt=prompt.think_open,
        prompt_sha256=prompt.sha256,
        settings=settings,
        model=model,
        seconds=round(seconds, 4),
    )


def generate_missing(
    benchmark: Benchmark,
    items: Sequence[Item],
    model_dir: Path,
    out: Path,
    settings: GenerationSettings,
    model: ModelInfo,
    backend_factory: BackendFactory = default_backend,
    progress: bool = True,
) -> int:
    """Append records for every item not yet in OUT/generations.jsonl; returns how many were made."""
    path = out / GENERATIONS
    existing = read_records(path) if path.exists() else []
    check_resumable(existing, settings, model, path)
    done = {r.id for r in existing}
    todo = [item for item in items if item.id not in done]
    if done:
        log.info("resuming: %d of %d items already generated in %s", len(items) - len(todo), len(items), path)
    if not todo:
        return 0
    backend = backend_factory(model_dir, settings, max((len(i.images) for i in items), default=0))
    with progress_bar(
        total=len(items), initial=len(items) - len(todo), unit="item", desc=benchmark.name, disable=not progress
    ) as bar:
        for batch in _batches(todo, settings.batch_size):
            start = time.perf_counter()
            prepared = prepare(backend.processor, batch, settings.think_template)
            ready = [p for p in prepared if isinstance(p, PreparedPrompt)]
            generations = iter(backend.generate(ready) if ready else [])
            seconds = (time.perf_counter() - start) / max(len(ready), 1)
            records = [
                _record(p, next(generations) if isinstance(p, PreparedPrompt) else None, benchmark.name, settings, model, seconds)
                for p in prepared
            ]
            for record in records:
                if record.error:
                    log.warning("item %s not generated: %s", record.id, record.error)
            append_records(path, records)
            bar.update(len(batch))
    return len(todo)


def evaluate(
    model_dir: Path,
    benchmark_name: str,
    data: Path,
    out: Path,
    settings: GenerationSettings | None = None,
    *,
    name: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    backend_factory: BackendFactory = default_backend,
) -> BenchmarkReport:
    """Generate what OUT lacks for the benchmark's items, then score and write the report."""
    settings = settings or GenerationSettings()
    if settings.backend not in BACKENDS:
        raise EvaluationError(f"unknown backend {settings.backend!r}; choose one of {', '.join(BACKENDS)}")
    if not Path(model_dir).is_dir():
        raise EvaluationError(f"--model {model_dir}: not a directory")
    benchmark = get_benchmark(benchmark_name)
    items = load_items(benchmark, data, split, settings.prompt_style)[:limit]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model_info(Path(model_dir), name)
    generate_missing(benchmark, items, Path(model_dir), out, settings, model, backend_factory, progress)
    ids = {item.id for item in items}
    records = [r for r in read_records(out / GENERATIONS) if r.id in ids]
    report, scores = score_records(benchmark, items, records)
    write_report(out, report, scores, data=Path(data), predictions=out / GENERATIONS)
    return report


def score_predictions(
    benchmark_name: str,
    data: Path,
    predictions: Path,
    out: Path,
    *,
    split: str | None = None,
    limit: int | None = None,
    name: str | None = None,
) -> BenchmarkReport:
    """Re-score predictions (generations.jsonl, minimal JSONL or a VLMEvalKit .xlsx/.tsv) against the
    benchmark data; ids unknown to the data are an error."""
    benchmark = get_benchmark(benchmark_name)
    items = load_items(benchmark, data, split)
    records = read_predictions(predictions, [item.id for item in items])
    check_prediction_ids(items, records, benchmark.name)
    items = items[:limit]
    ids = {item.id for item in items}
    report, scores = score_records(benchmark, items, [r for r in records if r.id in ids])
    model = report.model or ModelInfo()
    if name or not model.name:  # generations from elsewhere may carry no model name
        report = replace(report, model=replace(model, name=name or Path(predictions).resolve().parent.name))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, report, scores, data=Path(data), predictions=Path(predictions))
    return report

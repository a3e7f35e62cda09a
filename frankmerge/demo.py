"""``frankmerge demo``: the whole pipeline on tiny trained models, with nothing downloaded.

Builds (or reuses from the cache) a base LLM, a reasoner fine-tuned from it and a LLaVA VLM whose
language model starts from it, trained in one of two regimes (``llava``: tower aligned against the
frozen language model, then a brief low-rate fine-tune; ``qwen``: the language model trained hard);
profiles the VLM's visual attention; analyses the task vectors; merges with FRANK (each prior) and
every baseline; fine-tunes the VLM on a small multimodal chain-of-thought set with plain SFT and
with DRIFT (and SFT after a merge); evaluates everything; scans a λ_V × λ_R grid of task
arithmetic; and ends with a three-line verdict. See docs/testbed.md.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from frankmerge.testbed.trained.build import TestbedModels, build_testbed
from frankmerge.testbed.trained.config import DEFAULT_V3, QUICK_V3, TestbedConfig
from frankmerge.testbed.trained.drift_study import (
    DriftRun,
    DriftSettings,
    build_testbed_prior,
    run_fine_tunes,
    write_training_set,
)
from frankmerge.testbed.trained.encode import Encoder
from frankmerge.testbed.trained.parallel import evaluate_many, usable_cores
from frankmerge.testbed.trained.plots import coefficients_png, lambda_map_png
from frankmerge.testbed.trained.report import Row, chance_levels, results_table
from frankmerge.testbed.trained.study import (
    MergeOutcome,
    baseline_specs,
    frank_specs,
    lambda_grid,
    reverse_depth_spec,
    run_merge,
    unmerged_control,
)
from frankmerge.testbed.trained.tasks import EVAL_TASKS, THINK_OPENED_TASKS, Example, perception
from frankmerge.testbed.trained.verdict import models_from_json, verdict_lines

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = (*EVAL_TASKS, *THINK_OPENED_TASKS)
FINE_TUNE_START = "frank_no_prior"  # the merge that merge-then-SFT starts from
PROFILE_PROMPT = "how many red ?"  # the VLM's own kind of question, in its vocabulary
PROFILE_SEED = 7


@dataclass(frozen=True)
class DemoOptions:
    config: TestbedConfig = DEFAULT_V3  # testbed v3's llava regime (docs/testbed.md, "Results: testbed v3")
    n_items: int = 200  # evaluation items per task
    grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    grid_items: int = 100
    profile_images: int = 32
    profile_bootstrap: int = 200
    drift: DriftSettings | None = field(default_factory=DriftSettings)  # None: no fine-tunes
    cache_dir: Path | None = None
    rebuild: bool = False
    progress: bool = True
    workers: int | None = None  # processes for training and evaluation; None: every usable core

    @classmethod
    def quick(cls, **overrides: object) -> DemoOptions:
        """The CI configuration: a 3-block 64-wide testbed, fewer items, a 3×3 grid."""
        settings: dict[str, object] = dict(
            config=QUICK_V3,
            n_items=60,
            grid=(0.0, 0.5, 1.0),
            grid_items=40,
            profile_images=8,
            drift=DriftSettings(n_items=64, epochs=1.0, variants=("adaptive",)),
        )
        return cls(**{**settings, **overrides})  # type: ignore[arg-type]


@dataclass
class DemoResult:
    workdir: Path
    models: TestbedModels
    rows: list[Row]
    merges: list[MergeOutcome]
    chance: dict[str, float]
    table: str
    summary: list[str] = field(default_factory=list)  # profile and task-vector lines printed under the table
    verdict: list[str] = field(default_factory=list)  # the three closing lines
    fine_tunes: list[DriftRun] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def run_demo(workdir: Path, options: DemoOptions | None = None) -> DemoResult:
    """Run every step into ``workdir`` and return the results (also in ``workdir/demo_results.json``)."""
    from transformers.utils import logging as hf_logging

    from frankmerge.analysis import (
        ProfileOptions,
        analyze_task_vectors,
        image_directory,
        profile_vlm,
        write_analysis,
        write_profile,
    )

    hf_logging.disable_progress_bar()
    options = options or DemoOptions()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = round(now - clock, 2)
        clock = now

    workers = options.workers or usable_cores()
    models = build_testbed(options.config, options.cache_dir, rebuild=options.rebuild, progress=options.progress, workers=workers)
    lap("build_models")

    images = _profile_images(workdir / "profile" / "images", options.profile_images, options.config.image_scale)
    profile_options = ProfileOptions(prompt=PROFILE_PROMPT, device="cpu", dtype="float32", n_boot=options.profile_bootstrap)
    profile = profile_vlm(str(models.vlm), image_directory(images), profile_options)
    profile_json = workdir / "profile" / "profile.json"
    write_profile(profile, profile_json)
    uniform = uniform_attention_ratio(PROFILE_PROMPT, options.config.system_prompt, options.config.image_scale)
    lap("profile")

    analysis = analyze_task_vectors(
        str(models.vlm),
        str(models.reasoner),
        str(models.base),
        alpha=profile.fit.alpha,
        alpha_source=f"profile {profile_json}",
        profile_layers=profile.num_layers,
    )
    write_analysis(analysis, workdir / "analysis")
    lap("analyze")

    merged_root = workdir / "merged"
    shutil.rmtree(merged_root, ignore_errors=True)
    specs = frank_specs(profile_json) + baseline_specs(profile.num_layers)
    merges = [run_merge(models, spec, merged_root / spec.name) for spec in specs]
    reference = next((m for m in merges if m.spec.name == "frank" and m.path), next(m for m in merges if m.path))
    merges.append(run_merge(models, reverse_depth_spec(reference), merged_root / "reverse_depth"))
    merges.append(unmerged_control(models, merged_root / "reasoner_in_vlm"))
    lap("merge")

    fine_tunes, training_set = [], None
    if options.drift is not None:
        drift_root = workdir / "drift"
        shutil.rmtree(drift_root, ignore_errors=True)
        training_set = write_training_set(
            drift_root / "data", options.drift.n_items, options.n_items, image_scale=options.config.image_scale
        )
        prior = build_testbed_prior(models.vlm, models.reasoner, drift_root / "prior.safetensors")
        starts = [(m.spec.name, m.path) for m in merges if m.spec.name == FINE_TUNE_START and m.path is not None]
        fine_tunes = run_fine_tunes(
            models.vlm, prior, training_set.path, drift_root / "runs", options.drift, starts=starts, progress=options.progress
        )
        lap("fine_tune")

    to_evaluate: list[tuple[str, str, Path]] = [(name, "parent", getattr(models, name)) for name in ("base", "reasoner", "vlm")]
    if models.vlm_align is not None:
        to_evaluate.append(("vlm_stage1", "control", models.vlm_align))
    order = {"control": 0, "frank": 1, "baseline": 2}
    for outcome in sorted((m for m in merges if m.path), key=lambda m: order[m.spec.group]):
        to_evaluate.append((outcome.spec.name, outcome.spec.group, outcome.path))  # type: ignore[arg-type]
    for run in fine_tunes:
        to_evaluate.append((run.name, "sft" if run.variant == "none" else "drift", run.path))
    evaluations = evaluate_many([(name, path) for name, _, path in to_evaluate], TASKS, options.n_items, workers)
    rows = [Row(name, group, evaluation) for (name, group, _), evaluation in zip(to_evaluate, evaluations, strict=True)]
    lap("evaluate")

    cells = lambda_grid(models, options.grid, merged_root / "grid", TASKS, options.grid_items, workers=workers)
    lap("lambda_grid")

    chance = chance_levels(options.n_items, options.config.image_scale)
    plots = workdir / "plots"
    plots.mkdir(exist_ok=True)
    grid_chance = chance_levels(options.grid_items, options.config.image_scale)
    files = {
        "profile": str(profile_json),
        "profile_plot": str(profile_json.with_suffix(".png")),
        "analysis": str(workdir / "analysis"),
        "coefficients_plot": str(coefficients_png([m for m in merges if m.spec.group != "grid"], plots / "coefficients.png")),
        "lambda_map_plot": str(lambda_map_png(cells, TASKS, plots / "lambda_map.png", grid_chance)),
    }
    table = results_table(rows, chance)
    summary = [
        f"visual-attention ratio a_l, l = 1..{profile.num_layers}: "
        + " ".join(f"{a:.2f}" for a in profile.ratios)
        + f"  (uniform attention: {uniform:.2f}; fit alpha = {profile.fit.alpha:.3f}, R^2 = {profile.fit.r2 or 0:.2f})",
        "cos(tau_V, tau_R) per block: " + " ".join(f"{b.cos_vr:+.2f}" for b in analysis.blocks),
        "|tau_V| / |theta_0| per block: " + " ".join(f"{b.rel_norm_v:.2f}" for b in analysis.blocks),
        "|tau_R| / |theta_0| per block: " + " ".join(f"{b.rel_norm_r:.2f}" for b in analysis.blocks),
    ]
    summary += [f"pair check: {line}" for line in (analysis.compatibility or {}).get("findings", [])]  # type: ignore[union-attr]
    evaluations = [{"group": r.group, **r.evaluation.to_json()} for r in rows]
    train_items = training_set.n_items if training_set else 0
    verdict = verdict_lines(models_from_json(evaluations), chance, options.config.regime, train_items)
    lap("plots")
    result = DemoResult(workdir, models, rows, merges, chance, table, summary, verdict, fine_tunes, files, timings)
    data = {
        "testbed": models.to_json(),
        "options": {
            "regime": options.config.regime,
            "n_items": options.n_items,
            "grid": list(options.grid),
            "grid_items": options.grid_items,
            "profile_images": options.profile_images,
        },
        "chance": chance,
        "profile": {
            "prompt": PROFILE_PROMPT,
            "query": profile_options.query,
            "a_l": [float(a) for a in profile.ratios],
            "uniform_attention_a": uniform,
            "alpha": profile.fit.alpha,
            "C": profile.fit.C,
            "r2": profile.fit.r2,
            "alpha_ci95": list(profile.bootstrap.ci95),
        },
        "task_vectors": [
            {
                "layer": b.layer,
                "cos": b.cos_vr,
                "rel_norm_v": b.rel_norm_v,
                "rel_norm_r": b.rel_norm_r,
                "norm_v": b.norm_v,
                "norm_r": b.norm_r,
            }
            for b in analysis.blocks
        ],
        "analysis_warnings": [message for _, message in analysis.warnings],
        "merges": [m.to_json() for m in merges],
        "fine_tunes": {
            "settings": None if options.drift is None else asdict(options.drift),
            "training_set": None
            if training_set is None
            else {
                "path": str(training_set.path),
                "n_items": training_set.n_items,
                "dropped_as_evaluated": training_set.n_dropped,
            },
            "runs": [r.to_json() for r in fine_tunes],
        },
        "verdict": verdict,
        "evaluations": evaluations,
        "lambda_grid": [c.to_json() for c in cells],
        "files": files,
        "timings": {**timings, "total": round(sum(timings.values()), 2)},
        "table": table.splitlines() + summary,
    }
    (workdir / "demo_results.json").write_text(json.dumps(_finite(data), indent=2) + "\n")
    result.files["results"] = str(workdir / "demo_results.json")
    return result


def _profile_images(directory: Path, count: int, image_scale: int = 1) -> Path:
    """Testbed scenes as PNG files in the VLM's layout: the calibration set the profile reads, like any image folder."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    rng = np.random.default_rng(PROFILE_SEED)
    for i in range(count):
        image = perception(rng, image_scale=image_scale).image
        assert image is not None
        Image.fromarray(image).save(directory / f"scene_{i:03d}.png")
    return directory


def uniform_attention_ratio(prompt: str, system: tuple[str, ...] = (), image_scale: int = 1) -> float:
    """a_l if every query spread its attention uniformly over its causal keys (profile query
    "after_image": every prompt token after the image): the reference a trained model's a_l is read
    against (``system``: the testbed's default system turn, which lengthens the context)."""
    encoder = Encoder.with_system(system, image_scale)
    ids = encoder.prompt_ids(Example("profile", prompt, (), (), "", np.zeros((1, 1, 3), np.uint8)))
    last_visual = max(i for i, t in enumerate(ids) if t == encoder.image_id)
    ratios = [encoder.visual_tokens / (p + 1) for p in range(last_visual + 1, len(ids))]
    return float(sum(ratios) / len(ratios))


def _finite(value: object) -> object:
    """JSON without NaN: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _finite(value.tolist())
    return value

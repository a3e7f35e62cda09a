"""Build the three testbed checkpoints once and reuse them from a cache keyed by config hashes.

Layout: ``CACHE/base-<key>/base``, ``.../reasoner-<key>``, ``.../vlm_align-<key>``, ``.../vlm-<key>``:
the fine-tunes live next to the base they start from, so testbeds that differ only in a fine-tune
(the two regimes, for one) share the base. ``vlm_align`` is the llava regime's stage-1 VLM, kept so
that what alignment alone achieves can be measured.
Each stage is written to a temporary directory and renamed into place with a
``testbed_stage.json`` stamp, so an interrupted build resumes at the first missing stage and never
reuses a half-written model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from frankmerge.testbed.trained.config import TestbedConfig
from frankmerge.testbed.trained.models import load_model, new_base, save_checkpoint, vlm_from_base
from frankmerge.testbed.trained.tasks import stage_sampler
from frankmerge.testbed.trained.train import StageLog, train_stage

log = logging.getLogger(__name__)

STAMP = "testbed_stage.json"
STAGES: tuple[str, ...] = ("base", "reasoner", "vlm_align", "vlm")


@dataclass(frozen=True)
class TestbedModels:
    """Paths of a built testbed and what building it took (``built`` lists stages trained in this call)."""

    config: TestbedConfig
    base: Path
    reasoner: Path
    vlm: Path
    vlm_align: Path | None = None
    logs: dict[str, dict[str, object]] = field(default_factory=dict)
    built: tuple[str, ...] = ()
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "config": self.config.to_json(),
            "paths": {
                "base": str(self.base),
                "reasoner": str(self.reasoner),
                "vlm_align": None if self.vlm_align is None else str(self.vlm_align),
                "vlm": str(self.vlm),
            },
            "training": self.logs,
            "built_now": list(self.built),
            "build_seconds": round(self.seconds, 1),
        }


def default_cache_dir() -> Path:
    """``$FRANKMERGE_CACHE/testbed``, else ``$XDG_CACHE_HOME/frankmerge/testbed``, else ``~/.cache/...``."""
    if os.environ.get("FRANKMERGE_CACHE"):
        return Path(os.environ["FRANKMERGE_CACHE"]) / "testbed"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "frankmerge" / "testbed"


def stage_paths(config: TestbedConfig, cache_dir: Path) -> dict[str, Path]:
    root = Path(cache_dir) / f"base-{config.stage_key('base')}"
    return {s: root / (s if s == "base" else f"{s}-{config.stage_key(s)}") for s in STAGES}


def build_testbed(
    config: TestbedConfig,
    cache_dir: Path | None = None,
    *,
    rebuild: bool = False,
    progress: bool = False,
    workers: int = 1,
) -> TestbedModels:
    """Train (or reuse) base, reasoner and VLM (and its alignment stage) for ``config`` under ``cache_dir``.

    With ``workers`` > 1 the reasoner trains in a process of its own while the VLM's stages train
    here: both start from the base alone, and each stage seeds itself, so the weights are the
    same as with one worker.
    """
    from transformers.utils import logging as hf_logging

    from frankmerge.testbed.trained.parallel import stop, worker_pool

    hf_logging.disable_progress_bar()
    paths = stage_paths(config, cache_dir or default_cache_dir())
    started, logs, built = time.perf_counter(), {}, []
    pool, reasoner = None, None
    try:
        for stage in config.stages():
            # Rebuilding the base invalidates the fine-tunes, rebuilding the alignment stage the VLM.
            stale = rebuild or "base" in built or (stage == "vlm" and "vlm_align" in built)
            cached = None if stale else _stamp(paths[stage], config, stage)
            if cached is not None:
                logs[stage] = cached
                continue
            if stage == "reasoner" and workers > 1:
                pool = worker_pool(1)
                reasoner = pool.submit(_build_stage, stage, config, paths, False)
            else:
                logs[stage] = _build_stage(stage, config, paths, progress).to_json()
            built.append(stage)
        if reasoner is not None:
            logs["reasoner"] = reasoner.result().to_json()
    except BaseException:
        if pool is not None:
            stop(pool)
        raise
    if pool is not None:
        pool.shutdown()
    logs = {stage: logs[stage] for stage in config.stages()}
    align = paths["vlm_align"] if config.vlm_align else None
    return TestbedModels(
        config, paths["base"], paths["reasoner"], paths["vlm"], align, logs, tuple(built), time.perf_counter() - started
    )


def ensure_base(config: TestbedConfig, cache_dir: Path | None = None) -> Path:
    """The cached base of ``config``, trained first if it is missing (for studies of one later stage)."""
    paths = stage_paths(config, cache_dir or default_cache_dir())
    if _stamp(paths["base"], config, "base") is None:
        _build_stage("base", config, paths, False)
    return paths["base"]


def _stamp(path: Path, config: TestbedConfig, stage: str) -> dict[str, object] | None:
    """The stage's training log when ``path`` holds a complete stage for this config, else None."""
    try:
        stamp = json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp.get("log") if stamp.get("key") == config.stage_key(stage) else None


def _build_stage(stage: str, config: TestbedConfig, paths: dict[str, Path], progress: bool) -> StageLog:
    schedule = getattr(config, stage)
    seed = config.seed * 1000 + STAGES.index(stage) + 1
    sample = stage_sampler(stage, schedule.text_mix, schedule.cot_mix, config.image_scale)
    if stage == "base":
        model = new_base(config.size, seed)
    elif stage == "reasoner":
        model = load_model(paths["base"])
    elif stage == "vlm" and config.vlm_align:
        model = load_model(paths["vlm_align"])
    else:
        model = vlm_from_base(load_model(paths["base"]), config.size, seed, config.image_scale)
    record = train_stage(
        stage, model, schedule, sample, seed, progress=progress, system=config.system_prompt, image_scale=config.image_scale
    )
    target = paths[stage]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tmp, system=config.system_prompt)
    stamp = {"stage": stage, "key": config.stage_key(stage), "config": config.to_json(), "log": record.to_json()}
    (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return record

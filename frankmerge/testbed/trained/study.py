"""The merges the testbed compares: FRANK's variants, every baseline, and the controls.

Each merge goes through ``frankmerge.merge`` exactly as a user's would; this module only decides
which recipes to run and records their per-block coefficients. Controls that are not merges —
the parents themselves and the reasoner's decoder under the VLM's vision tower — sit beside them.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from frankmerge.errors import FrankmergeError
from frankmerge.merge import merge
from frankmerge.recipe import MergeRecipe, Parameters, Prior, prior_from_profile
from frankmerge.testbed.trained.build import TestbedModels
from frankmerge.testbed.trained.evaluate import ModelEvaluation
from frankmerge.testbed.trained.models import assemble_unmerged

log = logging.getLogger(__name__)

# FRANK's prior schedules read from the profile (α̂, and Ĉ for "fitted"); Eq. 16 is "exponential".
PROFILE_PRIORS: tuple[str, ...] = ("exponential", "relative", "minmax", "fitted")
FIXED_ALPHAS: tuple[float, ...] = (0.3, 0.5)


@dataclass(frozen=True)
class MergeSpec:
    name: str
    group: str  # "frank" | "baseline" | "control"
    method: str
    prior: Prior | None = None
    parameters: Parameters = Parameters()
    note: str = ""


@dataclass
class MergeOutcome:
    """A merge that ran (``path`` set) or could not be built (``skipped`` says why)."""

    spec: MergeSpec
    path: Path | None = None
    lambda_v: list[float] = field(default_factory=list)
    lambda_r: list[float] = field(default_factory=list)
    w_v: list[float | None] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None

    def to_json(self) -> dict[str, object]:
        prior = self.spec.prior.model_dump(exclude_none=True) if self.spec.prior else None
        return {
            "name": self.spec.name,
            "group": self.spec.group,
            "method": self.spec.method,
            "prior": prior,
            "parameters": self.spec.parameters.model_dump(exclude_none=True),
            "note": self.spec.note,
            "path": None if self.path is None else str(self.path),
            "lambda_v": self.lambda_v,
            "lambda_r": self.lambda_r,
            "w_v": self.w_v,
            "seconds": round(self.seconds, 2),
            "skipped": self.skipped,
        }


def frank_specs(profile: Path) -> list[MergeSpec]:
    """FRANK with the profile's α̂ under each prior schedule, fixed-α ablations, linear decay, no prior."""
    specs = []
    for kind in PROFILE_PRIORS:
        name = "frank" if kind == "exponential" else f"frank_{kind}"
        try:
            prior = prior_from_profile(profile, kind)  # type: ignore[arg-type]
        except (FrankmergeError, ValidationError, TypeError) as exc:
            specs.append(MergeSpec(name, "frank", "frank", note=f"unavailable: {exc}"))
            continue
        note = "Eq. 16 with the profiled alpha" if kind == "exponential" else f"{kind} prior with the profiled alpha"
        specs.append(MergeSpec(name, "frank", "frank", prior, note=note))
    specs += [
        MergeSpec(f"frank_alpha{a}", "frank", "frank", Prior(kind="exponential", alpha=a), note="Eq. 16, fixed alpha")
        for a in FIXED_ALPHAS
    ]
    specs.append(MergeSpec("frank_linear", "frank", "frank", Prior(kind="linear"), note="linear-decay ablation"))
    specs.append(MergeSpec("frank_no_prior", "frank", "frank", Prior(kind="none"), note="Eq. 13"))
    return specs


def baseline_specs(num_layers: int) -> list[MergeSpec]:
    """Every baseline at its published default, except layer swap's k, scaled to the testbed's depth."""
    k = max(1, num_layers // 2)
    return [
        MergeSpec("linear", "baseline", "linear", note="BR2V, beta 0.9"),
        MergeSpec("task_arithmetic", "baseline", "task_arithmetic", note="lambda_V 0.3, lambda_R 0.7"),
        MergeSpec("ties", "baseline", "ties", note="weights 1.6/0.2, density 0.2"),
        MergeSpec("dare_linear", "baseline", "dare_linear", note="weights 0.9/0.1, p 0.5"),
        MergeSpec("dare_ties", "baseline", "dare_ties", note="weights 1.6/0.2, p 0.5"),
        MergeSpec(
            "layer_swap",
            "baseline",
            "layer_swap",
            parameters=Parameters(k=k),
            note=f"first {k} blocks the VLM's (published k=5 of 32)",
        ),
        MergeSpec("metagpt", "baseline", "metagpt", note="Eq. 13 over the whole decoder"),
    ]


def reverse_depth_spec(frank: MergeOutcome) -> MergeSpec:
    """Control: FRANK's per-block coefficients applied in reverse depth order (task arithmetic per layer)."""
    params = Parameters(lambda_v=frank.lambda_v[::-1], lambda_r=frank.lambda_r[::-1])
    return MergeSpec(
        "reverse_depth", "control", "task_arithmetic", parameters=params, note=f"{frank.spec.name}'s lambdas, last block first"
    )


def task_arithmetic_spec(name: str, lambda_v: float, lambda_r: float, group: str = "grid") -> MergeSpec:
    params = Parameters(lambda_v=lambda_v, lambda_r=lambda_r)
    return MergeSpec(name, group, "task_arithmetic", parameters=params, note=f"lambda_V {lambda_v}, lambda_R {lambda_r}")


class _DropPairCheck(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("pair check:")


@contextmanager
def _pair_check_said_once() -> Iterator[None]:
    """The study merges one triple dozens of times; the demo prints its pair check once, not per merge."""
    merge_log = logging.getLogger("frankmerge.merge")
    quiet = _DropPairCheck()
    merge_log.addFilter(quiet)
    try:
        yield
    finally:
        merge_log.removeFilter(quiet)


def run_merge(models: TestbedModels, spec: MergeSpec, out: Path) -> MergeOutcome:
    """Merge through ``frankmerge.merge``; a recipe the merge refuses is recorded as skipped."""
    if spec.method == "frank" and spec.prior is None:
        return MergeOutcome(spec, skipped=spec.note)
    started = time.perf_counter()
    try:
        recipe = MergeRecipe(
            vlm=str(models.vlm),
            reasoner=str(models.reasoner),
            base=str(models.base),
            method=spec.method,  # type: ignore[arg-type]
            prior=spec.prior,
            parameters=spec.parameters,
        )
        with _pair_check_said_once():
            result = merge(recipe, out, overwrite=True, progress=False)
    except (FrankmergeError, ValidationError) as exc:
        log.warning("merge %s skipped: %s", spec.name, exc)
        return MergeOutcome(spec, skipped=f"{type(exc).__name__}: {exc}")
    coefficients = result.coefficients
    return MergeOutcome(
        spec,
        out,
        [c.lambda_v for c in coefficients],
        [c.lambda_r for c in coefficients],
        [c.w_v for c in coefficients],
        time.perf_counter() - started,
    )


def unmerged_control(models: TestbedModels, out: Path) -> MergeOutcome:
    """The reasoner's language model (embeddings included) in the VLM's shell: no merge at all."""
    spec = MergeSpec("reasoner_in_vlm", "control", "none", note="reasoner decoder + VLM vision tower, unmerged")
    started = time.perf_counter()
    assemble_unmerged(models.vlm, models.reasoner, out)
    return MergeOutcome(spec, out, seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class GridCell:
    lambda_v: float
    lambda_r: float
    evaluation: ModelEvaluation

    def to_json(self) -> dict[str, object]:
        tasks = {
            task: {"accuracy": r.generation.accuracy, "ci95": r.generation.ci95, "teacher_forced": r.teacher_forced}
            for task, r in self.evaluation.tasks.items()
        }
        return {"lambda_v": self.lambda_v, "lambda_r": self.lambda_r, "tasks": tasks}


def lambda_grid(
    models: TestbedModels,
    values: Sequence[float],
    out: Path,
    tasks: Sequence[str],
    n_items: int,
    *,
    keep: bool = False,
    workers: int = 1,
) -> list[GridCell]:
    """Task arithmetic over a λ_V × λ_R grid: every cell merged, then all evaluated (``workers`` at
    a time) and (unless ``keep``) deleted."""
    from frankmerge.testbed.trained.parallel import evaluate_many

    merged = []
    for lambda_v in values:
        for lambda_r in values:
            name = f"ta_v{lambda_v:g}_r{lambda_r:g}"
            outcome = run_merge(models, task_arithmetic_spec(name, lambda_v, lambda_r), out / name)
            if outcome.path is None:
                raise FrankmergeError(f"grid merge {name} failed: {outcome.skipped}")
            merged.append((lambda_v, lambda_r, name, outcome.path))
    evaluations = evaluate_many([(name, path) for _, _, name, path in merged], tasks, n_items, workers)
    if not keep:
        for *_, path in merged:
            shutil.rmtree(path)
    return [GridCell(v, r, evaluation) for (v, r, _, _), evaluation in zip(merged, evaluations, strict=True)]

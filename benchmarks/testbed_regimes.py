"""Regime sweep on the trained testbed: under which training conditions does a merge transfer reasoning?

Varies one setting of the testbed (pretraining length, a fine-tune's learning rate or steps, the
width) and, for every value, builds (or reuses) the three models, measures the task vectors' relative
size and cosine per block, merges with FRANK and the main baselines, and scores visual reasoning,
perception and text reasoning. One JSON per sweep under benchmarks/results/.

    python benchmarks/testbed_regimes.py --vary base.steps=300,1200,2400 --seed 0
    python benchmarks/testbed_regimes.py --vary reasoner.lr=3e-4,1e-3,3e-3 --vary vlm.lr=3e-4,1e-3,3e-3 --paired
    python benchmarks/testbed_regimes.py --preset quick --vary size.hidden=32,64,128

Each value trains what its cache lacks (minutes per stage on two CPU cores); run long sweeps in pieces.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from frankmerge.analysis import analyze_task_vectors
from frankmerge.recipe import Prior
from frankmerge.testbed.trained.build import build_testbed
from frankmerge.testbed.trained.config import PRESETS, TestbedConfig
from frankmerge.testbed.trained.evaluate import evaluate_checkpoint
from frankmerge.testbed.trained.report import chance_levels
from frankmerge.testbed.trained.study import MergeSpec, baseline_specs, run_merge, task_arithmetic_spec

TASKS = ("perception", "text_reasoning", "visual_reasoning")
RESULTS = Path(__file__).parent / "results"


def _typed(current: object, value: str) -> object:
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes")
    if isinstance(current, int):
        return int(float(value))
    return type(current)(value)


def with_setting(config: TestbedConfig, key: str, value: str) -> TestbedConfig:
    """``base.steps=600`` / ``size.hidden=64`` / ``seed=1`` applied to a config (types follow the field)."""
    if "." not in key:
        return replace(config, **{key: _typed(getattr(config, key), value)})
    part, name = key.split(".", 1)
    inner = getattr(config, part)
    return replace(config, **{part: replace(inner, **{name: _typed(getattr(inner, name), value)})})


def merges(num_layers: int) -> list[MergeSpec]:
    keep = {"linear", "ties", "metagpt"}
    return [
        MergeSpec("frank_no_prior", "frank", "frank", Prior(kind="none")),
        MergeSpec("frank_alpha0.3", "frank", "frank", Prior(kind="exponential", alpha=0.3)),
        task_arithmetic_spec("ta_0.3_0.7", 0.3, 0.7, "baseline"),
        task_arithmetic_spec("ta_0.5_0.5", 0.5, 0.5, "baseline"),
        task_arithmetic_spec("ta_1_1", 1.0, 1.0, "baseline"),
        *[s for s in baseline_specs(num_layers) if s.name in keep],
    ]


def run_value(config: TestbedConfig, workdir: Path, n_items: int) -> dict[str, object]:
    started = time.perf_counter()
    models = build_testbed(config, progress=True)
    analysis = analyze_task_vectors(str(models.vlm), str(models.reasoner), str(models.base))
    rows = {name: evaluate_checkpoint(name, getattr(models, name), TASKS, n_items).to_json() for name in ("reasoner", "vlm")}
    for spec in merges(config.size.layers):
        outcome = run_merge(models, spec, workdir / spec.name)
        if outcome.path is None:
            rows[spec.name] = {"skipped": outcome.skipped}
            continue
        rows[spec.name] = {**evaluate_checkpoint(spec.name, outcome.path, TASKS, n_items).to_json(), "lambda_v": outcome.lambda_v}
        shutil.rmtree(outcome.path)
    return {
        "config": config.to_json(),
        "training": models.logs,
        "task_vectors": [
            {"layer": b.layer, "rel_norm_v": b.rel_norm_v, "rel_norm_r": b.rel_norm_r, "cos": b.cos_vr} for b in analysis.blocks
        ],
        "models": {name: _summary(row) for name, row in rows.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }


def _summary(row: dict[str, object]) -> dict[str, object]:
    if "skipped" in row:
        return row
    tasks = row["tasks"]  # type: ignore[index]
    return {
        task: {
            "accuracy": r["accuracy"],
            "ci95": r["ci95"],
            "well_formed_think": r["well_formed_think"],
            "teacher_forced": r["teacher_forced"],
        }
        for task, r in tasks.items()  # type: ignore[union-attr]
    } | ({"lambda_v": row["lambda_v"]} if "lambda_v" in row else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--vary", action="append", required=True, help="KEY=V1,V2,... (e.g. base.steps=300,1200)")
    parser.add_argument("--paired", action="store_true", help="Zip several --vary lists instead of taking their product.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    axes = [(k, v.split(",")) for k, v in (item.split("=", 1) for item in args.vary)]
    if args.paired:
        combos = [list(zip([k for k, _ in axes], values, strict=True)) for values in zip(*[v for _, v in axes], strict=True)]
    else:
        combos = [[]]
        for key, values in axes:
            combos = [c + [(key, v)] for c in combos for v in values]
    base = PRESETS[args.preset].with_seed(args.seed)
    label = "_".join(f"{k}-{'-'.join(v)}" for k, v in axes)
    out = args.out or RESULTS / f"testbed_regimes_{args.preset}_s{args.seed}_{label}.json"
    workdir = out.with_suffix(".merges")
    results = []
    for combo in combos:
        config = base
        for key, value in combo:
            config = with_setting(config, key, value)
        results.append({"setting": dict(combo), **run_value(config, workdir, args.items)})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({"preset": args.preset, "seed": args.seed, "chance": chance_levels(args.items), "runs": results}, indent=2)
            + "\n"
        )
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

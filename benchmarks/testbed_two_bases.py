"""Two bases on the trained testbed: does `--reasoner-base` transfer more than one base?

    python benchmarks/testbed_two_bases.py --seeds 0 1 2 --workdir two-bases

Design and criteria: docs/testbed.md, "Two bases". Per seed: the demo's base and llava-regime VLM
(cached), a *math base* (the base continued on chain-of-thought-heavy text) and a reasoner
fine-tuned from it; then FRANK without prior and task arithmetic (1, 1), each with one base and
with `--reasoner-base`, and the unmerged control, evaluated like the demo. Trained models are
cached under the testbed cache; results go to WORKDIR/two_bases.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from frankmerge.doctor.check import check_models
from frankmerge.merge import merge
from frankmerge.recipe import MergeRecipe, Parameters, Prior
from frankmerge.testbed.trained.build import build_testbed, default_cache_dir
from frankmerge.testbed.trained.config import DEFAULT, QUICK, Stage, TestbedConfig
from frankmerge.testbed.trained.evaluate import evaluate_checkpoint
from frankmerge.testbed.trained.models import assemble_unmerged, load_model, save_checkpoint
from frankmerge.testbed.trained.report import chance_levels
from frankmerge.testbed.trained.tasks import stage_sampler
from frankmerge.testbed.trained.train import train_stage
from frankmerge.testbed.trained.verdict import best_visual, models_from_json, paired, transfers

MATH = Stage(steps=400, lr=1e-3, cot_mix=0.5)  # the design's continued pretraining
VISUAL_TASKS = ("perception", "visual_reasoning", "visual_reasoning_think")
METHODS = {
    "frank_no_prior": {"method": "frank", "prior": Prior(kind="none")},
    "task_arithmetic_1_1": {"method": "task_arithmetic", "parameters": Parameters(lambda_v=1.0, lambda_r=1.0)},
}


@dataclass(frozen=True)
class Lineage:
    math: Path
    reasoner: Path


def train_lineage(config: TestbedConfig, cache: Path) -> Lineage:
    """The math base and its reasoner for ``config``, trained once and cached (keyed by their recipes)."""
    seed = config.seed
    key = hashlib.sha256(
        json.dumps([config.stage_key("base"), asdict(MATH), asdict(config.reasoner)], sort_keys=True).encode()
    ).hexdigest()[:12]
    root = cache / "two-bases" / f"seed{seed}-{key}"
    lineage = Lineage(root / "math", root / "reasoner")
    base = build_testbed(config, cache).base
    for stage, parent, schedule, sampler, offset in (
        ("math", base, MATH, stage_sampler("base", 0.0, MATH.cot_mix), 11),
        ("reasoner", lineage.math, config.reasoner, stage_sampler("reasoner", config.reasoner.text_mix), 12),
    ):
        target = getattr(lineage, stage)
        if (target / "config.json").is_file():
            continue
        model = load_model(parent)
        train_stage(stage, model, schedule, sampler, seed * 1000 + offset)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        save_checkpoint(model, tmp)
        tmp.rename(target)
    return lineage


def run_seed(config: TestbedConfig, workdir: Path, cache: Path, n_items: int) -> dict[str, object]:
    seed = config.seed
    models = build_testbed(config, cache)
    lineage = train_lineage(config, cache)
    out = workdir / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    check = check_models(str(models.vlm), str(lineage.reasoner), str(models.base), candidate_bases=(str(lineage.math),))
    assert check.lineage is not None
    math_check = check_models(str(models.vlm), str(lineage.math), str(models.base))
    assert math_check.lineage is not None
    distances = {
        "math_from_base": math_check.lineage.to_base["reasoner"].mean,
        "reasoner_from_base": check.lineage.to_base["reasoner"].mean,
        "reasoner_from_math": check.lineage.candidates[str(lineage.math)]["reasoner"].mean,
        "vlm_from_base": check.lineage.to_base["vlm"].mean,
    }
    paths: dict[str, tuple[str, Path]] = {"vlm": ("parent", models.vlm)}
    for name, options in METHODS.items():
        for bases, extra in (("one_base", {}), ("two_bases", {"reasoner_base": str(lineage.math)})):
            recipe = MergeRecipe(vlm=str(models.vlm), reasoner=str(lineage.reasoner), base=str(models.base), **options, **extra)
            target = out / f"{name}-{bases}"
            merge(recipe, target, overwrite=True, progress=False)
            paths[f"{name}-{bases}"] = ("merge", target)
    paths["reasoner_in_vlm"] = ("control", assemble_unmerged(models.vlm, lineage.reasoner, out / "reasoner_in_vlm"))
    evaluations = {
        name: evaluate_checkpoint(name, path, VISUAL_TASKS, n_items, teacher_forced=False).to_json()
        for name, (_, path) in paths.items()
    }
    text = {
        name: evaluate_checkpoint(name, path, ("text_reasoning",), n_items, teacher_forced=False).to_json()
        for name, path in (("base", models.base), ("math", lineage.math), ("reasoner", lineage.reasoner))
    }
    chance = chance_levels(n_items)
    entries = [{**evaluations[name], "group": group} for name, (group, _) in paths.items()]
    scored = {model.name: model for model in models_from_json(entries)}
    vlm = scored["vlm"]
    summary = {
        name: {
            "visual_best": best_visual(model),
            "perception": model.scores["perception"].accuracy,
            "transfers": transfers(model, vlm, chance) if name != "vlm" else None,
        }
        for name, model in scored.items()
    }
    return {
        "seed": seed,
        "distances": distances,
        "check_findings": check.findings(),
        "text_reasoning": {k: v["tasks"]["text_reasoning"]["accuracy"] for k, v in text.items()},
        "summary": summary,
        "chance": chance,
        "evaluations": evaluations,
    }


def verdicts(runs: list[dict]) -> list[str]:
    lines = []
    for name in METHODS:
        differences = [
            r["summary"][f"{name}-two_bases"]["visual_best"] - r["summary"][f"{name}-one_base"]["visual_best"] for r in runs
        ]
        result = paired(differences)
        if result.excludes_zero:
            said = "two bases transfer more" if result.mean > 0 else "one base transfers more"
        else:
            said = "no difference measured"
        lines.append(f"{name}: two bases − one base, visual reasoning {result.text()} over {result.n} seeds: {said}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path("testbed-two-bases"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="the CI testbed (a smoke run, not the measurement)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = args.cache_dir or default_cache_dir()
    runs = []
    for seed in args.seeds:
        run = run_seed((QUICK if args.quick else DEFAULT).with_seed(seed), args.workdir, cache, args.items)
        runs.append(run)
        print(f"seed {seed}: distances {json.dumps(run['distances'])}")
        print(f"  text reasoning {json.dumps(run['text_reasoning'])}")
        for name, row in run["summary"].items():
            scores = f"visual {row['visual_best']:.3f}  perception {row['perception']:.3f}"
            print(f"  {name:30} {scores}  transfers {row['transfers']}")
        for finding in run["check_findings"]:
            print(f"  check: {finding}")
    lines = verdicts(runs)
    print(*lines, sep="\n")
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "two_bases.json").write_text(json.dumps({"runs": runs, "verdicts": lines}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

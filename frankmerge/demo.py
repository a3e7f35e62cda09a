"""The built-in demo: build a tiny homologous triple offline, merge it, and load the result.

It exercises the whole foundation — layout detection, the streaming merge with and without
FRANK's prior, the report, and a forward pass of the merged VLM on an image — in seconds, with
nothing downloaded. (The trained tiny testbed that measures whether reasoning transfers is a
later step; these tiny models are random.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from frankmerge.merge import MergeResult, merge
from frankmerge.recipe import MergeRecipe, Prior
from frankmerge.testbed.tiny import build_tiny_triple, image_forward_inputs

DEMO_PRIORS = {"frank_prior_alpha0.3": Prior(kind="exponential", alpha=0.3), "frank_no_prior": Prior(kind="none")}


@dataclass
class DemoRun:
    name: str
    result: MergeResult
    logits_finite: bool


def run_demo(workdir: Path, family: str = "qwen2_vl") -> list[DemoRun]:
    """Build (or reuse) a tiny triple under ``workdir`` and merge it with each demo prior."""
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    models = workdir / "models" / family
    if not (models / "vlm" / "config.json").is_file():
        build_tiny_triple(models, family)
    runs = []
    for name, prior in DEMO_PRIORS.items():
        recipe = MergeRecipe(vlm=str(models / "vlm"), reasoner=str(models / "reasoner"), base=str(models / "base"), prior=prior)
        out = workdir / "merged" / f"{family}-{name}"
        result = merge(recipe, out, overwrite=True, progress=False)
        model = AutoModelForImageTextToText.from_pretrained(out)
        with torch.no_grad():
            logits = model(**image_forward_inputs(out)).logits
        runs.append(DemoRun(name, result, bool(torch.isfinite(logits).all())))
    summary = {run.name: json.loads((run.result.out / "merge_report.json").read_text())["blocks"] for run in runs}
    (workdir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return runs

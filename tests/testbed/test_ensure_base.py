"""ensure_base trains a study's missing base once and reuses it, as build_testbed would."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from frankmerge.testbed.trained.build import build_testbed, ensure_base, stage_paths
from frankmerge.testbed.trained.config import QUICK, Stage

MICRO = replace(
    QUICK,
    name="micro-base",
    base=Stage(steps=4, lr=3e-3, warmup=2, batch=8, cot_mix=0.05),
    reasoner=Stage(steps=2, lr=1e-3, warmup=1, batch=8, text_mix=0.2),
    vlm_align=Stage(steps=2, lr=3e-3, warmup=1, batch=8, freeze_language_model=True),
    vlm=Stage(steps=2, lr=3e-4, warmup=1, batch=8, text_mix=0.2),
)


def test_a_missing_base_is_trained_once_and_then_reused(tmp_path: Path) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = ensure_base(MICRO, tmp_path)
        assert base == stage_paths(MICRO, tmp_path)["base"] and (base / "testbed_stage.json").is_file()
        written = (base / "model.safetensors").stat().st_mtime_ns
        assert ensure_base(MICRO, tmp_path) == base
        assert (base / "model.safetensors").stat().st_mtime_ns == written  # not trained again
        models = build_testbed(MICRO, tmp_path)
        assert "base" not in models.built and models.base == base  # the testbed takes it as its own
    finally:
        torch.set_num_threads(previous)

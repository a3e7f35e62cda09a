"""ensure_base trains a study's missing base once and reuses it, as build_testbed would."""

from __future__ import annotations

from pathlib import Path

from frankmerge.testbed.trained.build import build_testbed, ensure_base, stage_paths
from tests.testbed.micro import MICRO


def test_a_missing_base_is_trained_once_and_then_reused(tmp_path: Path, one_thread) -> None:
    base = ensure_base(MICRO, tmp_path)
    assert base == stage_paths(MICRO, tmp_path)["base"] and (base / "testbed_stage.json").is_file()
    written = (base / "model.safetensors").stat().st_mtime_ns
    assert ensure_base(MICRO, tmp_path) == base
    assert (base / "model.safetensors").stat().st_mtime_ns == written  # not trained again
    models = build_testbed(MICRO, tmp_path)
    assert "base" not in models.built and models.base == base  # the testbed takes it as its own

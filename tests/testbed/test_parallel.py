"""Testbed jobs on several processes give the same models and scores as on one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from frankmerge.testbed.trained.build import build_testbed
from frankmerge.testbed.trained.parallel import evaluate_many, run_all, usable_cores
from tests.testbed.micro import MICRO


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        found.update(load_file(path))
    return found


def test_reasoner_in_its_own_process_trains_the_same_weights(tmp_path: Path, one_thread: None) -> None:
    serial = build_testbed(MICRO, tmp_path / "serial", workers=1)
    parallel = build_testbed(MICRO, tmp_path / "parallel", workers=2)
    assert parallel.built == serial.built == ("base", "reasoner", "vlm_align", "vlm")
    assert list(parallel.logs) == list(serial.logs)
    for stage in ("reasoner", "vlm"):
        mine, theirs = _weights(getattr(serial, stage)), _weights(getattr(parallel, stage))
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), stage
    again = build_testbed(MICRO, tmp_path / "parallel", workers=2)
    assert again.built == ()  # cached: nothing retrained


def test_evaluations_on_two_workers_equal_one(tmp_path: Path, one_thread: None) -> None:
    models = build_testbed(MICRO, tmp_path / "models", workers=1)
    jobs = [("vlm", models.vlm), ("reasoner", models.reasoner), ("vlm_again", models.vlm)]
    tasks = ("perception", "text_reasoning")
    serial = evaluate_many(jobs, tasks, 12, workers=1)
    parallel = evaluate_many(jobs, tasks, 12, workers=2)
    assert [e.name for e in parallel] == ["vlm", "reasoner", "vlm_again"]
    for mine, theirs in zip(serial, parallel, strict=True):
        assert mine.tasks.keys() == theirs.tasks.keys()
        for task in mine.tasks:
            assert mine.tasks[task].generation == theirs.tasks[task].generation
            assert mine.tasks[task].samples == theirs.tasks[task].samples


def _fail(value: int) -> int:
    if value == 2:
        raise ValueError("job 2 failed")
    return value


def test_a_failing_job_raises() -> None:
    with pytest.raises(ValueError, match="job 2 failed"):
        run_all([(_fail, (1,)), (_fail, (2,)), (_fail, (3,))], workers=2)
    assert usable_cores() >= 1

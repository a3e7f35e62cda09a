"""The premise benchmark reads its runs by the criteria fixed in docs/testbed.md ("FRANK's premise")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.benchmark_scripts import import_benchmark


@pytest.fixture(scope="module")
def premise() -> Any:
    return import_benchmark("testbed_premise")


def _profile(alpha: float, low: float, r2: float | None) -> dict[str, object]:
    return {"a_l": [0.5] * 6, "uniform_attention_a": 0.49, "alpha": alpha, "alpha_ci95": [low, alpha + 0.02], "r2": r2}


@pytest.mark.parametrize(
    ("alpha", "low", "r2", "expected"),
    [
        (0.27, 0.25, 0.66, True),  # seed 0 of the prefix variant
        (0.014, 0.009, 0.02, False),  # v2's seed 0: tight interval above 0, but flat (R² 0.02)
        (0.20, -0.01, 0.9, False),  # interval reaches zero
        (-0.08, -0.09, 0.45, False),  # rising
        (0.3, 0.2, None, False),  # no fit quality: not a decay
    ],
)
def test_a_decay_needs_a_positive_interval_and_a_fit_that_explains_the_profile(
    premise: Any, alpha: float, low: float, r2: float | None, expected: bool
) -> None:
    assert premise.decays(_profile(alpha, low, r2)) is expected


def _score(accuracy: float, half: float = 0.05) -> dict[str, object]:
    return {"accuracy": accuracy, "ci95": [max(0.0, accuracy - half), min(1.0, accuracy + half)]}


def _run(path: Path, alpha: float, frank: float, no_prior: float, control: float) -> Path:
    visual = {"vlm": 0.3, "frank": frank, "frank_no_prior": no_prior, "reasoner_in_vlm": control}
    evaluations = [
        {"name": "base", "group": "parent", "tasks": {"text_reasoning": _score(0.5)}},
        {"name": "reasoner", "group": "parent", "tasks": {"text_reasoning": _score(0.9)}},
    ]
    for name, value in visual.items():
        tasks = {"perception": _score(0.95), "visual_reasoning": _score(value), "visual_reasoning_think": _score(value)}
        evaluations.append({"name": name, "group": "x", "tasks": tasks})
    chance = {"perception": 0.37, "text_reasoning": 0.24, "visual_reasoning": 0.23, "visual_reasoning_think": 0.23}
    data = {"profile": _profile(alpha, alpha - 0.02, 0.8), "chance": chance, "evaluations": evaluations}
    path.write_text(json.dumps(data))
    return path


def test_summary_counts_decaying_seeds_and_tests_the_prior_by_paired_seeds(premise: Any, tmp_path: Path) -> None:
    runs = [
        _run(tmp_path / "s0.json", 0.3, frank=0.70, no_prior=0.60, control=0.8),
        _run(tmp_path / "s1.json", 0.25, frank=0.62, no_prior=0.51, control=0.7),
        _run(tmp_path / "s2.json", -0.1, frank=0.01, no_prior=0.02, control=0.1),
    ]
    summary = premise.summarize(runs)
    assert [s["decays"] for s in summary["seeds"]] == [True, True, False]
    assert summary["verdict"][0].startswith("profile decays in 2 of 3 seeds (the variant makes it decay")
    assert "the prior does not beat --no-prior" in summary["verdict"][1]  # +0.10, +0.11, -0.01: interval spans 0
    assert summary["verdict"][2].endswith("2 of 3 seeds")  # the third control is at chance
    steady = [
        _run(tmp_path / f"t{i}.json", 0.3, frank=0.70 + d, no_prior=0.60 + d, control=0.8) for i, d in enumerate((0, 0.01, 0.02))
    ]
    assert "the prior beats --no-prior" in premise.summarize(steady)["verdict"][1]


def test_the_v3_prefix_variant_adds_only_the_alignment_term(premise: Any) -> None:
    prefix, termed = premise.VARIANTS["prefix"], premise.VARIANTS["prefix-v3"]
    assert termed.vlm_align.align_embeddings == 1.0 and prefix.vlm_align.align_embeddings == 0.0
    assert termed.system_prompt == prefix.system_prompt
    assert [termed.stage_key(s) == prefix.stage_key(s) for s in prefix.stages()] == [True, True, False, False]


def test_the_patches_variant_changes_only_the_image_layout_of_v3(premise: Any) -> None:
    from frankmerge.testbed.trained.config import DEFAULT_V3

    patches = premise.VARIANTS["patches-v3"]
    assert patches.image_scale == 2 and patches.system_prompt == () and patches.vlm_align.align_embeddings == 1.0
    assert [patches.stage_key(s) == DEFAULT_V3.stage_key(s) for s in DEFAULT_V3.stages()] == [True, True, False, False]

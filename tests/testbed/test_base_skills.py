"""The base-skills diagnosis (benchmarks/testbed_base_skills.py) scores answers as it says it does."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.benchmark_scripts import import_benchmark


@pytest.fixture(scope="module")
def skills() -> Any:
    return import_benchmark("testbed_base_skills")


def test_an_answer_counts_only_when_every_supervised_token_is_predicted(skills: Any) -> None:
    labels = torch.tensor([[-100, -100, 3, 4], [-100, -100, 3, 4], [-100, 1, -100, -100]])
    predicted = torch.tensor([[0, 3, 4, 9], [0, 3, 0, 9], [1, 2, 2, 2]])  # position t predicts label t + 1
    logits = torch.nn.functional.one_hot(predicted, 10).float()
    assert skills._answers_correct(logits, labels) == [True, False, True]


def test_every_base_is_scored_on_the_same_fresh_examples(skills: Any) -> None:
    first, again = skills.examples("count_text", 8), skills.examples("count_text", 8)
    assert [e.prompt for e in first] == [e.prompt for e in again]
    assert {e.task for e in skills.examples("cot", 4)} == {"text_reasoning"}
    assert [e.prompt for e in skills.examples("copy", 8)] != [e.prompt for e in skills.examples("copy", 8, seed=1)]


def test_the_long_case_changes_only_the_base_length(skills: Any) -> None:
    from testbed_align_probe import CASES

    v2, long = CASES["v2"], CASES["long"]
    assert long.base.steps == 3 * v2.base.steps and long.base.lr == v2.base.lr and long.base.cot_mix == v2.base.cot_mix
    assert long.stage_key("base") != v2.stage_key("base") and long.vlm_align == v2.vlm_align

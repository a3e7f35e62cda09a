"""The trained testbed, reduced (``--quick``): parents learn their tasks, merges keep their identities,
every merged model loads and runs, and the free-generation scorer scores hand-written replies correctly.

One session-scoped quick demo trains the three models (about two minutes on two busy cores) and runs
the whole pipeline on them with fewer evaluation items; the other tests reuse its models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from frankmerge import MergeRecipe, Parameters, merge
from frankmerge.demo import DemoOptions, DemoResult, run_demo
from frankmerge.testbed.trained.build import build_testbed
from frankmerge.testbed.trained.config import QUICK
from frankmerge.testbed.trained.encode import Encoder
from frankmerge.testbed.trained.scoring import score_generations, well_formed_think, wilson_interval
from frankmerge.testbed.trained.tasks import eval_set, perception_dialogue
from frankmerge.testbed.trained.vocab import VISUAL_TOKENS
from frankmerge.testbed.trained.vocab import testbed_processor as make_processor

# Thresholds for the quick testbed (3 blocks, width 64, a few hundred steps), measured with margin
# below what it reaches (see docs/testbed.md); chance is the most frequent answer's share.
REASONER_TEXT_MIN = 0.25  # chance 0.15
VLM_PERCEPTION_MIN = 0.35  # chance 0.30 on 60 items (0.25 in expectation)
N_ITEMS = 60


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("testbed")
    options = DemoOptions.quick(cache_dir=root / "cache", n_items=N_ITEMS, grid=(0.0, 1.0), grid_items=20, progress=False)
    return run_demo(root / "demo", options)


def _accuracy(result: DemoResult, name: str, task: str) -> float:
    row = next(r for r in result.rows if r.name == name)
    return row.evaluation.tasks[task].generation.accuracy


def test_parents_learn_their_tasks(quick_demo: DemoResult) -> None:
    assert _accuracy(quick_demo, "reasoner", "text_reasoning") >= REASONER_TEXT_MIN
    assert _accuracy(quick_demo, "vlm", "perception") >= VLM_PERCEPTION_MIN
    reasoner = next(r for r in quick_demo.rows if r.name == "reasoner").evaluation.tasks["text_reasoning"]
    assert reasoner.generation.well_formed_think >= 0.9  # the chain-of-thought format is learned first
    assert "visual_reasoning" not in next(r for r in quick_demo.rows if r.name == "base").evaluation.tasks


def test_every_merge_loads_runs_and_is_reported(quick_demo: DemoResult) -> None:
    ran = [m for m in quick_demo.merges if m.path is not None]
    assert {
        "frank",
        "frank_no_prior",
        "frank_linear",
        "linear",
        "task_arithmetic",
        "ties",
        "dare_linear",
        "dare_ties",
        "layer_swap",
        "metagpt",
        "reverse_depth",
        "reasoner_in_vlm",
    } <= {m.spec.name for m in ran}
    evaluated = {r.name for r in quick_demo.rows}
    for outcome in ran:
        assert outcome.spec.name in evaluated  # evaluation loaded it with AutoModelForImageTextToText and generated
        assert (outcome.path / "config.json").is_file()
    data = json.loads((quick_demo.workdir / "demo_results.json").read_text())
    assert {"profile", "task_vectors", "merges", "evaluations", "lambda_grid", "timings", "chance"} <= data.keys()
    assert len(data["lambda_grid"]) == 4
    assert len(data["profile"]["a_l"]) == QUICK.size.layers
    for key in ("coefficients_plot", "lambda_map_plot", "profile_plot"):
        assert Path(quick_demo.files[key]).is_file()


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, whatever its sharding."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def _merge_ta(result: DemoResult, out: Path, lambda_v: float, lambda_r: float) -> dict[str, torch.Tensor]:
    m = result.models
    recipe = MergeRecipe(
        vlm=str(m.vlm),
        reasoner=str(m.reasoner),
        base=str(m.base),
        method="task_arithmetic",
        parameters=Parameters(lambda_v=lambda_v, lambda_r=lambda_r),
    )
    merge(recipe, out, overwrite=True, progress=False)
    return _tensors(out)


def test_lambda_one_zero_reproduces_the_vlm(quick_demo: DemoResult, tmp_path: Path) -> None:
    merged = _merge_ta(quick_demo, tmp_path / "ta10", 1.0, 0.0)
    vlm = _tensors(quick_demo.models.vlm)
    assert merged.keys() == vlm.keys()
    for name, tensor in vlm.items():
        assert torch.equal(merged[name], tensor), name


def test_half_half_task_arithmetic_is_the_average(quick_demo: DemoResult, tmp_path: Path) -> None:
    merged = _merge_ta(quick_demo, tmp_path / "ta55", 0.5, 0.5)
    vlm = _tensors(quick_demo.models.vlm)
    reasoner = _tensors(quick_demo.models.reasoner)
    checked = 0
    for name, tensor in merged.items():
        if "language_model" not in name or ".layers." not in name:
            assert torch.equal(tensor, vlm[name]), name  # vision tower, projector, embeddings: the VLM's
            continue
        suffix = "model.layers." + name.split(".layers.", 1)[1]
        torch.testing.assert_close(tensor, (vlm[name] + reasoner[suffix]) / 2, rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked == QUICK.size.layers * 12  # q/k/v (+bias), o, gate/up/down, two norms per block


def test_cached_models_are_reused(quick_demo: DemoResult) -> None:
    again = build_testbed(QUICK, quick_demo.models.base.parent.parent)
    assert again.built == ()
    assert again.base == quick_demo.models.base


def test_training_inputs_equal_the_processors() -> None:
    """What the models are trained on is exactly what ordinary HF inference feeds them."""
    rng = np.random.default_rng(0)
    example = perception_dialogue(rng)
    processor = make_processor()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example.prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": " ".join(example.target)}]},
    ]
    for question, answer in example.follow_ups:
        messages += [
            {"role": "user", "content": [{"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": " ".join(answer)}]},
        ]
    text = processor.apply_chat_template(messages, tokenize=False)
    expected = processor(text=[text], images=[example.image], return_tensors="pt")
    batch = Encoder().batch([example])
    assert batch.input_ids[0].tolist() == expected["input_ids"][0].tolist()
    assert torch.equal(batch.pixel_values, expected["pixel_values"])
    assert int((batch.input_ids == processor.tokenizer.convert_tokens_to_ids("<image>")).sum()) == VISUAL_TOKENS


def test_eval_sets_are_fixed() -> None:
    first = [e.prompt + e.answer for e in eval_set("visual_reasoning", 5)]
    assert first == [e.prompt + e.answer for e in eval_set("visual_reasoning", 5)]


def test_scoring_hand_written_outputs() -> None:
    cot = "<think> how many red ? 1 how many green ? 0 how many blue ? 2 how many yellow ? 0 red * blue = 1 * 2 = 2 </think>"
    texts = [
        f"{cot} 2",  # right, well-formed
        f"{cot} 3",  # wrong answer after a well-formed block
        "<think> how many red ? 1 how many green",  # truncated inside the block: wrong, unclosed
        "2",  # direct answer, no block: right
        "</think> 2",  # closed a block the prompt opened: right, not well-formed
        "<think> </think>",  # closed but empty answer: wrong
    ]
    golds = ["2", "2", "2", "2", "2", "2"]
    score = score_generations(texts, golds, [37, 37, 10, 2, 3, 3])
    assert score.correct == 3
    assert score.accuracy == pytest.approx(0.5)
    assert score.well_formed_think == pytest.approx(2 / 6)
    assert score.think_unclosed == pytest.approx(1 / 6)
    assert score.think_absent == pytest.approx(1 / 6)
    assert score.think_closed == pytest.approx(4 / 6)
    assert score.mean_tokens == pytest.approx(92 / 6)
    low, high = score.ci95
    assert low < 0.5 < high
    assert not well_formed_think("<think> a <think> b </think> 2")


def test_wilson_interval() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 100)
    assert low == 0.0 and 0.03 < high < 0.04  # the rule of three, roughly
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)

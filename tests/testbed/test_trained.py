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
from frankmerge.testbed.trained.config import QUICK_V3
from frankmerge.testbed.trained.drift_study import problem_key
from frankmerge.testbed.trained.encode import Encoder
from frankmerge.testbed.trained.scoring import score_generations, well_formed_think, wilson_interval
from frankmerge.testbed.trained.tasks import eval_set, perception_dialogue
from frankmerge.testbed.trained.vocab import testbed_processor as make_processor
from frankmerge.testbed.trained.vocab import visual_tokens

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
    keys = {"profile", "task_vectors", "merges", "evaluations", "lambda_grid", "timings", "chance", "fine_tunes", "verdict"}
    assert keys <= data.keys()
    assert len(data["lambda_grid"]) == 4
    assert len(data["profile"]["a_l"]) == QUICK_V3.size.layers
    for key in ("coefficients_plot", "lambda_map_plot", "profile_plot"):
        assert Path(quick_demo.files[key]).is_file()


def test_alignment_stage_freezes_the_whole_language_model(quick_demo: DemoResult) -> None:
    """LLaVA's stage 1: only the vision tower and projector move; embeddings, blocks, norm and head
    come out bit-identical to the base's. Stage 2 then moves the language model (a small τ_V)."""
    models = quick_demo.models
    assert models.vlm_align is not None
    assert models.logs["vlm_align"]["frozen_unchanged"] is True
    base = _tensors(models.base)
    aligned = _tensors(models.vlm_align)
    tuned = _tensors(models.vlm)
    language = {n: n.replace("language_model.", "", 1) for n in aligned if n.startswith("language_model.")}  # on-disk names
    assert len(language) == len(base)  # every base tensor (tied head included) has its copy in the VLM
    for vlm_name, base_name in language.items():
        assert torch.equal(aligned[vlm_name], base[base_name]), vlm_name
    assert any(not torch.equal(tuned[n], aligned[n]) for n in language)  # stage 2 trains the language model
    vision = [n for n in aligned if "vision_tower" in n or "multi_modal_projector" in n]
    assert models.logs["vlm_align"]["trainable_parameters"] == sum(aligned[n].numel() for n in vision)


def test_sft_and_drift_fine_tunes_run_and_are_evaluated(quick_demo: DemoResult) -> None:
    """The quick demo fine-tunes the VLM on the multimodal chain-of-thought set with plain SFT, with
    DRIFT, and after a merge, through drift_train; each run is a loadable VLM that was evaluated."""
    runs = {r.name: r for r in quick_demo.fine_tunes}
    assert set(runs) == {"sft", "drift_adaptive", "frank_no_prior_then_sft"}
    groups = {r.name: r.group for r in quick_demo.rows}
    assert groups["sft"] == "sft" and groups["drift_adaptive"] == "drift"
    vlm = _tensors(quick_demo.models.vlm)
    sft, drift = _tensors(runs["sft"].path), _tensors(runs["drift_adaptive"].path)
    block = "language_model.model.layers.0.mlp.down_proj.weight"  # LLaVA's on-disk names, as the VLM's
    assert sft.keys() == vlm.keys() == drift.keys()
    assert not torch.equal(sft[block], vlm[block])  # SFT trained the decoder
    assert not torch.equal(drift[block], sft[block])  # the guidance changed the updates
    tower = next(n for n in vlm if "vision_tower" in n and n.endswith("weight"))
    assert torch.equal(sft[tower], vlm[tower])  # the paper's setting: vision tower frozen
    # DRIFT moves the decoder toward the reasoner (Δ = θ_R − θ_V) far more than SFT does.
    toward = {name: runs[name].report["movement_along_prior"]["all"]["cos_moved_delta"] for name in ("sft", "drift_adaptive")}
    assert toward["drift_adaptive"] > toward["sft"] + 0.2
    for run in runs.values():
        assert (run.path / "drift_report.json").is_file()
        assert run.final_loss is not None and run.final_loss == run.final_loss  # finite, not NaN
    data = json.loads((quick_demo.workdir / "demo_results.json").read_text())
    jsonl = Path(data["fine_tunes"]["training_set"]["path"])
    evaluated = {problem_key(e) for e in eval_set("visual_reasoning", N_ITEMS)}
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == data["fine_tunes"]["training_set"]["n_items"]
    for record in records:
        question = record["messages"][0]["content"].removeprefix("<image>")
        assert (question, tuple(record["messages"][1]["content"].split())) not in evaluated


def test_think_opened_evaluation_and_verdict(quick_demo: DemoResult) -> None:
    vlm = next(r for r in quick_demo.rows if r.name == "vlm").evaluation
    opened = vlm.tasks["visual_reasoning_think"]
    assert all(sample.startswith("<think>") for sample in opened.samples)
    assert opened.teacher_forced == {}  # it would repeat the plain task's
    assert vlm.tasks["visual_reasoning"].teacher_forced
    assert len(quick_demo.verdict) == 3
    assert quick_demo.verdict[0].startswith("1. [llava] The reasoner's decoder under the VLM's vision tower")


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
    assert checked == QUICK_V3.size.layers * 12  # q/k/v (+bias), o, gate/up/down, two norms per block


def test_cached_models_are_reused(quick_demo: DemoResult) -> None:
    assert quick_demo.models.config == QUICK_V3  # the demo's quick testbed is v3's
    again = build_testbed(QUICK_V3, quick_demo.models.base.parent.parent)
    assert again.built == ()
    assert again.base == quick_demo.models.base


@pytest.mark.parametrize(("system", "image_scale"), [((), 1), (("the", "assistant", "describe", "a", "image"), 1), ((), 2)])
def test_training_inputs_equal_the_processors(system: tuple[str, ...], image_scale: int) -> None:
    """What the models are trained on is exactly what ordinary HF inference feeds them, with a
    default system turn too (rendered once per conversation, not once per turn), and at 64 px
    (docs/testbed.md, "FRANK's premise, variant 2")."""
    rng = np.random.default_rng(0)
    example = perception_dialogue(rng, image_scale)
    processor = make_processor(system, image_scale)
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
    batch = Encoder(processor.tokenizer.chat_template if system else None, image_scale).batch([example])
    assert batch.input_ids[0].tolist() == expected["input_ids"][0].tolist()
    system_id = processor.tokenizer.convert_tokens_to_ids("system")
    assert int((batch.input_ids == system_id).sum()) == (1 if system else 0)
    assert torch.equal(batch.pixel_values, expected["pixel_values"])
    tokens = visual_tokens(image_scale)
    assert int((batch.input_ids == processor.tokenizer.convert_tokens_to_ids("<image>")).sum()) == tokens == 16 * image_scale**2
    assert batch.cell_ids is not None and tuple(batch.cell_ids.shape) == (1, tokens)


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

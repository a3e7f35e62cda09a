"""Testbed v2 without training: scene layout, regimes, the latent chain of thought, the DRIFT set and the verdict."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from frankmerge.drift.data import load_chat_jsonl
from frankmerge.testbed.trained.config import (
    DEFAULT,
    DEFAULT_QWEN,
    DEFAULT_V3,
    QUICK,
    QUICK_QWEN,
    QUICK_V3,
    preset,
    with_alignment_term,
)
from frankmerge.testbed.trained.drift_study import problem_key, write_training_set
from frankmerge.testbed.trained.images import GRID, random_scene
from frankmerge.testbed.trained.tasks import (
    PROBLEMS,
    caption,
    chain_of_thought,
    describe_text,
    eval_set,
    reasoning,
    stage_sampler,
)
from frankmerge.testbed.trained.verdict import Model, Score, necessary_condition, transfers, verdict_lines
from frankmerge.testbed.trained.vocab import COLOURS, EMPTY_CELL
from frankmerge.testbed.trained.vocab import testbed_tokenizer as make_tokenizer


def test_text_scene_has_the_images_layout() -> None:
    """16 words, one per grid cell in reading order, right before the question, as the image's patches."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        example = reasoning(rng, visual=False)
        words = example.prompt.split()
        scene, question = words[: GRID * GRID], words[GRID * GRID :]
        assert all(w in (*COLOURS, EMPTY_CELL) for w in scene)
        assert question[-1] == "?" and question[0] not in (EMPTY_CELL, ".")
        listing = example.target[1:9]  # "<think> red 2 green 0 ..."
        for colour, count in zip(listing[::2], listing[1::2], strict=True):
            assert scene.count(colour) == int(count)
    tokenizer = make_tokenizer()
    assert tokenizer.convert_tokens_to_ids(EMPTY_CELL) != tokenizer.unk_token_id


def test_captions_say_what_the_chain_of_thought_lists() -> None:
    """A caption (image) and the base's describe skill (text scene) answer with the chain's opening."""
    rng = np.random.default_rng(5)
    cap = caption(rng)
    assert cap.image is not None and cap.prompt == "describe the image"
    assert cap.target[-1] == "." and cap.target[:-1:2] == COLOURS
    text = describe_text(rng)
    assert text.image is None and text.prompt.endswith("describe the image")
    scene = random_scene(np.random.default_rng(1))
    chain, _, _ = chain_of_thought(scene, PROBLEMS[0], ["red", "blue"])
    assert tuple(chain[1:9]) == tuple(w for c in COLOURS for w in (c, str(scene.count(c))))


def test_base_pretraining_holds_a_little_chain_of_thought() -> None:
    sample = stage_sampler("base", 0.0, cot_mix=0.05)
    rng = np.random.default_rng(0)
    tasks = Counter(sample(rng).task for _ in range(4000))
    assert 0.035 < tasks["text_reasoning"] / 4000 < 0.065
    plain = stage_sampler("base", 0.0)
    assert "text_reasoning" not in Counter(plain(rng).task for _ in range(500))
    with pytest.raises(ValueError, match="unknown testbed stage"):
        stage_sampler("vlm_stage3", 0.0)


@pytest.mark.parametrize(("llava", "qwen"), [(DEFAULT, DEFAULT_QWEN), (QUICK, QUICK_QWEN)])
def test_regimes_share_base_and_reasoner_and_differ_in_the_vlm(llava, qwen) -> None:  # type: ignore[no-untyped-def]
    assert llava.regime == "llava" and qwen.regime == "qwen"
    assert llava.vlm_align is not None and llava.vlm_align.freeze_language_model
    assert qwen.vlm_align is None and qwen.stages() == ("base", "reasoner", "vlm")
    for stage in ("base", "reasoner"):
        assert llava.stage_key(stage) == qwen.stage_key(stage)  # trained once for both regimes
    assert llava.stage_key("vlm") != qwen.stage_key("vlm")
    assert llava.vlm.lr < qwen.vlm.lr  # the llava regime's language model moves little
    assert llava.base.cot_mix > 0
    assert llava.with_seed(1).stage_key("vlm_align") != llava.stage_key("vlm_align")


def test_preset_names_the_regimes() -> None:
    assert preset("llava", quick=True) is QUICK_V3 and preset("qwen", quick=False) is DEFAULT_QWEN  # v3 by default
    with pytest.raises(ValueError, match="llava, qwen"):
        preset("idefics", quick=True)
    with pytest.raises(ValueError, match="v2, v3"):
        preset("llava", quick=True, testbed="v4")


@pytest.mark.parametrize(("v2", "v3"), [(DEFAULT, DEFAULT_V3), (QUICK, QUICK_V3)])
def test_v3_is_v2_with_the_embedding_term_in_stage_1_only(v2, v3) -> None:  # type: ignore[no-untyped-def]
    assert v2.vlm_align.align_embeddings == 0.0 and v3.vlm_align.align_embeddings == 1.0
    assert replace(v3.vlm_align, align_embeddings=0.0) == v2.vlm_align and v3.vlm == v2.vlm
    for stage in ("base", "reasoner"):
        assert v3.stage_key(stage) == v2.stage_key(stage)  # v2's cached base and reasoner are reused
    for stage in ("vlm_align", "vlm"):
        assert v3.stage_key(stage) != v2.stage_key(stage)
    quick = v2 is QUICK
    assert preset("llava", quick=quick, testbed="v3") is v3 and preset("llava", quick=quick, testbed="v2") is v2
    assert preset("qwen", quick=quick, testbed="v3") is preset("qwen", quick=quick)  # no alignment stage to change
    with pytest.raises(ValueError, match="no alignment stage"):
        with_alignment_term(DEFAULT_QWEN)


def test_demo_cli_passes_the_testbed_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    import frankmerge.demo
    from frankmerge.cli import main

    seen = []

    def capture(workdir: Path, options: object) -> None:
        seen.append(options.config)  # type: ignore[attr-defined]
        raise RuntimeError("stop here")

    monkeypatch.setattr(frankmerge.demo, "run_demo", capture)
    cases = (([], DEFAULT_V3), (["--quick"], QUICK_V3), (["--testbed", "v2"], DEFAULT), (["--testbed", "v2", "--quick"], QUICK))
    for args, expected in cases:
        result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path), "--seed", "2", *args])
        assert result.exit_code == 1 and "stop here" in result.output, result.output  # the CLI's one-line error
        assert seen[-1] == expected.with_seed(2)
    rejected = CliRunner().invoke(main, ["demo", "--testbed", "v9"])
    assert rejected.exit_code == 2 and "v9" in rejected.output


def test_drift_training_set_is_disjoint_from_the_evaluation_and_loads(tmp_path: Path) -> None:
    written = write_training_set(tmp_path, 120, eval_items=200)
    assert written.n_items == 120 and written.n_dropped >= 0
    samples = load_chat_jsonl(written.path)  # what drift-train reads, every image checked
    assert len(samples) == 120 and all(len(s.images) == 1 and s.images[0].is_file() for s in samples)
    evaluated = {problem_key(e) for e in eval_set("visual_reasoning", 200)}
    lines = written.path.read_text().splitlines()
    again = write_training_set(tmp_path / "again", 120, eval_items=200)
    assert again.path.read_text().splitlines() == lines  # a fixed seed: the same set every time
    import json

    for line in lines:
        record = json.loads(line)
        question = record["messages"][0]["content"].removeprefix("<image>")
        assert (question, tuple(record["messages"][1]["content"].split())) not in evaluated
    # The drop is real: over many items some coincide with evaluated problems and are skipped.
    assert write_training_set(tmp_path / "big", 600, eval_items=200).n_dropped > 0


def _model(name: str, group: str, perception: float, visual: float, think: float, n: int = 200) -> Model:
    from frankmerge.testbed.trained.scoring import wilson_interval

    def score(p: float) -> Score:
        return Score(p, *wilson_interval(round(p * n), n))

    return Model(
        name, group, {"perception": score(perception), "visual_reasoning": score(visual), "visual_reasoning_think": score(think)}
    )


CHANCE = {"perception": 0.37, "visual_reasoning": 0.23, "visual_reasoning_think": 0.23}


def test_transfer_needs_interval_above_chance_kept_perception_and_beating_the_vlm() -> None:
    vlm = _model("vlm", "parent", 0.80, 0.10, 0.30)
    assert transfers(_model("m", "frank", 0.75, 0.45, 0.20), vlm, CHANCE)
    assert not transfers(_model("m", "frank", 0.65, 0.45, 0.20), vlm, CHANCE)  # perception lost
    assert not transfers(_model("m", "frank", 0.80, 0.27, 0.10), vlm, CHANCE)  # interval reaches chance
    # Above chance, but not above the VLM with <think> forced: the merge added nothing.
    assert not transfers(_model("m", "frank", 0.80, 0.10, 0.29), _model("vlm", "parent", 0.8, 0.1, 0.40), CHANCE)
    assert necessary_condition(_model("r", "control", 0.5, 0.05, 0.40), CHANCE)
    assert not necessary_condition(_model("r", "control", 0.5, 0.05, 0.25), CHANCE)


def test_verdict_lines_read_without_the_table() -> None:
    models = [
        _model("vlm", "parent", 0.80, 0.10, 0.30),
        _model("reasoner_in_vlm", "control", 0.60, 0.45, 0.45),
        _model("frank", "frank", 0.78, 0.50, 0.40),
        _model("ties", "baseline", 0.40, 0.60, 0.40),  # reasons, but has lost perception
        _model("sft", "sft", 0.80, 0.40, 0.40),
        _model("drift_adaptive", "drift", 0.80, 0.55, 0.50),
    ]
    lines = verdict_lines(models, CHANCE, "llava", train_items=300)
    assert len(lines) == 3
    assert "can reason about images" in lines[0]
    assert lines[1].startswith("2. Merging transfers reasoning: 1 of 2 merges") and "best frank 0.50" in lines[1]
    assert "Best DRIFT minus SFT: +0.15" in lines[2] and "minus the best merge: -0.05" in lines[2]
    failing = [_model("vlm", "parent", 0.8, 0.3, 0.3), _model("reasoner_in_vlm", "control", 0.5, 0.2, 0.2)]
    failing.append(_model("frank", "frank", 0.8, 0.2, 0.1))
    lines = verdict_lines(failing, CHANCE, "qwen")
    assert "cannot reason about images" in lines[0] and lines[1].startswith("2. No merge transfers")


def test_paired_interval_against_a_hand_computation() -> None:
    from frankmerge.testbed.trained.verdict import paired

    result = paired([0.10, 0.20, 0.30])  # mean 0.2, sd 0.1, t(2) = 4.303: the interval reaches below zero
    assert result.mean == pytest.approx(0.2)
    assert result.low == pytest.approx(0.2 - 4.303 * 0.1 / 3**0.5)
    assert not result.excludes_zero
    assert paired([0.18, 0.20, 0.22]).excludes_zero
    assert not paired([0.10, -0.05, 0.02]).excludes_zero
    assert paired([0.1]).low is None and not paired([0.1]).excludes_zero


def test_across_seeds_applies_the_two_of_three_rule() -> None:
    from frankmerge.testbed.trained.verdict import across_seeds

    def seed(frank_visual: float, drift_visual: float) -> list[Model]:
        return [
            _model("vlm", "parent", 0.80, 0.10, 0.20),
            _model("reasoner_in_vlm", "control", 0.60, 0.45, 0.45),
            _model("frank", "frank", 0.78, frank_visual, 0.10),
            _model("ties", "baseline", 0.78, 0.15, 0.15),
            _model("sft", "sft", 0.80, 0.30, 0.30),
            _model("drift_adaptive", "drift", 0.80, drift_visual, drift_visual),
        ]

    lines = across_seeds([seed(0.50, 0.40), seed(0.45, 0.42), seed(0.15, 0.45)], CHANCE, "llava")
    assert lines[0].endswith("3 of 3 seeds")
    assert "merging transfers: frank (2/3); winner frank" in lines[1]
    assert "drift_adaptive − sft: +0.12" in lines[2] and "(beats SFT)" in lines[2]
    lines = across_seeds([seed(0.50, 0.30), seed(0.15, 0.30), seed(0.15, 0.30)], CHANCE, "qwen")
    assert "merging does not transfer" in lines[1]
    assert "does not beat SFT" in lines[2]

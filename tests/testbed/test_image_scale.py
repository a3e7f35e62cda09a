"""The testbed's image layout (docs/testbed.md, "FRANK's premise, variant 2"): at ``image_scale`` 2 the
same scenes are drawn on 64×64 px, 64 patches, each shape in one patch of its 2×2-patch cell; scale 1
draws exactly what the testbed always drew, and keeps every cache key."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from frankmerge.demo import uniform_attention_ratio
from frankmerge.testbed.trained.config import DEFAULT, DEFAULT_V3, QUICK_V3, Stage
from frankmerge.testbed.trained.evaluate import evaluate_checkpoint
from frankmerge.testbed.trained.images import GRID, draw, random_scene
from frankmerge.testbed.trained.models import image_scale_of, load_model, new_base, save_checkpoint, vlm_from_base
from frankmerge.testbed.trained.report import chance_levels
from frankmerge.testbed.trained.tasks import eval_set, stage_sampler
from frankmerge.testbed.trained.train import train_stage
from frankmerge.testbed.trained.vocab import PATCH

# Digest of scale-1 evaluation and stage-1 images, cell words and prompts, taken from the code before
# image_scale existed: the default layout must keep drawing the same data.
SCALE_1_DIGEST = "bd065b109a9ce6eeab23452bbd3e9ab4a312cf95ace9153e2c05d25ff82e8195"


def _scale_1_digest() -> str:
    digest = hashlib.sha256()
    for task in ("perception", "visual_reasoning"):
        for example in eval_set(task, 8):
            assert example.image is not None
            digest.update(example.image.tobytes())
            digest.update(" ".join(example.cell_words).encode())
            digest.update(example.prompt.encode())
    rng = np.random.default_rng(11)
    sample = stage_sampler("vlm_align", 0.2)
    for _ in range(16):
        example = sample(rng)
        if example.image is not None:
            digest.update(example.image.tobytes())
            digest.update(" ".join(example.cell_words).encode())
        digest.update(example.prompt.encode())
    return digest.hexdigest()


def test_scale_1_draws_what_the_testbed_always_drew() -> None:
    assert _scale_1_digest() == SCALE_1_DIGEST


def test_only_the_vlm_stages_change_key_and_bad_scales_are_refused() -> None:
    assert replace(DEFAULT, image_scale=1).key() == DEFAULT.key()
    scaled = replace(DEFAULT_V3, image_scale=2)
    for stage in ("base", "reasoner"):
        assert scaled.stage_key(stage) == DEFAULT_V3.stage_key(stage)  # the cached base and reasoner are reused
    for stage in ("vlm_align", "vlm"):
        assert scaled.stage_key(stage) != DEFAULT_V3.stage_key(stage)
    with pytest.raises(ValueError, match="image_scale"):
        replace(DEFAULT, image_scale=0)


def test_scale_2_puts_each_shape_in_one_patch_of_its_cell() -> None:
    rng = np.random.default_rng(5)
    side_patches = 2 * GRID
    for _ in range(50):
        scene = random_scene(rng)
        picture = draw(scene, rng, image_scale=2)
        assert picture.image.shape == (64, 64, 3) and len(picture.patch_words) == side_patches**2
        assert sorted(w for w in picture.patch_words if w != "_") == sorted(s.colour for s in scene.shapes)
        for shape in scene.shapes:
            row, col = divmod(shape.cell, GRID)
            patches = [(row * 2 + r) * side_patches + col * 2 + c for r in range(2) for c in range(2)]
            assert sum(picture.patch_words[p] == shape.colour for p in patches) >= 1  # inside its own cell
        for index, word in enumerate(picture.patch_words):
            row, col = divmod(index, side_patches)
            block = picture.image[row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH].astype(int)
            saturated = (block.max(-1) - block.min(-1) > 60).any()  # background pixels are near-grey
            assert saturated == (word != "_")
        # scale 1: one patch per cell, the text scene's words
        assert draw(scene, rng).patch_words == tuple(scene.grid_words("_"))


def test_more_visual_tokens_raise_the_uniform_share() -> None:
    plain, scaled = uniform_attention_ratio("how many red ?"), uniform_attention_ratio("how many red ?", image_scale=2)
    assert 0 < plain < scaled < 1


def test_a_scale_2_vlm_trains_saves_and_evaluates_in_its_layout(tmp_path, one_thread) -> None:
    size = QUICK_V3.size
    model = vlm_from_base(new_base(size, 5), size, 6, image_scale=2)
    stage = Stage(steps=3, lr=3e-3, warmup=1, batch=4, freeze_language_model=True, align_embeddings=1.0)
    log = train_stage("vlm_align", model, stage, stage_sampler("vlm_align", 0.0, image_scale=2), 7, image_scale=2)
    assert log.frozen_unchanged is True and len(log.align_losses) == 1
    save_checkpoint(model, tmp_path / "vlm")
    loaded = load_model(tmp_path / "vlm")
    assert image_scale_of(loaded.config) == 2 and loaded.config.image_seq_length == 64
    evaluation = evaluate_checkpoint("vlm", tmp_path / "vlm", ("perception", "visual_reasoning"), 3, teacher_forced=True)
    assert set(evaluation.tasks) == {"perception", "visual_reasoning"}
    assert evaluation.tasks["visual_reasoning"].teacher_forced  # the 64-token prompts went through the model
    levels = chance_levels(50, image_scale=2)
    assert 0 < levels["visual_reasoning"] < 1 and levels["text_reasoning"] == chance_levels(50)["text_reasoning"]

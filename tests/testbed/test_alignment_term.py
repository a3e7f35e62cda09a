"""The stage-1 alignment term (docs/testbed.md, "Alignment probe 2"): each projected patch is pulled
toward the base's embedding of its cell's word; off by default, with the cache keys unchanged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from frankmerge.testbed.trained.config import DEFAULT, QUICK, Stage
from frankmerge.testbed.trained.encode import Encoder
from frankmerge.testbed.trained.images import GRID
from frankmerge.testbed.trained.models import new_base, vlm_from_base
from frankmerge.testbed.trained.tasks import caption, stage_sampler
from frankmerge.testbed.trained.train import train_stage

ALIGN = Stage(steps=50, lr=3e-3, warmup=2, batch=8, freeze_language_model=True)


def test_keys_change_only_with_the_term() -> None:
    assert DEFAULT.vlm_align is not None
    termed = replace(DEFAULT, vlm_align=replace(DEFAULT.vlm_align, align_embeddings=1.0))
    for stage in ("base", "reasoner"):
        assert termed.stage_key(stage) == DEFAULT.stage_key(stage)
    for stage in ("vlm_align", "vlm"):
        assert termed.stage_key(stage) != DEFAULT.stage_key(stage)
    explicit_zero = replace(DEFAULT, vlm_align=replace(DEFAULT.vlm_align, align_embeddings=0.0))
    assert explicit_zero.key() == DEFAULT.key()


def test_each_image_carries_its_cells_words_in_patch_order() -> None:
    example = caption(np.random.default_rng(3))
    encoder = Encoder()
    batch = encoder.batch([example, caption(np.random.default_rng(4))])
    assert batch.cell_ids is not None and tuple(batch.cell_ids.shape) == (2, GRID * GRID)
    assert encoder.tokenizer.convert_ids_to_tokens(batch.cell_ids[0].tolist()) == list(example.cell_words)
    # a coloured cell of the image holds that colour's pixels: the words follow the patches' row-major order
    cell = next(i for i, w in enumerate(example.cell_words) if w != "_")
    assert example.image is not None
    patch = example.image.shape[0] // GRID
    row, col = divmod(cell, GRID)
    block = example.image[row * patch : (row + 1) * patch, col * patch : (col + 1) * patch]
    assert block.std() > 0  # a shape is drawn there


def _stage1(align: float) -> tuple[torch.nn.Module, object]:
    model = vlm_from_base(new_base(QUICK.size, 5), QUICK.size, 6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = train_stage("vlm_align", model, replace(ALIGN, align_embeddings=align), stage_sampler("vlm_align", 0.0), 7)
    return model, (log, before)


def test_the_term_pulls_patches_toward_their_words_and_leaves_the_language_model(one_thread) -> None:
    model, (log, before) = _stage1(1.0)
    assert log.frozen_unchanged is True
    assert len(log.align_losses) == len(log.losses) and log.align_losses[-1][1] < log.align_losses[0][1]
    assert "align_losses" in log.to_json()
    plain, (plain_log, _) = _stage1(0.0)
    assert not plain_log.align_losses and "align_losses" not in plain_log.to_json()
    # the term changed what the tower and projector learned, and nothing else
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, dict(plain.named_parameters())[n])]
    assert moved and all("vision_tower" in n or "multi_modal_projector" in n for n in moved)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n not in moved)


def test_the_term_needs_a_projector(one_thread) -> None:
    with pytest.raises(ValueError, match="multi_modal_projector"):
        train_stage(
            "base",
            new_base(QUICK.size, 5),
            replace(ALIGN, freeze_language_model=False, align_embeddings=1.0),
            stage_sampler("base", 0.0),
            7,
        )

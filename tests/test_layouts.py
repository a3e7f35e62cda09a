"""Layout detection: every family, in every on-disk layout, maps to the same canonical decoder."""

from __future__ import annotations

from pathlib import Path

import pytest

from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.errors import LayoutError
from frankmerge.layouts import detect_layout, family_for, read_config
from frankmerge.testbed.tiny import FAMILIES, LAYOUTS, N_LAYERS

EXPECTED_PREFIX = {
    ("qwen2_vl", "default"): "model.",
    ("qwen2_vl", "v5"): "model.language_model.",
    ("llava", "hub"): "language_model.model.",
    ("llava", "v5"): "model.language_model.",
    ("idefics3", "default"): "model.text_model.",
    ("internvl", "v5"): "model.language_model.",
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_detects_every_family_and_layout(tiny_triple, family: str, layout: str):
    triple = tiny_triple(family, layout=layout)
    config = read_config(triple.vlm, "vlm")
    with Checkpoint(triple.vlm) as checkpoint, Checkpoint(triple.base) as base_checkpoint:
        detected = detect_layout(checkpoint.names(), family_for(config, "vlm", None), config, "vlm")
        base_config = read_config(triple.base, "base")
        base = detect_layout(base_checkpoint.names(), family_for(base_config, "base", None), base_config, "base")
    assert detected.num_blocks == N_LAYERS
    assert detected.decoder == base.decoder
    assert [sorted(b) for b in detected.blocks] == [sorted(b) for b in base.blocks]
    assert not any("layers." in name and "vision" not in name and "visual" not in name for name in detected.other)
    assert all(name.startswith(detected.prefix) for block in detected.blocks for name in block.values())
    if (family, layout) in EXPECTED_PREFIX:
        assert detected.prefix == EXPECTED_PREFIX[(family, layout)]


def test_layout_override_must_exist(tiny_triple):
    triple = tiny_triple("qwen2_vl")
    with pytest.raises(LayoutError, match="unknown layout"):
        family_for(read_config(triple.vlm, "vlm"), "vlm", "qwen9_vl")


def test_wrong_layout_override_finds_no_decoder(tiny_triple):
    triple = tiny_triple("idefics3")
    config = read_config(triple.vlm, "vlm")
    with Checkpoint(triple.vlm) as checkpoint, pytest.raises(LayoutError, match="no decoder tensors found"):
        detect_layout(checkpoint.names(), family_for(config, "vlm", "llava"), config, "vlm")


def test_unknown_model_type_names_the_override(tmp_path: Path):
    (tmp_path / "config.json").write_text('{"model_type": "acme_remote_vlm"}')
    with pytest.raises(LayoutError, match="remote code"):
        read_config(tmp_path, "vlm")

"""config.json read without transformers gives what transformers' reading gives: the same layout,
coefficients and pair-doctor facts, on every tiny family and on hub-style configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.doctor.fields import decoder_facts
from frankmerge.layouts import detect
from frankmerge.layouts.detect import detect_layout, family_for, read_config
from frankmerge.merge import merge
from frankmerge.recipe import MergeRecipe, Prior
from frankmerge.testbed.tiny import FAMILIES
from tests.test_doctor import _legacy_hub_triple

ROLES = ("vlm", "reasoner", "base")


def _both_routes(directory: Path, role: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    plain = read_config(directory, role)
    with monkeypatch.context() as patched:
        patched.setattr(detect, "_stated_facts", lambda raw, family: None)  # always through transformers
        through = read_config(directory, role)
    return plain, through


def _assert_same(directory: Path, role: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both routes agree; returns whether the plain route avoided transformers."""
    plain, through = _both_routes(directory, role, monkeypatch)
    avoided = plain.text_config is None
    for name in ("model_type", "text_model_type", "num_layers", "vocab_size", "tie_word_embeddings"):
        assert getattr(plain, name) == getattr(through, name), (directory, name)
    names = Checkpoint(directory).names()
    family = family_for(plain, role, None)
    assert detect_layout(names, family, plain, role) == detect_layout(names, family_for(through, role, None), through, role)
    tie = plain.tie_word_embeddings
    assert decoder_facts(plain.text, tie=tie) == decoder_facts(through.text, tie=through.tie_word_embeddings), directory
    return avoided


@pytest.mark.parametrize("family", FAMILIES)
def test_routes_agree_on_every_tiny_family(tiny_triple, family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    triple = tiny_triple(family)
    avoided = [_assert_same(getattr(triple, role), role, monkeypatch) for role in ROLES]
    assert avoided[1] and avoided[2]  # the text models' configs state every fact: no transformers


def test_routes_agree_on_hub_style_configs(tiny_triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Legacy hub keys (flat Qwen2.5-VL, rope_theta), and a LLaVA-1.5-style sparse text_config that
    leaves the layer count to the class default (so it must go through transformers)."""
    paths = _legacy_hub_triple(tiny_triple, tmp_path / "legacy")
    for role in ROLES:
        _assert_same(paths[role], role, monkeypatch)
    llava = tiny_triple("llava", layout="hub").vlm
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    for item in llava.iterdir():
        (sparse / item.name).symlink_to(item)
    config = json.loads((llava / "config.json").read_text())
    text = config["text_config"]
    config["text_config"] = {k: text[k] for k in ("model_type", "vocab_size", "rms_norm_eps") if k in text}
    (sparse / "config.json").unlink()
    (sparse / "config.json").write_text(json.dumps(config))
    plain, through = _both_routes(sparse, "vlm", monkeypatch)
    assert plain.text_config is not None  # read through transformers: the class default fills the layers
    assert decoder_facts(plain.text) == decoder_facts(through.text)


def test_routes_give_the_same_merge(tiny_triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    triple = tiny_triple("qwen2_vl")
    recipe = MergeRecipe(vlm=str(triple.vlm), reasoner=str(triple.reasoner), base=str(triple.base), prior=Prior(kind="none"))
    plain = merge(recipe, tmp_path / "plain", progress=False)
    monkeypatch.setattr(detect, "_stated_facts", lambda raw, family: None)
    through = merge(recipe, tmp_path / "through", progress=False)
    assert plain.coefficients == through.coefficients
    assert plain.stats == through.stats
    assert plain.report["compatibility"] == through.report["compatibility"]

"""config.json read without transformers gives what transformers' reading gives: the same layout,
coefficients and pair-doctor facts, on every tiny family and on hub-style configs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.doctor.fields import decoder_facts
from frankmerge.layouts import class_defaults, detect
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
    if avoided:  # and the doctor's facts come from the stored class defaults, not transformers
        assert plain.section is not None and class_defaults.filled_text(plain.section) is not None, directory
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


# The stored class defaults (layouts/class_defaults.py) against transformers' classes.

SMALL = {"num_hidden_layers": 6, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 512}
ROPE_VARIANTS: tuple[dict[str, Any], ...] = (
    {"rope_theta": 500000.0},
    {"rope_scaling": {"type": "linear", "factor": 2.0}},
    {"rope_theta": 1e6, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}},
    {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}},
    {"rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
    {"rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]}},
    {"rope_parameters": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}},
)
WINDOW_VARIANTS: tuple[dict[str, Any], ...] = (
    {"use_sliding_window": True, "sliding_window": 32, "max_window_layers": 4},
    {"use_sliding_window": True, "sliding_window": 32, "layer_types": ["full_attention", "sliding_attention"] * 3},
    {"sliding_window": None},
    {"sliding_window": 32, "sliding_window_pattern": 3},
    {"hidden_act": "gelu"},
    {"num_key_value_heads": None, "head_dim": None},
)


def _transformers_text(section: dict[str, Any]) -> dict[str, Any] | None:
    """transformers' reading of one text section (its class, defaults filled), None if it rejects it."""
    from transformers import CONFIG_MAPPING

    try:  # a deep copy: the classes rewrite nested RoPE dicts in place
        return CONFIG_MAPPING[section["model_type"]](**copy.deepcopy(section)).to_dict()
    except Exception:  # a config its class rejects is not one the table must read
        return None


def _sections(model_type: str) -> list[dict[str, Any]]:
    """Configs of one family as the hub and transformers 5 write them, each doctor key left out in
    turn, and the RoPE and window spellings the classes rewrite."""
    from transformers import CONFIG_MAPPING

    small = {"model_type": model_type, **SMALL}
    full = {k: v for k, v in CONFIG_MAPPING[model_type](**small).to_dict().items() if not k.startswith("_")}
    found = [small, full]
    found += [{k: v for k, v in full.items() if k != key} for key in (*class_defaults.KEYS, "rope_parameters", "layer_types")]
    found += [{**small, **variant} for variant in (*ROPE_VARIANTS, *WINDOW_VARIANTS)]
    return found


def test_stored_class_defaults_are_transformers_own() -> None:
    """Every value in the table is the class default of the installed transformers, and every key
    the doctor reads that a class defaults is in the table."""
    import dataclasses

    from transformers import CONFIG_MAPPING

    for model_type, stored in class_defaults.TABLE.items():
        cls = CONFIG_MAPPING[model_type]
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name in class_defaults.KEYS}
        assert stored.fields == defaults, model_type
        theta = cls.default_theta
        assert (stored.theta, stored.local_theta) == (
            (theta["global"], theta["local"]) if isinstance(theta, dict) else (theta, None)
        )
        assert cls.default_rope_type == "default", model_type
    assert not class_defaults.AS_WRITTEN & set(CONFIG_MAPPING)  # transformers has no class for these


@pytest.mark.parametrize("model_type", sorted(class_defaults.TABLE))
def test_stored_defaults_give_transformers_facts(model_type: str) -> None:
    """The doctor's facts of a config read with the table equal those of transformers' reading,
    on full, sparse and legacy-spelled configs of every family in the table."""
    compared = 0
    for section in _sections(model_type):
        through = _transformers_text(section)
        if through is None:
            continue
        filled = class_defaults.filled_text(section)
        if filled is None:  # only Gemma3 with one flat RoPE setting is left to transformers (it ignores it)
            assert model_type == "gemma3_text" and "rope_type" in section.get("rope_parameters", {}), section
            continue
        assert decoder_facts(filled) == decoder_facts(through), section
        compared += 1
    assert compared >= len(class_defaults.KEYS)


def test_unknown_family_falls_back_to_transformers(tiny_triple) -> None:
    assert class_defaults.filled_text({"model_type": "phi3", **SMALL}) is None
    assert class_defaults.filled_text({"model_type": "gemma3_text", "use_bidirectional_attention": True}) is None
    config = read_config(tiny_triple("qwen2_vl").vlm, "vlm")
    assert config.section is not None and class_defaults.filled_text(config.section) is not None

"""Tiny homologous triples: they load cleanly, run, carry the intended deltas, and use the promised layouts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

from frankmerge.testbed.tiny import (
    FAMILIES,
    LAYOUTS,
    N_LAYERS,
    NON_LAYER_SCALE,
    SPECS,
    TEXT_VOCAB,
    TinyTriple,
    build_tiny_triple,
    image_forward_inputs,
    reasoner_delta_scale,
    vlm_delta_scale,
)

TEXT_CLASS = {
    "qwen2_vl": "Qwen2ForCausalLM",
    "qwen2_5_vl": "Qwen2ForCausalLM",
    "internvl": "Qwen2ForCausalLM",
    "llava_onevision": "Qwen2ForCausalLM",
    "llava": "LlamaForCausalLM",
    "idefics3": "LlamaForCausalLM",
    "smolvlm": "LlamaForCausalLM",
    "llava_next": "MistralForCausalLM",
    "mistral3": "MistralForCausalLM",
    "qwen3_vl": "Qwen3ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}
_LLAVA = ("language_model.model.", "language_model.lm_head.weight")
_TIED = ("language_model.model.", None)
_INFIX = "vision_tower.vision_model."
# family -> layout -> (decoder prefix, lm_head name or None when tied, vision prefix)
PREFIXES: dict[str, dict[str, tuple[str, str | None, str]]] = {
    "qwen2_vl": {"default": ("model.", "lm_head.weight", "visual.")},
    "qwen2_5_vl": {"default": ("model.", "lm_head.weight", "visual.")},
    "qwen3_vl": {"default": ("model.language_model.", "lm_head.weight", "model.visual.")},
    "llava": {"default": (*_LLAVA, "vision_tower."), "hub": (*_LLAVA, _INFIX)},
    "llava_next": {"default": (*_LLAVA, "vision_tower."), "hub": (*_LLAVA, _INFIX)},
    "llava_onevision": {"default": (*_LLAVA, "vision_tower."), "hub": (*_LLAVA, _INFIX)},
    "idefics3": {"default": ("model.text_model.", "lm_head.weight", "model.vision_model.")},
    "smolvlm": {"default": ("model.text_model.", "lm_head.weight", "model.vision_model.")},
    "internvl": {"default": (*_TIED, "vision_tower.")},
    "mistral3": {"default": (*_TIED, "vision_tower.")},
    "gemma3": {"default": (*_TIED, "vision_tower."), "hub": (*_TIED, _INFIX)},
}
V5_VISION = {
    "qwen2_vl": "model.visual.",
    "qwen2_5_vl": "model.visual.",
    "qwen3_vl": "model.visual.",
    "idefics3": "model.vision_model.",
    "smolvlm": "model.vision_model.",
}


def expected_prefixes(family: str, layout: str) -> tuple[str, str | None, str]:
    """hub == default for families whose default save already uses legacy hub names."""
    if layout == "v5":
        decoder = "model.text_model." if family in ("idefics3", "smolvlm") else "model.language_model."
        return decoder, (None if SPECS[family].tied else "lm_head.weight"), V5_VISION.get(family, "model.vision_tower.")
    return PREFIXES[family].get(layout, PREFIXES[family]["default"])


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update({k: v.float() for k, v in load_file(file).items()})
    return out


def load_vlm(path: Path, **kw: object) -> tf.PreTrainedModel:
    model, info = tf.AutoModelForImageTextToText.from_pretrained(path, output_loading_info=True, **kw)
    assert not any(info.values()), info
    return model.eval()


def rms(deltas: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float((d**2).sum()) for d in deltas) / sum(d.numel() for d in deltas))


@pytest.fixture(scope="module")
def triples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyTriple]:
    root = tmp_path_factory.mktemp("tiny")
    return {f: build_tiny_triple(root / f, f, seed=3, vlm_extra_vocab=8 if f == "llava" else 0) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_vlm_loads_and_runs_on_an_image(triples: dict[str, TinyTriple], family: str) -> None:
    vlm = load_vlm(triples[family].vlm)
    inputs = image_forward_inputs(triples[family].vlm)
    image_id = vlm.config.image_token_id
    assert (inputs["input_ids"] == image_id).any()
    with torch.no_grad():
        logits = vlm(**inputs).logits
    assert logits.shape[-1] == vlm.config.get_text_config().vocab_size and torch.isfinite(logits).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_text_models_load_as_the_decoder_class(triples: dict[str, TinyTriple], family: str) -> None:
    for path in (triples[family].base, triples[family].reasoner):
        model, info = tf.AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
        assert not any(info.values()), info
        assert type(model).__name__ == TEXT_CLASS[family]
        assert model.config.tie_word_embeddings == SPECS[family].tied


SHARED_TEXT_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "rms_norm_eps",
    "vocab_size",
    "tie_word_embeddings",
)


def rope_thetas(config: tf.PretrainedConfig) -> dict[str, float]:
    """rope_theta per rope block (Gemma3 keeps one per attention type); M-RoPE extras are ignored."""
    rope = config.rope_parameters
    blocks = rope if "rope_theta" not in rope else {"all": rope}
    return {k: v["rope_theta"] for k, v in blocks.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_vlm_text_config_matches_the_llm_config(triples: dict[str, TinyTriple], family: str) -> None:
    llm = tf.AutoConfig.from_pretrained(triples[family].base)
    vlm = tf.AutoConfig.from_pretrained(triples[family].vlm)
    text, extra = vlm.get_text_config(), 8 if family == "llava" else 0
    for key in SHARED_TEXT_FIELDS:
        assert getattr(text, key) == getattr(llm, key) + (extra if key == "vocab_size" else 0), key
    assert vlm.tie_word_embeddings == llm.tie_word_embeddings
    assert rope_thetas(text) == rope_thetas(llm)


@pytest.mark.parametrize("family", FAMILIES)
def test_vlm_decoder_and_reasoner_carry_the_intended_deltas(triples: dict[str, TinyTriple], family: str) -> None:
    triple = triples[family]
    base, reasoner, vlm = (read_tensors(p) for p in (triple.base, triple.reasoner, triple.vlm))
    dec, head, _ = expected_prefixes(family, "default")
    to_vlm = {n: head if n == "lm_head.weight" else dec + n.removeprefix("model.") for n in base}
    assert set(reasoner) == set(base) and set(to_vlm.values()) <= set(vlm)
    d_vlm = {n: vlm[to_vlm[n]][tuple(slice(0, s) for s in t.shape)] - t for n, t in base.items()}
    d_rsn = {n: reasoner[n] - t for n, t in base.items()}
    for n, t in base.items():  # homologous: same shapes except possibly extra VLM vocab rows
        assert vlm[to_vlm[n]].shape[1:] == t.shape[1:]
    for layer in range(N_LAYERS):
        block = [n for n in base if f".layers.{layer}." in n]
        assert rms([d_vlm[n] for n in block]) == pytest.approx(vlm_delta_scale(layer, N_LAYERS), rel=0.05)
        assert rms([d_rsn[n] for n in block]) == pytest.approx(reasoner_delta_scale(layer, N_LAYERS), rel=0.05)
    embed = "model.embed_tokens.weight"
    assert rms([d_vlm[embed]]) == pytest.approx(NON_LAYER_SCALE["vlm"], rel=0.05)
    assert rms([d_rsn[embed]]) == pytest.approx(NON_LAYER_SCALE["reasoner"], rel=0.05)
    assert ("lm_head.weight" in base) != SPECS[family].tied


def test_extra_vlm_vocab_rows_are_appended(triples: dict[str, TinyTriple]) -> None:
    vlm = read_tensors(triples["llava"].vlm)
    assert vlm["language_model.model.embed_tokens.weight"].shape[0] == TEXT_VOCAB + 8
    assert vlm["language_model.lm_head.weight"].shape[0] == TEXT_VOCAB + 8


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizers_and_processor_ids_match_configs(triples: dict[str, TinyTriple], family: str) -> None:
    triple = triples[family]
    reasoner = tf.AutoTokenizer.from_pretrained(triple.reasoner)
    added = {t.content for t in reasoner.added_tokens_decoder.values()}
    assert {"<think>", "</think>"} <= added
    base = tf.AutoTokenizer.from_pretrained(triple.base)
    assert reasoner.convert_tokens_to_ids("<think>") == base.convert_tokens_to_ids("<think>") < TEXT_VOCAB
    processor = tf.AutoProcessor.from_pretrained(triple.vlm)
    config = json.loads((triple.vlm / "config.json").read_text())
    assert "tie_word_embeddings" in config and processor.tokenizer.chat_template
    for key, token in SPECS[family].token_keys.items():
        assert processor.tokenizer.convert_tokens_to_ids(token) == config[key] < TEXT_VOCAB


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_layouts_write_expected_prefixes_and_load(tmp_path: Path, family: str, layout: str) -> None:
    triple = build_tiny_triple(tmp_path, family, layout=layout)
    keys = set(read_tensors(triple.vlm))
    dec, head, vis = expected_prefixes(family, layout)
    assert {f"{dec}embed_tokens.weight", f"{dec}layers.{N_LAYERS - 1}.self_attn.q_proj.weight"} <= keys
    assert (head in keys) if head else not any(k.endswith("lm_head.weight") for k in keys)
    assert any(k.startswith(vis) for k in keys)
    if vis.startswith("vision_tower."):  # the infix is all-or-nothing
        assert all(k.startswith(_INFIX) for k in keys if k.startswith("vision_tower.")) == (vis == _INFIX)
    load_vlm(triple.vlm)


@pytest.mark.parametrize(("family", "layout"), [("llava", "hub"), ("qwen2_vl", "default"), ("gemma3", "v5")])
def test_sharded_writes_an_index_with_several_shards(tmp_path: Path, family: str, layout: str) -> None:
    triple = build_tiny_triple(tmp_path, family, layout=layout, sharded=True)
    for path in (triple.vlm, triple.base, triple.reasoner):
        index = json.loads((path / "model.safetensors.index.json").read_text())
        shards = set(index["weight_map"].values())
        assert len(shards) > 1 and not (path / "model.safetensors").exists()
        assert shards == {p.name for p in path.glob("*.safetensors")}
        assert set(index["weight_map"]) == set(read_tensors(path))
    load_vlm(triple.vlm)


def test_bfloat16_triple_runs(tmp_path: Path) -> None:
    triple = build_tiny_triple(tmp_path, "qwen2_vl", dtype=torch.bfloat16)
    assert load_file(triple.base / "model.safetensors")["model.embed_tokens.weight"].dtype == torch.bfloat16
    vlm = load_vlm(triple.vlm, dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.isfinite(vlm(**image_forward_inputs(triple.vlm, dtype=torch.bfloat16)).logits).all()


def test_builds_are_deterministic_per_seed(tmp_path: Path) -> None:
    a, b, c = (build_tiny_triple(tmp_path / n, "llava", seed=s) for n, s in (("a", 5), ("b", 5), ("c", 6)))
    ta, tb, tc = (read_tensors(t.reasoner) for t in (a, b, c))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert not torch.equal(ta["model.embed_tokens.weight"], tc["model.embed_tokens.weight"])


def test_rejects_unknown_family_and_layout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="family"):
        build_tiny_triple(tmp_path, "mllama")
    with pytest.raises(ValueError, match="layout"):
        build_tiny_triple(tmp_path, "llava", layout="flat")

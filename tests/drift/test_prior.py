"""The prior file: Δ = θ_R − θ_V over the covered decoder tensors, streamed, with its metadata."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from frankmerge.drift.errors import DriftOptionError, PriorFormatError, PriorMismatchError
from frankmerge.drift.prior import PriorOptions, build_prior
from frankmerge.drift.prior_file import load_prior
from frankmerge.errors import HomologyError, NonFiniteError, OutputExistsError
from tests.conftest import block_key
from tests.drift.helpers import covered_names
from tests.reference import blocks_of, load_dir

F32 = PriorOptions(dtype=torch.float32)


@pytest.mark.parametrize(("family", "layout"), [("qwen2_vl", "default"), ("qwen2_vl", "v5"), ("llava", "hub"), ("gemma3", "v5")])
def test_prior_is_reasoner_minus_vlm(tiny_triple, tmp_path: Path, family: str, layout: str) -> None:
    triple = tiny_triple(family, layout=layout)
    prior = build_prior(triple.vlm, triple.reasoner, tmp_path / "prior.safetensors", F32)
    vlm, reasoner = load_dir(triple.vlm), load_dir(triple.reasoner)
    reasoner_blocks = {key: name for name, key in ((n, block_key(n)) for n in reasoner) if key is not None}
    expected_names = covered_names(list(vlm))
    assert sorted(e.vlm_name for e in prior.meta.entries.values()) == sorted(expected_names)
    stored = load_file(prior.path)
    for name in expected_names:
        index, suffix = block_key(name)  # type: ignore[misc]
        canonical = f"layers.{index}.{suffix}"
        expected = reasoner[reasoner_blocks[(index, suffix)]].double() - vlm[name].double()
        torch.testing.assert_close(stored[canonical].double(), expected, rtol=0, atol=1e-6)
        entry = prior.meta.entries[canonical]
        assert entry.norm == pytest.approx(float(expected.norm()), rel=1e-6)
        assert entry.vlm_norm == pytest.approx(float(vlm[name].double().norm()), rel=1e-6)
        assert entry.group == ("attn" if "self_attn" in suffix else "mlp")
    assert not any("vision" in e.vlm_name or "visual" in e.vlm_name for e in prior.meta.entries.values())
    assert prior.meta.modules == ("attn", "mlp")
    assert prior.meta.inputs["vlm"]["path"] == str(triple.vlm.resolve())  # type: ignore[index]
    assert "layers.0.input_layernorm.weight" in prior.meta.uncovered


def test_both_layouts_give_the_same_prior(tiny_triple, tmp_path: Path) -> None:
    a = build_prior(tiny_triple("qwen2_vl").vlm, tiny_triple("qwen2_vl").reasoner, tmp_path / "a.safetensors")
    b = build_prior(tiny_triple("qwen2_vl", layout="v5").vlm, tiny_triple("qwen2_vl", layout="v5").reasoner, tmp_path / "b")
    ta, tb = load_file(a.path), load_file(b.path)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert all(t.dtype == torch.bfloat16 for t in ta.values())  # the default storage dtype
    assert {e.vlm_name for e in a.meta.entries.values()} != {e.vlm_name for e in b.meta.entries.values()}


def test_norm_and_embedding_groups(tiny_triple, tmp_path: Path) -> None:
    """Rows only the VLM's vocabulary holds (image tokens) get Δ = 0; the rest are matched by index."""
    triple = tiny_triple("llava", vlm_extra_vocab=8)
    options = PriorOptions(modules=("norm", "embed", "head"), dtype=torch.float32)
    prior = build_prior(triple.vlm, triple.reasoner, tmp_path / "p.safetensors", options)
    groups = {e.group for e in prior.meta.entries.values()}
    assert groups == {"norm", "embed", "head"}
    assert "norm.weight" in prior.meta.entries and "layers.3.post_attention_layernorm.weight" in prior.meta.entries
    embed = prior.tensor("embed_tokens.weight")
    vlm, reasoner = load_dir(triple.vlm), load_dir(triple.reasoner)
    rows = reasoner["model.embed_tokens.weight"].shape[0]
    assert embed.shape[0] == rows + 8 and prior.meta.entries["embed_tokens.weight"].rows_matched == rows
    assert torch.equal(embed[rows:], torch.zeros_like(embed[rows:]))
    vlm_embed = next(v for k, v in vlm.items() if k.endswith("embed_tokens.weight"))
    torch.testing.assert_close(embed[:rows], reasoner["model.embed_tokens.weight"] - vlm_embed[:rows], rtol=0, atol=1e-6)


def test_rows_of_different_tokens_get_no_delta(tiny_triple, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The reasoner's <think> at the VLM's image-token id (QwQ vs InternVL2.5): Δ must not pull one
    toward the other, so those rows get Δ = 0; with a tokenizer missing, rows are matched by index."""
    from transformers import AutoTokenizer

    from tests.test_tokens import THINK, _copy, _reasoner_tokenizer_with_swapped_ids

    vlm, reasoner, base = _copy(tiny_triple("qwen2_vl"), tmp_path)
    _reasoner_tokenizer_with_swapped_ids(reasoner, {"<think>": "<|image_pad|>", "</think>": "<|video_pad|>"})
    vlm_tok = AutoTokenizer.from_pretrained(vlm)
    differing = sorted({vlm_tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", *THINK)})
    options = PriorOptions(modules=("embed", "head"), dtype=torch.float32, chunk=100)  # chunks that cut rows
    prior = build_prior(vlm, reasoner, tmp_path / "p.safetensors", options)
    V, R = load_dir(vlm), load_dir(reasoner)
    for canonical, suffix in (("embed_tokens.weight", "embed_tokens.weight"), ("lm_head.weight", "lm_head.weight")):
        delta = prior.tensor(canonical)
        v = next(t for n, t in V.items() if n.endswith(suffix))
        r = next(t for n, t in R.items() if n.endswith(suffix))
        assert torch.equal(delta[differing], torch.zeros_like(delta[differing])), canonical
        same = [i for i in range(delta.shape[0]) if i not in differing]
        torch.testing.assert_close(delta[same], (r - v)[same], rtol=0, atol=1e-6)
        assert prior.meta.entries[canonical].rows_of_other_meaning == len(differing)
        assert prior.meta.entries[canonical].norm == pytest.approx(float(delta.double().norm()), rel=1e-6)

    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (reasoner / name).unlink(missing_ok=True)
    prior = build_prior(vlm, reasoner, tmp_path / "p2.safetensors", options)
    assert prior.meta.entries["embed_tokens.weight"].rows_of_other_meaning is None
    assert "matched by index alone" in caplog.text
    by_index = prior.tensor("embed_tokens.weight")[differing]
    assert not torch.equal(by_index, torch.zeros_like(by_index))


def test_head_of_a_tied_vlm_is_refused(tiny_triple, tmp_path: Path) -> None:
    triple = tiny_triple("internvl")
    with pytest.raises(DriftOptionError, match="ties lm_head"):
        build_prior(triple.vlm, triple.reasoner, tmp_path / "p.safetensors", PriorOptions(modules=("head",)))


def test_unknown_module_group_lists_the_valid_ones(tiny_triple, tmp_path: Path) -> None:
    triple = tiny_triple("qwen2_vl")
    with pytest.raises(DriftOptionError, match="unknown module group 'vision'.*attn, mlp, norm, embed, head"):
        build_prior(triple.vlm, triple.reasoner, tmp_path / "p.safetensors", PriorOptions(modules=("attn", "vision")))


def test_reasoner_of_another_family_is_refused(tiny_triple, tmp_path: Path) -> None:
    with pytest.raises(HomologyError, match="llama decoder"):
        build_prior(tiny_triple("qwen2_vl").vlm, tiny_triple("llava").reasoner, tmp_path / "p.safetensors")


def test_shape_mismatch_names_the_tensor(tiny_triple, tmp_path: Path) -> None:
    reasoner = shutil.copytree(tiny_triple("qwen2_vl").reasoner, tmp_path / "reasoner")
    tensors = load_file(reasoner / "model.safetensors")
    tensors["model.layers.2.mlp.up_proj.weight"] = torch.zeros(130, 64)
    save_file(tensors, reasoner / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(PriorMismatchError, match=r"layers\.2\.mlp\.up_proj\.weight shape \[128, 64\] vs reasoner"):
        build_prior(tiny_triple("qwen2_vl").vlm, reasoner, tmp_path / "p.safetensors")
    assert not list(tmp_path.glob("*p.safetensors*"))


def test_nonfinite_input_leaves_no_file(tiny_triple, tmp_path: Path) -> None:
    reasoner = shutil.copytree(tiny_triple("qwen2_vl").reasoner, tmp_path / "reasoner")
    tensors = load_file(reasoner / "model.safetensors")
    tensors["model.layers.1.self_attn.k_proj.weight"][0, 0] = float("nan")
    save_file(tensors, reasoner / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NonFiniteError, match="k_proj"):
        build_prior(tiny_triple("qwen2_vl").vlm, reasoner, tmp_path / "p.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["reasoner"]


def test_existing_output_needs_overwrite(tiny_triple, tmp_path: Path) -> None:
    triple = tiny_triple("qwen2_vl")
    out = tmp_path / "p.safetensors"
    out.write_text("keep")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        build_prior(triple.vlm, triple.reasoner, out)
    build_prior(triple.vlm, triple.reasoner, out, PriorOptions(overwrite=True))
    assert load_prior(out).meta.num_blocks == 4


def test_not_a_prior_file(tiny_triple, tmp_path: Path) -> None:
    with pytest.raises(PriorFormatError, match="no DRIFT metadata"):
        load_prior(tiny_triple("qwen2_vl").vlm / "model.safetensors")
    with pytest.raises(PriorFormatError, match="no such file"):
        load_prior(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(PriorFormatError, match="not a readable safetensors"):
        load_prior(tmp_path / "junk.safetensors")


def test_many_blocks_header_fits(tiny_triple, tmp_path: Path) -> None:
    """The reserved header holds the final metadata whatever the norms' digits (all groups, sharded input)."""
    triple = tiny_triple("gemma3", sharded=True)
    options = PriorOptions(modules=("attn", "mlp", "norm", "embed"), chunk=1000)  # many chunks per tensor
    prior = build_prior(triple.vlm, triple.reasoner, tmp_path / "p.safetensors", options)
    expected = len(blocks_of(load_dir(triple.vlm))) + 2  # every block tensor, final norm and embeddings
    assert len(prior.meta.entries) == expected

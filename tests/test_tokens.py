"""Reasoning tokens survive the merge: carried by text, never by index, nothing truncated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from frankmerge import FrankmergeError, MergeRecipe, Prior, merge
from frankmerge.testbed.tiny import image_forward_inputs
from frankmerge.testbed.tiny_tokenizers import make_tokenizer
from tests.reference import load_dir

THINK = ("<think>", "</think>")


def _copy(triple, root: Path):  # type: ignore[no-untyped-def]
    return tuple(shutil.copytree(getattr(triple, role), root / role) for role in ("vlm", "reasoner", "base"))


def _rename_in_vocab(directory: Path, renames: dict[str, str]) -> None:
    """Make the VLM's tokenizer lack the reasoning tokens (their ids become unused words)."""
    path = directory / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    for old, new in renames.items():
        vocab[new] = vocab.pop(old)
    path.write_text(json.dumps(data))


def _reasoner_tokenizer_with_swapped_ids(reasoner: Path, swaps: dict[str, str]) -> None:
    """Give the reasoner's <think>/</think> the ids the VLM uses for image/video tokens (InternVL vs QwQ)."""
    vocab = AutoTokenizer.from_pretrained(reasoner).get_vocab()
    for a, b in swaps.items():
        vocab[a], vocab[b] = vocab[b], vocab[a]
    make_tokenizer(vocab, added_tokens=THINK).save_pretrained(reasoner)


def _pad_embeddings(directory: Path, extra: int) -> None:
    path = directory / "model.safetensors"
    state = load_file(path)
    for name in [n for n in state if n.endswith(("embed_tokens.weight", "lm_head.weight"))]:
        state[name] = torch.cat([state[name], torch.zeros(extra, state[name].shape[1])])
    save_file(state, path, metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text())
    config["vocab_size"] += extra
    (directory / "config.json").write_text(json.dumps(config))


def _embed(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return next(t for n, t in state.items() if n.endswith("embed_tokens.weight"))


def _head(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return next(t for n, t in state.items() if n.endswith("lm_head.weight"))


def test_think_collides_with_the_image_token(tiny_triple, tmp_path: Path):
    vlm, reasoner, base = _copy(tiny_triple("qwen2_vl"), tmp_path)
    _rename_in_vocab(vlm, {"<think>": "<unused_a>", "</think>": "<unused_b>"})
    _reasoner_tokenizer_with_swapped_ids(reasoner, {"<think>": "<|image_pad|>", "</think>": "<|video_pad|>"})
    _pad_embeddings(reasoner, 8)
    image_id = json.loads((vlm / "config.json").read_text())["image_token_id"]
    reasoner_tok = AutoTokenizer.from_pretrained(reasoner)
    assert reasoner_tok.convert_tokens_to_ids("<think>") == image_id, "the collision this test is about"

    out = tmp_path / "out"
    recipe = MergeRecipe(vlm=str(vlm), reasoner=str(reasoner), base=str(base), prior=Prior(kind="none"), think_template=True)
    merge(recipe, out, progress=False)

    merged_tok = AutoTokenizer.from_pretrained(out)
    V, R, M = load_dir(vlm), load_dir(reasoner), load_dir(out)
    vlm_rows = _embed(V).shape[0]
    for text in THINK:
        ids = merged_tok.encode(text, add_special_tokens=False)
        assert len(ids) == 1 and ids[0] >= vlm_rows, (text, ids)
        reasoner_id = reasoner_tok.convert_tokens_to_ids(text)
        assert torch.equal(_embed(M)[ids[0]], _embed(R)[reasoner_id])
        assert torch.equal(_head(M)[ids[0]], _head(R)[reasoner_id])
    assert merged_tok.convert_ids_to_tokens(image_id) == "<|image_pad|>"
    assert torch.equal(_embed(M)[:vlm_rows], _embed(V)), "the VLM's rows, image token included, are untouched"
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == _embed(M).shape[0] == vlm_rows + 2

    report = json.loads((out / "merge_report.json").read_text())["tokens"]
    assert {"id": image_id, "vlm": "<|image_pad|>", "reasoner": "<think>"} in report["id_collisions_of_added_tokens"]
    assert report["reasoner_padding_rows"] == 8
    assert [c["text"] for c in report["carried"]] == list(THINK)

    processor = AutoProcessor.from_pretrained(out)
    prompt = processor.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<think>\n")
    model = AutoModelForImageTextToText.from_pretrained(out)
    with torch.no_grad():
        assert torch.isfinite(model(**image_forward_inputs(out)).logits).all()


def test_extra_vlm_tokens_at_the_end_are_kept(tiny_triple, tmp_path: Path):
    vlm, reasoner, base = _copy(tiny_triple("llava", vlm_extra_vocab=4), tmp_path)
    _rename_in_vocab(vlm, {"<think>": "<unused_a>", "</think>": "<unused_b>"})
    tok = AutoTokenizer.from_pretrained(vlm)
    tok.add_tokens([f"<region_{i}>" for i in range(4)], special_tokens=True)
    tok.save_pretrained(vlm)
    assert len(tok) == _embed(load_dir(vlm)).shape[0]

    out = tmp_path / "out"
    merge(MergeRecipe(vlm=str(vlm), reasoner=str(reasoner), base=str(base), prior=Prior(kind="none")), out, progress=False)
    V, M = load_dir(vlm), load_dir(out)
    rows = _embed(V).shape[0]
    assert _embed(M).shape[0] == _head(M).shape[0] == rows + 2
    assert torch.equal(_embed(M)[:rows], _embed(V)) and torch.equal(_head(M)[:rows], _head(V))
    merged_tok = AutoTokenizer.from_pretrained(out)
    assert merged_tok.encode("<think>", add_special_tokens=False) == [rows]
    assert merged_tok.convert_tokens_to_ids("<region_3>") == rows - 1
    model = AutoModelForImageTextToText.from_pretrained(out)
    with torch.no_grad():
        assert torch.isfinite(model(**image_forward_inputs(out)).logits).all()


def test_reasoner_without_reasoning_tokens_is_reported(tiny_triple, tmp_path: Path):
    vlm, reasoner, base = _copy(tiny_triple("qwen2_vl"), tmp_path)
    vocab = AutoTokenizer.from_pretrained(reasoner).get_vocab()
    make_tokenizer({("<x>" if t == "<think>" else "<y>" if t == "</think>" else t): i for t, i in vocab.items()}).save_pretrained(
        reasoner
    )
    out = tmp_path / "out"
    merge(MergeRecipe(vlm=str(vlm), reasoner=str(reasoner), base=str(base), prior=Prior(kind="none")), out, progress=False)
    report = json.loads((out / "merge_report.json").read_text())["tokens"]
    assert "nothing carried over" in report["status"]
    assert _embed(load_dir(out)).shape == _embed(load_dir(vlm)).shape


def test_missing_reasoner_tokenizer_falls_back_and_says_so(tiny_triple, tmp_path: Path):
    vlm, reasoner, base = _copy(tiny_triple("qwen2_vl"), tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (reasoner / name).unlink(missing_ok=True)
    out = tmp_path / "out"
    merge(MergeRecipe(vlm=str(vlm), reasoner=str(reasoner), base=str(base), prior=Prior(kind="none")), out, progress=False)
    report = json.loads((out / "merge_report.json").read_text())["tokens"]
    assert report["status"].startswith("skipped: reasoner tokenizer unavailable")


def test_missing_vlm_tokenizer_falls_back_and_says_so(tiny_triple, tmp_path: Path):
    """A VLM without tokenizer files: the merge goes on, nothing carried over, the weights untouched in size."""
    vlm, reasoner, base = _copy(tiny_triple("llava"), tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (vlm / name).unlink(missing_ok=True)
    out = tmp_path / "out"
    merge(MergeRecipe(vlm=str(vlm), reasoner=str(reasoner), base=str(base), prior=Prior(kind="none")), out, progress=False)
    report = json.loads((out / "merge_report.json").read_text())["tokens"]
    assert report["status"].startswith("skipped: VLM tokenizer unavailable") and report["carried"] == []
    assert _embed(load_dir(out)).shape == _embed(load_dir(vlm)).shape
    assert not (out / "tokenizer.json").exists(), "no tokenizer is invented for the output"


def test_reasoning_token_that_is_the_vlm_image_token_is_refused(tiny_triple, tmp_path: Path):
    vlm, reasoner, base = _copy(tiny_triple("qwen2_vl"), tmp_path)
    vocab = AutoTokenizer.from_pretrained(reasoner).get_vocab()
    make_tokenizer(vocab, added_tokens=(*THINK, "<|image_pad|>")).save_pretrained(reasoner)
    recipe = MergeRecipe(
        vlm=str(vlm), reasoner=str(reasoner), base=str(base), prior=Prior(kind="none"), reasoning_tokens=("<|image_pad|>",)
    )
    with pytest.raises(FrankmergeError, match=r"'<\|image_pad\|>' is the VLM's multimodal token.*reasoning_tokens"):
        merge(recipe, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_generation_config_for_long_reasoning(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    base_recipe = {
        "vlm": str(triple.vlm),
        "reasoner": str(triple.reasoner),
        "base": str(triple.base),
        "prior": Prior(kind="none"),
    }
    merge(MergeRecipe(**base_recipe), tmp_path / "a", progress=False)
    merge(MergeRecipe(**base_recipe, generation_config="vlm"), tmp_path / "b", progress=False)
    reasoning = json.loads((tmp_path / "a" / "generation_config.json").read_text())
    kept = json.loads((tmp_path / "b" / "generation_config.json").read_text())
    assert reasoning["max_new_tokens"] >= 4096 and reasoning["temperature"] == 0.6
    assert kept == json.loads((triple.vlm / "generation_config.json").read_text())


def test_tokens_command_reports_before_merging(tiny_triple, tmp_path: Path):
    from click.testing import CliRunner

    from frankmerge.cli import main

    vlm, reasoner, _ = _copy(tiny_triple("qwen2_vl"), tmp_path)
    _rename_in_vocab(vlm, {"<think>": "<unused_a>", "</think>": "<unused_b>"})
    result = CliRunner().invoke(main, ["tokens", "--vlm", str(vlm), "--reasoner", str(reasoner)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [c["text"] for c in report["carried"]] == list(THINK)
    assert report["vlm_embedding_rows"] == 512 and not list(tmp_path.glob("out*"))


def _pad_vlm_embeddings(directory: Path, extra: int) -> None:
    """Pad a VLM's embedding and lm_head rows past its tokenizer, as Qwen2.5-VL checkpoints are."""
    for path in directory.glob("*.safetensors"):
        state = load_file(path)
        for name in [n for n in state if n.endswith(("embed_tokens.weight", "lm_head.weight"))]:
            state[name] = torch.cat([state[name], torch.full((extra, state[name].shape[1]), 0.5, dtype=state[name].dtype)])
        save_file(state, path, metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text())
    for section in (config, config.get("text_config")):
        if isinstance(section, dict) and "vocab_size" in section:
            section["vocab_size"] += extra
    (directory / "config.json").write_text(json.dumps(config))


def test_reasoning_tokens_take_padding_rows_of_a_padded_vlm(tiny_triple, tmp_path: Path):
    vlm, reasoner, base = _copy(tiny_triple("qwen2_vl"), tmp_path)
    _rename_in_vocab(vlm, {"<think>": "<unused_a>", "</think>": "<unused_b>"})
    _pad_vlm_embeddings(vlm, 6)
    V, R = load_dir(vlm), load_dir(reasoner)
    rows, size = _embed(V).shape[0], len(AutoTokenizer.from_pretrained(vlm))
    assert rows == size + 6, "the VLM's tokenizer is shorter than its embedding matrix"

    out = tmp_path / "out"
    merge(MergeRecipe(vlm=str(vlm), reasoner=str(reasoner), base=str(base), prior=Prior(kind="none")), out, progress=False)
    M = load_dir(out)
    merged_tok = AutoTokenizer.from_pretrained(out)
    reasoner_tok = AutoTokenizer.from_pretrained(reasoner)
    carried = [merged_tok.convert_tokens_to_ids(t) for t in THINK]
    assert carried == [size, size + 1], "fresh ids right after the VLM's tokenizer, inside its padding rows"
    assert _embed(M).shape[0] == _head(M).shape[0] == rows, "padding rows are reused, never truncated or grown"
    for text, new_id in zip(THINK, carried, strict=True):
        assert torch.equal(_embed(M)[new_id], _embed(R)[reasoner_tok.convert_tokens_to_ids(text)])
        assert torch.equal(_head(M)[new_id], _head(R)[reasoner_tok.convert_tokens_to_ids(text)])
    untouched = [i for i in range(rows) if i not in carried]
    assert torch.equal(_embed(M)[untouched], _embed(V)[untouched]) and torch.equal(_head(M)[untouched], _head(V)[untouched])
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == rows
    assert config.get("vocab_size", rows) == rows, "a top-level vocab_size agrees too"


def test_merge_shared_keeps_rows_whose_tokens_differ(tiny_triple, tmp_path: Path):
    """merge_shared must not average the VLM's image token with the reasoner's <think> (InternVL2.5 vs QwQ)."""
    vlm, reasoner, base = _copy(tiny_triple("qwen2_vl"), tmp_path)
    _reasoner_tokenizer_with_swapped_ids(reasoner, {"<think>": "<|image_pad|>", "</think>": "<|video_pad|>"})
    vlm_tok, reasoner_tok = AutoTokenizer.from_pretrained(vlm), AutoTokenizer.from_pretrained(reasoner)
    image_id = json.loads((vlm / "config.json").read_text())["image_token_id"]
    differing = sorted({vlm_tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", *THINK)})

    out = tmp_path / "out"
    recipe = MergeRecipe(
        vlm=str(vlm), reasoner=str(reasoner), base=str(base), prior=Prior(kind="none"), embeddings="merge_shared"
    )
    result = merge(recipe, out, progress=False)
    V, R, B, M = load_dir(vlm), load_dir(reasoner), load_dir(base), load_dir(out)
    assert image_id in differing and reasoner_tok.convert_tokens_to_ids("<think>") == image_id
    assert torch.equal(_embed(M)[differing], _embed(V)[differing]), "rows of differing tokens stay the VLM's"
    assert torch.equal(_head(M)[differing], _head(V)[differing])
    same = [i for i in range(_embed(R).shape[0]) if i not in differing]
    first = result.coefficients[0]
    theta_0 = _embed(B)[same].double()
    expected = (
        theta_0 + first.lambda_v * (_embed(V)[same].double() - theta_0) + first.lambda_r * (_embed(R)[same].double() - theta_0)
    )
    torch.testing.assert_close(_embed(M)[same].double(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(_embed(M)[same], _embed(V)[same]), "the shared rows are merged"
    records = {r.tensor: r for r in result.shared}
    embed_name = next(n for n in M if n.endswith("embed_tokens.weight"))
    assert records[embed_name].kept_vlm_rows == len(differing)
    assert json.loads((out / "merge_report.json").read_text())["tokens"]["rows_of_other_meaning"] == len(differing)

"""End-to-end merges of tiny triples, checked against the independent float64 reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from frankmerge import MergeRecipe, Prior, merge
from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.checkpoints.writer import PlannedTensor, ShardedWriter
from frankmerge.streaming import Source, Workspace, write_merged
from frankmerge.testbed.tiny import FAMILIES, image_forward_inputs
from tests.reference import load_dir, reference_merge

# (family, layout, sharded, extra VLM vocabulary rows, dtype, prior)
CASES = [
    ("qwen2_vl", "default", False, 0, "float32", Prior(kind="exponential", alpha=0.3)),
    ("llava", "hub", True, 8, "float32", Prior(kind="none")),
    ("idefics3", "v5", False, 0, "float32", Prior(kind="linear")),
    ("internvl", "v5", True, 0, "float32", Prior(kind="exponential", alpha=-0.2)),
    ("qwen2_5_vl", "v5", True, 0, "bfloat16", Prior(kind="exponential", alpha=0.1)),
    ("mistral3", "v5", False, 0, "float16", Prior(kind="none")),
]
# float32 outputs match the float64 reference to float32 rounding; bfloat16 outputs to half a bf16 ulp (round to nearest).
TOLERANCE = {
    "float32": {"rtol": 1e-5, "atol": 1e-6},
    "bfloat16": {"rtol": 2**-8 * 1.001, "atol": 1e-7},
    "float16": {"rtol": 2**-11 * 1.001, "atol": 2**-24},
}


def _recipe(triple, prior: Prior, **extra) -> MergeRecipe:  # type: ignore[no-untyped-def]
    return MergeRecipe(vlm=str(triple.vlm), reasoner=str(triple.reasoner), base=str(triple.base), prior=prior, **extra)


@pytest.mark.parametrize(("family", "layout", "sharded", "extra_vocab", "dtype", "prior"), CASES, ids=[c[0] for c in CASES])
def test_merge_matches_independent_reference(tiny_triple, tmp_path: Path, family, layout, sharded, extra_vocab, dtype, prior):
    triple = tiny_triple(family, layout=layout, sharded=sharded, vlm_extra_vocab=extra_vocab, dtype=dtype)
    out = tmp_path / "merged"
    result = merge(_recipe(triple, prior), out, progress=False)
    ref = reference_merge(triple.vlm, triple.reasoner, triple.base, prior.kind, prior.alpha)

    report = json.loads((out / "merge_report.json").read_text())
    assert len(report["blocks"]) == len(ref["blocks"]) == len(result.coefficients)
    for got, want in zip(report["blocks"], ref["blocks"], strict=True):
        for key in ("norm_v_sq", "norm_r_sq", "w_v", "lambda_v", "lambda_r"):
            assert got[key] == pytest.approx(want[key], rel=1e-5), key
        assert got["cos"] == pytest.approx(want["cos"], abs=1e-5)

    merged, vlm_state = load_dir(out), ref["vlm_state"]
    assert set(merged) == set(vlm_state), "output must hold exactly the VLM's tensor set"
    for name, expected in ref["expected"].items():
        assert merged[name].dtype == vlm_state[name].dtype
        torch.testing.assert_close(merged[name].double(), expected, **TOLERANCE[dtype], msg=name)
    for name, tensor in vlm_state.items():
        if name not in ref["expected"]:  # vision tower, projector, embeddings, norm, lm_head
            assert torch.equal(merged[name], tensor), f"{name} must be the VLM's, bit-exact"


def test_float64_inputs_merge_on_torchs_path(tiny_triple, tmp_path: Path):
    """float64 inputs, which the kernels do not take, merge through torch into float32 blocks (the
    output dtype ``auto`` gives when the VLM's is not an output dtype); tensors kept stay float64."""
    triple = tiny_triple("qwen2_vl", dtype="float64")
    out = tmp_path / "merged"
    prior = Prior(kind="exponential", alpha=0.3)
    merge(_recipe(triple, prior), out, progress=False)
    ref = reference_merge(triple.vlm, triple.reasoner, triple.base, prior.kind, prior.alpha)
    merged = load_dir(out)
    for name, expected in ref["expected"].items():
        assert merged[name].dtype == torch.float32
        torch.testing.assert_close(merged[name].double(), expected, **TOLERANCE["float32"], msg=name)
    for name, tensor in ref["vlm_state"].items():
        if name not in ref["expected"] and "visual" in name:
            assert torch.equal(merged[name], tensor), f"{name} must be the VLM's, bit-exact"


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_model_loads_and_sees_an_image(tiny_triple, tmp_path: Path, family: str):
    triple = tiny_triple(family)
    out = tmp_path / "merged"
    merge(_recipe(triple, Prior(kind="exponential", alpha=0.1)), out, progress=False)
    model, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    config = json.loads((out / "config.json").read_text())
    assert isinstance(config["tie_word_embeddings"], bool)
    with torch.no_grad():
        logits = model(**image_forward_inputs(out)).logits
    assert torch.isfinite(logits).all()
    for side_file in ("tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (out / side_file).is_file() == (triple.vlm / side_file).is_file(), side_file


def test_merge_shared_embeddings_merges_only_shared_rows(tiny_triple, tmp_path: Path):
    triple = tiny_triple("llava", layout="hub", sharded=True, vlm_extra_vocab=8)
    out = tmp_path / "merged"
    result = merge(_recipe(triple, Prior(kind="none"), embeddings="merge_shared"), out, progress=False)
    V, R, B, M = (load_dir(d) for d in (triple.vlm, triple.reasoner, triple.base, out))
    embed_v = next(n for n in V if n.endswith("embed_tokens.weight"))
    embed_r = next(n for n in R if n.endswith("embed_tokens.weight"))
    rows = R[embed_r].shape[0]
    assert V[embed_v].shape[0] == rows + 8
    first = result.coefficients[0]
    theta_0 = B[embed_r].double()
    expected = (
        theta_0 + first.lambda_v * (V[embed_v][:rows].double() - theta_0) + first.lambda_r * (R[embed_r].double() - theta_0)
    )
    torch.testing.assert_close(M[embed_v][:rows].double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(M[embed_v][rows:], V[embed_v][rows:]), "the VLM's own extra token rows are kept"
    shared = {record.tensor: record for record in result.shared}
    assert shared[embed_v].action == "merged" and shared[embed_v].merged_rows == rows


def test_explicit_dtype_casts_every_float_tensor(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    out = tmp_path / "merged"
    merge(_recipe(triple, Prior(kind="none"), dtype="bfloat16"), out, progress=False)
    merged = load_dir(out)
    assert {t.dtype for t in merged.values() if t.is_floating_point()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text()).get("dtype") == "bfloat16"


def test_identity_coefficients_reproduce_the_vlm(tiny_triple, tmp_path: Path):
    """λ = (1, 0) must give back the VLM's tensor bit for bit, whatever the chunking."""
    triple = tiny_triple("qwen2_vl")
    with Checkpoint(triple.vlm) as v, Checkpoint(triple.reasoner) as r, Checkpoint(triple.base) as b:
        name_v = next(n for n in v.names() if n.endswith("layers.1.mlp.down_proj.weight"))
        name_r = next(n for n in r.names() if n.endswith("layers.1.mlp.down_proj.weight"))
        info = v.info(name_v)
        writer = ShardedWriter(tmp_path, [PlannedTensor(name_v, info.dtype, info.shape)], 1 << 30)
        ws = Workspace(7, info.dtype)  # a chunk size that does not divide the tensor
        sources = (Source("vlm", v, name_v), Source("reasoner", r, name_r), Source("base", b, name_r))
        write_merged(ws, writer, name_v, sources, 1.0, 0.0, info.numel, info.numel)
        writer.close()
        assert torch.equal(load_dir(tmp_path)[name_v], v.load(name_v))


def test_legacy_flat_qwen2_vl_config(tiny_triple, tmp_path: Path):
    """Hub Qwen2-VL checkpoints keep text fields at the top level with rope_scaling/torch_dtype."""
    source = tiny_triple("qwen2_vl")
    vlm = shutil.copytree(source.vlm, tmp_path / "vlm")
    nested = json.loads((vlm / "config.json").read_text())
    text = nested.pop("text_config")
    rope = text.pop("rope_parameters")
    for key in ("model_type", "dtype", "layer_types"):
        text.pop(key)
    flat = {**nested, **text, "torch_dtype": nested.pop("dtype"), "rope_theta": rope["rope_theta"]}
    flat["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    flat.pop("dtype", None)
    (vlm / "config.json").write_text(json.dumps(flat))
    recipe = MergeRecipe(vlm=str(vlm), reasoner=str(source.reasoner), base=str(source.base), prior=Prior(kind="none"))
    merge(recipe, tmp_path / "out", progress=False)
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "text_config" not in written and written["num_hidden_layers"] == 4, "the flat layout is kept"
    assert written["tie_word_embeddings"] is False and written["torch_dtype"] == "float32"
    model, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        assert torch.isfinite(model(**image_forward_inputs(tmp_path / "out")).logits).all()


@pytest.mark.parametrize("kernel_copy", ["copy_file_range", "fallback"])
def test_kernel_copies_of_kept_tensors_are_bit_exact(
    tiny_triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copy: str
):
    """Tensors kept as they are go file to file (copy_file_range, or pread/write where unsupported)."""
    import errno

    monkeypatch.setattr("frankmerge.streaming.KERNEL_COPY_MIN_BYTES", 0)
    if kernel_copy == "fallback":

        def unsupported(*args: object) -> int:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr("frankmerge.checkpoints.writer.os.copy_file_range", unsupported)
    triple = tiny_triple("llava", layout="hub", sharded=True, vlm_extra_vocab=8)
    out = tmp_path / "merged"
    result = merge(_recipe(triple, Prior(kind="none")), out, progress=False)
    V, M = load_dir(triple.vlm), load_dir(out)
    blocks = {n for n in V if ".layers." in n and "vision" not in n and "vision_tower" not in n}
    kept = [n for n in V if n not in blocks]
    assert kept and all(torch.equal(M[n], V[n]) and M[n].dtype == V[n].dtype for n in kept)
    assert {r.action for r in result.shared} == {"kept_vlm"}


def test_kernel_copy_still_refuses_a_nonfinite_tensor(tiny_triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from safetensors.torch import load_file, save_file

    from frankmerge import FrankmergeError

    monkeypatch.setattr("frankmerge.streaming.KERNEL_COPY_MIN_BYTES", 0)
    source = tiny_triple("qwen2_vl")
    vlm = shutil.copytree(source.vlm, tmp_path / "vlm")
    state = load_file(vlm / "model.safetensors")
    name = next(n for n in state if n.startswith("visual.") and n.endswith("weight"))
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, vlm / "model.safetensors", metadata={"format": "pt"})
    recipe = MergeRecipe(vlm=str(vlm), reasoner=str(source.reasoner), base=str(source.base), prior=Prior(kind="none"))
    with pytest.raises(FrankmergeError, match="NaN or Inf"):
        merge(recipe, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_source_rows_restore_runs_across_chunk_boundaries(tmp_path: Path):
    """merge_shared's kept rows are read on demand: runs cut by chunk edges, carried rows on top."""
    from safetensors.torch import save_file

    from frankmerge.checkpoints.dtypes import F32
    from frankmerge.streaming import RowPatch, SourceRows

    width, matrix = 5, torch.randn(40, 5).bfloat16()
    save_file({"embed": matrix}, tmp_path / "model.safetensors")
    rows = [0, 3, 4, 5, 17, 18, 39]
    with Checkpoint(tmp_path) as checkpoint:
        restore = SourceRows(
            Source("vlm", checkpoint, "embed"), width, rows, then=RowPatch(width, {4: torch.full((width,), 9.0)})
        )
        out = torch.zeros(40 * width)
        for start in range(0, out.numel(), 23):  # chunks that end inside rows
            restore.apply(start, out[start : start + 23].numpy(), F32)  # a view: writes land in ``out``
    expected = torch.zeros(40, width)
    expected[rows] = matrix[rows].float()
    expected[4] = 9.0
    assert torch.equal(out.view(40, width), expected)

"""Attaching a prior to loaded VLMs: hook counts per family and layout, loud failures, real gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as tf

from frankmerge.drift.attach import attach_drift
from frankmerge.drift.errors import DriftSetupError, PriorMismatchError
from frankmerge.drift.prior import PriorOptions, build_prior
from frankmerge.testbed.tiny import image_forward_inputs
from tests.drift.helpers import covered_names, reference_guided, rewrite_prior
from tests.reference import load_dir

CASES = [
    (family, layout)
    for family in ("qwen2_vl", "qwen3_vl", "llava", "idefics3", "internvl", "gemma3", "mistral3")
    for layout in ("default", "v5")
] + [("llava", "hub"), ("gemma3", "hub")]


def _prior(tiny_triple, tmp_path: Path, family: str, layout: str = "default", **options: object) -> Path:
    triple = tiny_triple(family, layout=layout)
    path = tmp_path / f"{family}-{layout}.safetensors"
    build_prior(triple.vlm, triple.reasoner, path, PriorOptions(**options))  # type: ignore[arg-type]
    return path


def _load(tiny_triple, family: str, layout: str = "default") -> tf.PreTrainedModel:
    return tf.AutoModelForImageTextToText.from_pretrained(tiny_triple(family, layout=layout).vlm)


@pytest.mark.parametrize(("family", "layout"), CASES)
def test_hook_count_equals_covered_tensors(tiny_triple, tmp_path: Path, family: str, layout: str) -> None:
    model = _load(tiny_triple, family, layout)
    handle = attach_drift(model, _prior(tiny_triple, tmp_path, family, layout))
    expected = covered_names(list(load_dir(tiny_triple(family, layout=layout).vlm)))
    assert handle.num_hooks == len(expected) > 0
    names = dict(model.named_parameters())
    assert all(names[n].requires_grad for n in handle.guided)
    assert not any("vision" in n or "visual" in n or "projector" in n for n in handle.guided)
    handle.remove()


def test_both_layouts_attach_identically(tiny_triple, tmp_path: Path) -> None:
    handles = {}
    for layout in ("default", "v5"):
        handles[layout] = attach_drift(_load(tiny_triple, "llava", layout), _prior(tiny_triple, tmp_path, "llava", layout))
    default, v5 = handles["default"], handles["v5"]
    assert default.guided == v5.guided
    for a, b in zip(default.hooks.targets, v5.hooks.targets, strict=True):
        assert torch.equal(a.term.tensor, b.term.tensor) and a.term.norm == b.term.norm


def test_hooks_guide_a_real_backward_pass(tiny_triple, tmp_path: Path) -> None:
    """On an image+text forward, each covered gradient becomes g̃(g, θ_R − θ_V); nothing else changes."""
    triple = tiny_triple("qwen2_vl")
    inputs = image_forward_inputs(triple.vlm)

    def grads(attach: bool) -> dict[str, torch.Tensor]:
        model = _load(tiny_triple, "qwen2_vl")
        if attach:
            prior = build_prior(
                triple.vlm, triple.reasoner, tmp_path / "f32.safetensors", PriorOptions(dtype=torch.float32, overwrite=True)
            )
            attach_drift(model, prior, variant="grad_norm")
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, guided = grads(False), grads(True)
    vlm, reasoner = load_dir(triple.vlm), load_dir(triple.reasoner)
    name = "model.language_model.layers.2.mlp.down_proj.weight"
    delta = reasoner["model.layers.2.mlp.down_proj.weight"] - vlm["model.layers.2.mlp.down_proj.weight"]
    torch.testing.assert_close(guided[name].double(), reference_guided(plain[name], delta, "grad_norm"), rtol=1e-4, atol=1e-6)
    changed = {n for n in plain if not torch.equal(plain[n], guided[n])}
    assert changed == {n for n in changed if ("self_attn" in n or ".mlp." in n) and "language_model" in n}
    assert len(changed) == len(covered_names(list(vlm)))


def test_prior_from_other_models_is_refused(tiny_triple, tmp_path: Path) -> None:
    """A LLaMA-decoder prior on a Qwen2-VL: the q/k/v biases have no prior; the error names them."""
    with pytest.raises(
        PriorMismatchError,
        match=r"12 covered parameters have no prior tensor: model\.language_model\.layers\.0\.self_attn\.q_proj\.bias",
    ):
        attach_drift(_load(tiny_triple, "qwen2_vl"), _prior(tiny_triple, tmp_path, "llava"))
    with pytest.raises(
        PriorMismatchError, match=r"prior tensors match no parameter of this model: layers\.0\.self_attn\.k_proj\.bias"
    ):
        attach_drift(_load(tiny_triple, "llava"), _prior(tiny_triple, tmp_path, "qwen2_vl"))


def test_prior_missing_covered_tensors_is_refused(tiny_triple, tmp_path: Path) -> None:
    partial = rewrite_prior(_prior(tiny_triple, tmp_path, "llava"), tmp_path / "partial.safetensors", drop="layers.3.")
    model = _load(tiny_triple, "llava")
    with pytest.raises(
        PriorMismatchError, match=r"7 covered parameters have no prior tensor: model\.language_model\.layers\.3\."
    ):
        attach_drift(model, partial)
    assert all(not p._backward_hooks for p in model.parameters())  # type: ignore[attr-defined]


def test_shape_mismatch_is_refused(tiny_triple, tmp_path: Path) -> None:
    wide = rewrite_prior(
        _prior(tiny_triple, tmp_path, "llava"), tmp_path / "wide.safetensors", reshape="layers.1.mlp.gate_proj.weight"
    )
    with pytest.raises(
        PriorMismatchError,
        match=r"1 shapes differ: model\.language_model\.layers\.1\.mlp\.gate_proj\.weight \[128, 64\] vs prior \[129, 64\]",
    ):
        attach_drift(_load(tiny_triple, "llava"), wide)


def test_modules_outside_the_prior_are_refused(tiny_triple, tmp_path: Path) -> None:
    with pytest.raises(PriorMismatchError, match="covers only attn,mlp"):
        attach_drift(_load(tiny_triple, "llava"), _prior(tiny_triple, tmp_path, "llava"), modules="attn,norm")


def test_module_subset_and_groups(tiny_triple, tmp_path: Path) -> None:
    prior = _prior(tiny_triple, tmp_path, "llava", modules=("attn", "mlp", "norm", "embed", "head"))
    model = _load(tiny_triple, "llava")
    assert attach_drift(model, prior, modules="attn").num_hooks == 16
    everything = attach_drift(_load(tiny_triple, "llava"), prior)
    assert everything.num_hooks == 16 + 12 + 8 + 3  # attn, mlp, block norms, final norm + embed + head


def test_frozen_decoder_is_refused_and_partial_freeze_reported(tiny_triple, tmp_path: Path) -> None:
    prior = _prior(tiny_triple, tmp_path, "llava")
    model = _load(tiny_triple, "llava")
    model.requires_grad_(False)
    with pytest.raises(DriftSetupError, match="none of the 28 covered decoder parameters requires grad"):
        attach_drift(model, prior)
    model = _load(tiny_triple, "llava")
    model.model.language_model.layers[0].requires_grad_(False)
    handle = attach_drift(model, prior)
    assert handle.num_hooks == 21 and len(handle.frozen) == 7


def test_remove_detaches(tiny_triple, tmp_path: Path) -> None:
    model = _load(tiny_triple, "llava")
    handle = attach_drift(model, _prior(tiny_triple, tmp_path, "llava"), delta_dtype=torch.bfloat16)
    assert handle.delta_dtypes == ("bfloat16",) and handle.delta_bytes > 0
    handle.remove()
    inputs = image_forward_inputs(tiny_triple("llava").vlm)
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert handle.guide.calls == 0


def test_auto_delta_dtype(tiny_triple, tmp_path: Path) -> None:
    """float32 beside CPU float32 parameters, bf16 otherwise (never fp16: Δ̂ would underflow)."""
    prior = _prior(tiny_triple, tmp_path, "llava")
    assert attach_drift(_load(tiny_triple, "llava"), prior).delta_dtypes == ("float32",)
    assert attach_drift(_load(tiny_triple, "llava").to(torch.bfloat16), prior).delta_dtypes == ("bfloat16",)
    assert attach_drift(_load(tiny_triple, "llava").to(torch.float16), prior).delta_dtypes == ("bfloat16",)

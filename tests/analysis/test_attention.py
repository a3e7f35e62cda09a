"""The attention probe against brute force: eager attention weights of every layer, per family."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from frankmerge.analysis import ProfileOptions, bundled_calibration_set, profile_vlm
from frankmerge.analysis.attention import PROBE_IMPLEMENTATION, AttentionProbe, ProbeTarget
from frankmerge.testbed.tiny import FAMILIES
from tests.analysis.reference import chat_inputs, eager_ratios

PROMPT = "describe the image"


def _images(count: int):  # type: ignore[no-untyped-def]
    return bundled_calibration_set().subset(count, seed=1)


def _image_token(vlm) -> int:  # type: ignore[no-untyped-def]
    config = tf.AutoConfig.from_pretrained(vlm)
    return config.image_token_id


@pytest.mark.parametrize("family", FAMILIES)
def test_probe_equals_eager_attention_weights(tiny_triple, family: str):
    vlm = tiny_triple(family).vlm
    images = _images(2)
    profile = profile_vlm(vlm, images, ProfileOptions(prompt=PROMPT, n_boot=10))
    token = _image_token(vlm)
    assert profile.model.image_token_id == token
    for row, image in zip(profile.per_image, images, strict=True):
        expected = eager_ratios(vlm, image.load(), PROMPT, token, "after_image", exclude_sink=False)
        assert row == pytest.approx(expected.numpy(), abs=1e-6)


@pytest.mark.parametrize(
    ("family", "query", "exclude_sink"),
    [("llava", "last", True), ("qwen2_5_vl", "last", False), ("mistral3", "after_image", True), ("qwen2_vl", "generated", False)],
)
def test_query_choices_and_sink_equal_eager(tiny_triple, family: str, query: str, exclude_sink: bool):
    vlm = tiny_triple(family).vlm
    images = _images(2)
    options = ProfileOptions(prompt=PROMPT, query=query, exclude_sink=exclude_sink, max_new_tokens=3, n_boot=10)
    profile = profile_vlm(vlm, images, options)
    token = _image_token(vlm)
    for row, image in zip(profile.per_image, images, strict=True):
        expected = eager_ratios(vlm, image.load(), PROMPT, token, query, exclude_sink, new_tokens=3)
        assert row == pytest.approx(expected.numpy(), abs=1e-6)
    ids = chat_inputs(vlm, images.images[0].load(), PROMPT)["input_ids"][0]
    after_image = ids.numel() - 1 - int((ids == token).nonzero().max())
    rows = profile.to_json()["images"]["mean_query_rows"]
    assert rows == {"generated": 3, "last": 1, "after_image": after_image}[query]


def test_probe_leaves_outputs_and_vision_tower_alone(tiny_triple):
    vlm = tiny_triple("qwen2_5_vl").vlm
    inputs = chat_inputs(vlm, _images(1).images[0].load(), PROMPT)
    plain = tf.AutoModelForImageTextToText.from_pretrained(vlm).eval()
    probed = tf.AutoModelForImageTextToText.from_pretrained(vlm).eval()
    probe = AttentionProbe(probed)
    probe.install()
    assert probed.config.get_text_config()._attn_implementation == PROBE_IMPLEMENTATION
    assert probed.config.vision_config._attn_implementation != PROBE_IMPLEMENTATION
    text_attention = {id(layer.self_attn) for layer in probed.get_decoder().layers}
    assert set(probe.layer_of) == text_attention
    visual = inputs["input_ids"][0] == _image_token(vlm)
    with torch.no_grad():
        expected = plain(**inputs).logits
        with probe.measure(ProbeTarget(visual, torch.tensor([visual.numel() - 1]), False)):
            got = probed(**inputs).logits
    assert torch.equal(got, expected)
    assert probe.sums().visual.shape == (probe.num_layers, probed.config.get_text_config().num_attention_heads)

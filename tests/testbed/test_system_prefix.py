"""A testbed whose conversations open with a default system turn (docs/testbed.md, "FRANK's premise").

The prefix must reach every stage's training inputs and every saved chat template (so evaluation,
profiling and the unmerged control read what the models were trained on), and a testbed without
one must keep its cache keys.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf

from frankmerge.testbed.trained.build import build_testbed
from frankmerge.testbed.trained.config import DEFAULT, QUICK, Stage
from frankmerge.testbed.trained.encode import Encoder
from frankmerge.testbed.trained.models import assemble_unmerged
from frankmerge.testbed.trained.tasks import perception
from frankmerge.testbed.trained.vocab import load_text_tokenizer
from frankmerge.testbed.trained.vocab import testbed_chat_template as chat_template_with

SYSTEM = ("the", "assistant", "describe", "a", "image", "the", "a", "cat")
PREFIX = ["<|im_start|>", "system", *SYSTEM, "<|im_end|>"]
MICRO = replace(
    QUICK,
    name="micro-prefix",
    system_prompt=SYSTEM,
    base=Stage(steps=4, lr=3e-3, warmup=2, batch=8, cot_mix=0.05),
    reasoner=Stage(steps=3, lr=1e-3, warmup=2, batch=8, text_mix=0.2),
    vlm_align=Stage(steps=3, lr=3e-3, warmup=2, batch=8, freeze_language_model=True),
    vlm=Stage(steps=3, lr=3e-4, warmup=2, batch=8, text_mix=0.2),
)


def test_keys_change_only_with_a_system_prompt() -> None:
    with_prefix = replace(DEFAULT, system_prompt=SYSTEM)
    for stage in DEFAULT.stages():
        assert replace(DEFAULT, system_prompt=()).stage_key(stage) == DEFAULT.stage_key(stage)
        assert with_prefix.stage_key(stage) != DEFAULT.stage_key(stage)
    assert "system" not in chat_template_with()


def test_an_explicit_system_turn_replaces_the_default() -> None:
    encoder = Encoder(chat_template_with(SYSTEM))
    assert encoder.tokenizer.convert_ids_to_tokens(encoder.prefix_ids) == PREFIX
    own = [{"role": "system", "content": "cat"}, {"role": "user", "content": "how many red ?"}]
    text = encoder.tokenizer.apply_chat_template(own, tokenize=False)
    assert text.count("system") == 1 and "describe" not in text


def _tokens(encoder: Encoder, ids: list[int]) -> list[str]:
    return encoder.tokenizer.convert_ids_to_tokens(ids)


def test_every_saved_model_and_the_control_carry_the_prefix(tmp_path: Path) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = build_testbed(MICRO, tmp_path / "models", workers=1)
    finally:
        torch.set_num_threads(previous)
    control = assemble_unmerged(models.vlm, models.reasoner, tmp_path / "control")
    example = perception(np.random.default_rng(0))
    for path in (models.vlm, models.vlm_align, control):
        processor = tf.AutoProcessor.from_pretrained(path)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example.prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = processor(text=[text], images=[example.image], return_tensors="pt")["input_ids"][0].tolist()
        encoder = Encoder(processor.tokenizer.chat_template)
        assert _tokens(encoder, ids)[: len(PREFIX)] == PREFIX, path
        assert ids == encoder.prompt_ids(example)  # what the model was trained on
    for path in (models.base, models.reasoner):
        tokenizer = load_text_tokenizer(path)
        text = tokenizer.apply_chat_template([{"role": "user", "content": "copy red"}], tokenize=False)
        assert text.startswith("<|im_start|>system\n" + " ".join(SYSTEM) + "<|im_end|>"), path


@pytest.mark.parametrize("system", [(), SYSTEM])
def test_uniform_attention_counts_the_prefix(system: tuple[str, ...]) -> None:
    from frankmerge.demo import PROFILE_PROMPT, uniform_attention_ratio

    plain, prefixed = uniform_attention_ratio(PROFILE_PROMPT), uniform_attention_ratio(PROFILE_PROMPT, system)
    assert (prefixed < plain) if system else (prefixed == plain)

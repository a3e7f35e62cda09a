"""Model configs and checkpoint I/O: Qwen2 text models and a LLaVA VLM whose language model is Qwen2.

The base and the reasoner are ``Qwen2ForCausalLM``; the VLM is ``LlavaForConditionalGeneration`` with
the same Qwen2 text config and a one-layer SigLIP vision tower (a per-patch embedding, one
token-mixing attention layer with its MLP) and LLaVA's two-layer projector: 16 visual tokens.
Every saved directory is an ordinary Hugging Face checkpoint with its tokenizer (and processor).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import transformers as tf

from frankmerge.testbed.tiny_tokenizers import BOS, EOS, IM_END, PAD
from frankmerge.testbed.trained.config import ModelSize
from frankmerge.testbed.trained.vocab import (
    IMAGE_PX,
    IMAGE_TOKEN,
    PATCH,
    VOCAB_SIZE,
    image_px,
    testbed_processor,
    testbed_tokenizer,
    testbed_vocab,
    visual_tokens,
)

MAX_POSITIONS = 128
MAX_NEW_TOKENS = 64  # the longest chain of thought is 37 tokens with the end token


def text_config_kwargs(size: ModelSize) -> dict[str, object]:
    vocab = testbed_vocab()
    return dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=MAX_POSITIONS,
        max_window_layers=size.layers,
        tie_word_embeddings=True,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[PAD],
    )


def text_config(size: ModelSize) -> tf.Qwen2Config:
    return tf.Qwen2Config(**text_config_kwargs(size))


def vlm_config(size: ModelSize, image_scale: int = 1) -> tf.LlavaConfig:
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=size.vision_hidden,
        intermediate_size=size.vision_intermediate,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads,
        image_size=image_px(image_scale),
        patch_size=PATCH,
        vision_use_head=False,
    )
    return tf.LlavaConfig(
        text_config={"model_type": "qwen2", **text_config_kwargs(size)},
        vision_config=vision,
        image_token_index=testbed_vocab()[IMAGE_TOKEN],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_seq_length=visual_tokens(image_scale),
        tie_word_embeddings=True,
    )


def seeded(build: type, config: tf.PretrainedConfig, seed: int) -> tf.PreTrainedModel:
    """Random init from ``seed`` without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build._from_config(config, dtype=torch.float32)


def new_base(size: ModelSize, seed: int) -> tf.Qwen2ForCausalLM:
    return seeded(tf.Qwen2ForCausalLM, text_config(size), seed)


def vlm_from_base(
    base: tf.Qwen2ForCausalLM, size: ModelSize, seed: int, image_scale: int = 1
) -> tf.LlavaForConditionalGeneration:
    """A fresh vision tower and projector on top of a copy of the base's language model."""
    vlm = seeded(tf.LlavaForConditionalGeneration, vlm_config(size, image_scale), seed)
    vlm.model.language_model.load_state_dict(base.model.state_dict())
    vlm.tie_weights()
    return vlm


def generation_config() -> tf.GenerationConfig:
    vocab = testbed_vocab()
    return tf.GenerationConfig(
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        bos_token_id=vocab[BOS],
        eos_token_id=[vocab[IM_END], vocab[EOS]],
        pad_token_id=vocab[PAD],
    )


def save_checkpoint(model: tf.PreTrainedModel, path: Path, system: tuple[str, ...] = ()) -> None:
    """Weights, config, generation config and tokenizer (plus processor for the VLM), whose chat
    template opens with the ``system`` turn the model was trained with."""
    model.generation_config = generation_config()
    model.save_pretrained(path)
    if isinstance(model, tf.LlavaForConditionalGeneration):
        testbed_processor(system, image_scale_of(model.config)).save_pretrained(path)
    else:
        testbed_tokenizer(system).save_pretrained(path)


def image_scale_of(config: tf.PretrainedConfig) -> int:
    """The testbed image layout of a model config: 1 for text models and 32-px VLMs."""
    vision = getattr(config, "vision_config", None)
    return 1 if vision is None else int(vision.image_size) // IMAGE_PX


# What a saved testbed processor or tokenizer consists of.
FRONTEND_FILES = ("chat_template.jinja", "processor_config.json", "tokenizer.json", "tokenizer_config.json")


def load_model(path: Path) -> tf.PreTrainedModel:
    """A testbed (or merged) checkpoint through the Auto classes, as a user would load it."""
    config = tf.AutoConfig.from_pretrained(path)
    auto = tf.AutoModelForImageTextToText if hasattr(config, "vision_config") else tf.AutoModelForCausalLM
    return auto.from_pretrained(path, dtype=torch.float32).eval()


def assemble_unmerged(vlm_dir: Path, reasoner_dir: Path, out: Path) -> Path:
    """Control: the reasoner's whole language model (embeddings, blocks, norm) under the VLM's vision
    tower and projector, with the VLM's own processor files (its chat template, as a merge keeps)."""
    vlm = load_model(vlm_dir)
    reasoner = load_model(reasoner_dir)
    vlm.model.language_model.load_state_dict(reasoner.model.state_dict())
    vlm.tie_weights()
    save_checkpoint(vlm, out)
    for name in FRONTEND_FILES:
        if (vlm_dir / name).is_file():
            shutil.copy2(vlm_dir / name, out / name)
    return out

"""Tiny homologous (VLM, reasoner, base) checkpoint triples, built offline from configs.

The merge test-suite needs real on-disk checkpoints whose text decoders share per-layer names
and shapes, carry known and distinguishable deltas from a common base, and come in every save
layout a merger must accept (default `save_pretrained`, legacy hub names, v5 in-memory names).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import transformers as tf
from safetensors.torch import load_file, save_file

from frankmerge.testbed.tiny_tokenizers import THINK_CLOSE, THINK_OPEN, build_vocab, chat_template, make_tokenizer

TEXT_VOCAB = 512
N_LAYERS = 4
TEXT_DIMS: Mapping[str, object] = MappingProxyType(
    dict(
        vocab_size=TEXT_VOCAB,
        hidden_size=64,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
)
VISION_DIMS: Mapping[str, object] = MappingProxyType(
    dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
)
LAYOUTS: tuple[str, ...] = ("default", "hub", "v5")
NON_LAYER_SCALE: Mapping[str, float] = MappingProxyType({"reasoner": 0.01, "vlm": 0.015})
SHARD_SIZE = "200KB"
PROMPT = "describe the image"

ProcessorFactory = Callable[[tf.PreTrainedTokenizerFast, str], tf.ProcessorMixin]


def reasoner_delta_scale(layer: int, n_layers: int = N_LAYERS) -> float:
    """RMS of the reasoner's delta in decoder block `layer`: grows with depth."""
    return 0.02 * (layer + 1)


def vlm_delta_scale(layer: int, n_layers: int = N_LAYERS) -> float:
    """RMS of the VLM decoder's delta in block `layer`: shrinks with depth (opposite of the reasoner)."""
    return 0.02 * (n_layers - layer)


DELTA_SCALES: Mapping[str, Callable[[int, int], float]] = MappingProxyType(
    {"reasoner": reasoner_delta_scale, "vlm": vlm_delta_scale}
)


@dataclass(frozen=True)
class TinyTriple:
    vlm: Path
    reasoner: Path
    base: Path
    family: str


@dataclass(frozen=True)
class FamilySpec:
    """Everything that differs between VLM families; the build code itself is family-agnostic."""

    vlm_type: str
    text_type: str  # model_type of the matching text LLM
    vlm_text_type: str  # text_config.model_type inside the VLM
    vision: Mapping[str, object]
    token_keys: Mapping[str, str]  # VLM config key -> token string; ids come from the shared vocab
    named_tokens: Mapping[str, str]  # tokenizer attributes the processor reads
    image_placeholder: str  # what the chat template renders for an image part
    image_px: int
    make_processor: ProcessorFactory
    tied: bool = False
    extra_tokens: tuple[str, ...] = ()
    text_extra: Mapping[str, object] = field(default_factory=dict)  # VLM text_config and LLM
    vlm_text_extra: Mapping[str, object] = field(default_factory=dict)  # VLM text_config only
    vlm_extra: Mapping[str, object] = field(default_factory=dict)  # VLM top level
    hub_renames: tuple[tuple[str, str], ...] = ()  # default -> legacy hub tensor names


# Processor factories: image sizes here must agree with the vision configs in SPECS, or the
# number of expanded image tokens will not match the number of image features.
_PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]


def _qwen_vl(processor: str, video: str, patch: int, px: int) -> ProcessorFactory:
    def build(tok: tf.PreTrainedTokenizerFast, template: str) -> tf.ProcessorMixin:
        common = dict(patch_size=patch, merge_size=2, temporal_patch_size=2)
        size = {"shortest_edge": px * px, "longest_edge": px * px}
        return getattr(tf, processor)(
            image_processor=tf.Qwen2VLImageProcessor(size=size, **common),
            video_processor=getattr(tf, video)(size={**size, "longest_edge": 4 * px * px}, **common),
            tokenizer=tok,
            chat_template=template,
        )

    return build


def _llava(processor: str, image: str, px: int, **image_kw: object) -> ProcessorFactory:
    def build(tok: tf.PreTrainedTokenizerFast, template: str) -> tf.ProcessorMixin:
        ip = getattr(tf, image)(size={"shortest_edge": px}, crop_size={"height": px, "width": px}, **image_kw)
        return getattr(tf, processor)(
            image_processor=ip,
            tokenizer=tok,
            patch_size=14,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=template,
        )

    return build


def _onevision(tok: tf.PreTrainedTokenizerFast, template: str) -> tf.ProcessorMixin:
    size = {"height": 28, "width": 28}
    return tf.LlavaOnevisionProcessor(
        image_processor=tf.LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=_PINPOINTS),
        video_processor=tf.LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tok,
        num_image_tokens=4,
        vision_feature_select_strategy="full",
        chat_template=template,
    )


def _idefics3(tok: tf.PreTrainedTokenizerFast, template: str) -> tf.ProcessorMixin:
    ip = tf.Idefics3ImageProcessor(size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False)
    return tf.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=template)


def _smolvlm(tok: tf.PreTrainedTokenizerFast, template: str) -> tf.ProcessorMixin:
    """SmolVLM's processor needs the ``num2words`` package (a test dependency)."""
    ip = tf.SmolVLMImageProcessor(size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False)
    video = tf.SmolVLMVideoProcessor(size={"longest_edge": 32}, max_image_size={"longest_edge": 32})
    return tf.SmolVLMProcessor(image_processor=ip, video_processor=video, tokenizer=tok, image_seq_len=4, chat_template=template)


def _internvl(tok: tf.PreTrainedTokenizerFast, template: str) -> tf.ProcessorMixin:
    size = {"height": 56, "width": 56}
    return tf.InternVLProcessor(
        image_processor=tf.GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        video_processor=tf.InternVLVideoProcessor(size=size),
        tokenizer=tok,
        image_seq_length=4,
        chat_template=template,
    )


def _pixtral(tok: tf.PreTrainedTokenizerFast, template: str) -> tf.ProcessorMixin:
    ip = tf.PixtralImageProcessor(size={"longest_edge": 56}, patch_size={"height": 14, "width": 14})
    return tf.PixtralProcessor(image_processor=ip, tokenizer=tok, patch_size=14, spatial_merge_size=2, chat_template=template)


def _gemma3(tok: tf.PreTrainedTokenizerFast, template: str) -> tf.ProcessorMixin:
    ip = tf.Gemma3ImageProcessor(size={"height": 32, "width": 32})
    return tf.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=4, chat_template=template)


_QWEN_TOKENS = MappingProxyType(
    {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
)
_QWEN_NAMED = MappingProxyType({"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
_MROPE = {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}}
_QWEN2_WINDOW = {"max_window_layers": N_LAYERS}  # VLM text and Qwen2 defaults differ; keep configs equal
_LLAVA_NAMED = MappingProxyType({"image_token": "<image>"})
_CLIP = {**VISION_DIMS, "image_size": 28, "patch_size": 14, "projection_dim": 32}
_SIGLIP = {"model_type": "siglip_vision_model", **VISION_DIMS, "vision_use_head": False}  # as real checkpoints
_SIGLIP_PREFIX = ((r"^vision_tower\.", "vision_tower.vision_model."),)
_IDEFICS3_GRID = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))

_IDEFICS3 = FamilySpec(
    "idefics3",
    "llama",
    "llama",
    vision={**VISION_DIMS, "image_size": 32, "patch_size": 8},
    token_keys={"image_token_id": "<image>"},
    named_tokens={},
    extra_tokens=("<image>", "<fake_token_around_image>", "<end_of_utterance>", "<global-img>", *_IDEFICS3_GRID),
    image_placeholder="<image>",
    image_px=32,
    make_processor=_idefics3,
    vlm_extra={"scale_factor": 2},
)

SPECS: Mapping[str, FamilySpec] = MappingProxyType(
    {
        "qwen2_vl": FamilySpec(
            "qwen2_vl",
            "qwen2",
            "qwen2_vl_text",
            vision=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14),
            token_keys=_QWEN_TOKENS,
            named_tokens=_QWEN_NAMED,
            image_placeholder=_QWEN_IMAGE,
            image_px=56,
            make_processor=_qwen_vl("Qwen2VLProcessor", "Qwen2VLVideoProcessor", 14, 56),
            text_extra=_QWEN2_WINDOW,
            vlm_text_extra=_MROPE,
        ),
        "qwen2_5_vl": FamilySpec(
            "qwen2_5_vl",
            "qwen2",
            "qwen2_5_vl_text",
            vision=dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=64,
                patch_size=14,
                window_size=56,
                fullatt_block_indexes=[1],
            ),
            token_keys=_QWEN_TOKENS,
            named_tokens=_QWEN_NAMED,
            image_placeholder=_QWEN_IMAGE,
            image_px=56,
            make_processor=_qwen_vl("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor", 14, 56),
            text_extra=_QWEN2_WINDOW,
            vlm_text_extra=_MROPE,
        ),
        "qwen3_vl": FamilySpec(
            "qwen3_vl",
            "qwen3",
            "qwen3_vl_text",
            vision=dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=64,
                patch_size=16,
                num_position_embeddings=16,
                deepstack_visual_indexes=[1],
            ),
            token_keys=_QWEN_TOKENS,
            named_tokens=_QWEN_NAMED,
            image_placeholder=_QWEN_IMAGE,
            image_px=64,
            make_processor=_qwen_vl("Qwen3VLProcessor", "Qwen3VLVideoProcessor", 16, 64),
            vlm_text_extra={"rope_parameters": {**_MROPE["rope_parameters"], "mrope_interleaved": True}},
        ),
        "llava": FamilySpec(
            "llava",
            "llama",
            "llama",
            vision={"model_type": "clip_vision_model", **_CLIP},
            token_keys={"image_token_index": "<image>"},
            named_tokens=_LLAVA_NAMED,
            image_placeholder="<image>",
            image_px=28,
            make_processor=_llava("LlavaProcessor", "CLIPImageProcessor", 28),
            vlm_extra={"image_seq_length": 4},
            hub_renames=_SIGLIP_PREFIX,
        ),
        "llava_next": FamilySpec(
            "llava_next",
            "mistral",
            "mistral",
            vision={"model_type": "clip_vision_model", **_CLIP},
            token_keys={"image_token_index": "<image>"},
            named_tokens=_LLAVA_NAMED,
            image_placeholder="<image>",
            image_px=28,
            make_processor=_llava("LlavaNextProcessor", "LlavaNextImageProcessor", 28, image_grid_pinpoints=_PINPOINTS),
            vlm_extra={"image_seq_length": 4, "image_grid_pinpoints": _PINPOINTS},
            hub_renames=_SIGLIP_PREFIX,
        ),
        "llava_onevision": FamilySpec(
            "llava_onevision",
            "qwen2",
            "qwen2",
            vision={**_SIGLIP, "image_size": 28, "patch_size": 14},
            token_keys={"image_token_index": "<image>", "video_token_index": "<video>"},
            named_tokens={"image_token": "<image>", "video_token": "<video>"},
            image_placeholder="<image>",
            image_px=28,
            make_processor=_onevision,
            vlm_extra={"image_grid_pinpoints": _PINPOINTS},
            hub_renames=_SIGLIP_PREFIX,
        ),
        "idefics3": _IDEFICS3,
        # SmolVLM is Idefics3's architecture under another model type and processor.
        "smolvlm": replace(_IDEFICS3, vlm_type="smolvlm", make_processor=_smolvlm),
        "internvl": FamilySpec(
            "internvl",
            "qwen2",
            "qwen2",
            vision={**VISION_DIMS, "image_size": [56, 56], "patch_size": [14, 14]},
            token_keys={"image_token_id": "<IMG_CONTEXT>"},
            named_tokens={
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            },
            image_placeholder="<IMG_CONTEXT>",
            image_px=56,
            make_processor=_internvl,
            tied=True,
            vlm_extra={"image_seq_length": 4},
        ),
        "mistral3": FamilySpec(
            "mistral3",
            "mistral",
            "mistral",
            vision={**VISION_DIMS, "head_dim": 16, "image_size": 56, "patch_size": 14},
            token_keys={"image_token_index": "[IMG]"},
            named_tokens={},
            extra_tokens=("[IMG]", "[IMG_BREAK]", "[IMG_END]"),
            image_placeholder="[IMG]",
            image_px=56,
            make_processor=_pixtral,
            tied=True,
            vlm_extra={"spatial_merge_size": 2, "vision_feature_layer": -1},
        ),
        "gemma3": FamilySpec(
            "gemma3",
            "gemma3_text",
            "gemma3_text",
            vision={**_SIGLIP, "image_size": 32, "patch_size": 8},
            token_keys={
                "image_token_index": "<image_soft_token>",
                "boi_token_index": "<start_of_image>",
                "eoi_token_index": "<end_of_image>",
            },
            named_tokens={
                "image_token": "<image_soft_token>",
                "boi_token": "<start_of_image>",
                "eoi_token": "<end_of_image>",
            },
            image_placeholder="<start_of_image>",
            image_px=32,
            make_processor=_gemma3,
            tied=True,
            text_extra={
                "query_pre_attn_scalar": 16,
                "sliding_window": 32,
                "layer_types": ["sliding_attention"] * (N_LAYERS - 1) + ["full_attention"],
            },
            vlm_extra={"mm_tokens_per_image": 4},
            hub_renames=_SIGLIP_PREFIX,
        ),
    }
)
FAMILIES: tuple[str, ...] = tuple(SPECS)

_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


def _family_vocab(spec: FamilySpec) -> dict[str, int]:
    tokens = [*spec.token_keys.values(), *spec.named_tokens.values(), *spec.extra_tokens]
    return build_vocab(tokens, TEXT_VOCAB)


def _text_config(spec: FamilySpec) -> tf.PretrainedConfig:
    return tf.AutoConfig.for_model(spec.text_type, **TEXT_DIMS, **spec.text_extra, tie_word_embeddings=spec.tied)


def _vlm_config(spec: FamilySpec, vocab: Mapping[str, int], extra_vocab: int) -> tf.PretrainedConfig:
    """Text dims match the LLM's exactly; tying is written at the top level because only it counts."""
    text = {
        "model_type": spec.vlm_text_type,
        **TEXT_DIMS,
        **spec.text_extra,
        **spec.vlm_text_extra,
        "vocab_size": TEXT_VOCAB + extra_vocab,
        "tie_word_embeddings": spec.tied,
    }
    ids = {key: vocab[token] for key, token in spec.token_keys.items()}
    return tf.AutoConfig.for_model(
        spec.vlm_type,
        text_config=text,
        vision_config=dict(spec.vision),
        tie_word_embeddings=spec.tied,
        **ids,
        **spec.vlm_extra,
    )


def _seeded(auto_cls: type, config: tf.PretrainedConfig, seed: int) -> tf.PreTrainedModel:
    """Random init from `seed` without disturbing the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return auto_cls.from_config(config, dtype=torch.float32).eval()


def _perturbed(base: Mapping[str, torch.Tensor], role: str, seed: int) -> dict[str, torch.Tensor]:
    """base + Gaussian delta whose RMS encodes the role's per-block scale pattern."""
    gen = torch.Generator().manual_seed(seed * 7919 + (1 if role == "reasoner" else 2))
    out = {}
    for name, value in base.items():
        m = _LAYER_RE.search(name)
        scale = DELTA_SCALES[role](int(m.group(1)), N_LAYERS) if m else NON_LAYER_SCALE[role]
        out[name] = value + torch.randn(value.shape, generator=gen) * scale
    return out


def _text_params(model: tf.PreTrainedModel) -> dict[str, torch.Tensor]:
    """Unique parameters (a tied lm_head appears once, as the embedding)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _set_params(model: torch.nn.Module, values: Mapping[str, torch.Tensor]) -> None:
    """Copy into leading rows, so a larger VLM vocab keeps its own extra rows."""
    with torch.no_grad():
        for name, value in values.items():
            target = model.get_parameter(name)
            target[tuple(slice(0, s) for s in value.shape)].copy_(value)


def _vlm_text_targets(vlm: tf.PreTrainedModel, names: list[str]) -> dict[str, str]:
    """Map CausalLM parameter names onto the VLM's, via the decoder module's own prefix."""
    decoder = vlm.get_decoder()
    prefix = next(n for n, m in vlm.named_modules() if m is decoder)
    head = next(n for n, m in vlm.named_modules() if m is vlm.get_output_embeddings())
    return {n: f"{head}.weight" if n == "lm_head.weight" else f"{prefix}.{n.removeprefix('model.')}" for n in names}


def _rename_tensors(path: Path, renames: tuple[tuple[str, str], ...]) -> None:
    """Rewrite safetensors files (and the index) with legacy hub tensor names."""

    def rename(key: str) -> str:
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        return key

    for file in sorted(path.glob("*.safetensors")):
        tensors = load_file(file)
        save_file({rename(k): v for k, v in tensors.items()}, file, metadata={"format": "pt"})
    index = path / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {rename(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _save_model(model: tf.PreTrainedModel, path: Path, dtype: torch.dtype, sharded: bool, v5: bool) -> None:
    """Sub-configs get the dtype too: `to()` only updates the top-level config."""
    for name in getattr(model.config, "sub_configs", {}):
        getattr(model.config, name).dtype = dtype
    model.to(dtype).save_pretrained(path, max_shard_size=SHARD_SIZE if sharded else "50GB", save_original_format=not v5)


def build_tiny_triple(
    root: Path,
    family: str,
    *,
    layout: str = "default",
    sharded: bool = False,
    seed: int = 0,
    vlm_extra_vocab: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TinyTriple:
    """Write base, reasoner (= base + rising per-block delta) and VLM (decoder = base + falling delta).

    Layouts name the VLM's tensors: "default" = plain `save_pretrained`, "hub" = legacy hub names
    (adds the `vision_tower.vision_model.` infix where hub checkpoints have it; otherwise equal to
    default), "v5" = in-memory names. Text LLMs always use their only layout, `model.layers.*`.
    """
    if family not in SPECS:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    spec, root = SPECS[family], Path(root)
    triple = TinyTriple(vlm=root / "vlm", reasoner=root / "reasoner", base=root / "base", family=family)
    vocab = _family_vocab(spec)

    llm = _seeded(tf.AutoModelForCausalLM, _text_config(spec), seed)
    base = _text_params(llm)
    _save_model(llm, triple.base, dtype, sharded, v5=False)
    make_tokenizer(vocab, template=chat_template()).save_pretrained(triple.base)

    llm.to(torch.float32)  # every parameter is overwritten, so the dtype round trip loses nothing
    _set_params(llm, _perturbed(base, "reasoner", seed))
    _save_model(llm, triple.reasoner, dtype, sharded, v5=False)
    make_tokenizer(
        vocab, added_tokens=(THINK_OPEN, THINK_CLOSE), template=chat_template(generation_prefix=THINK_OPEN + "\n")
    ).save_pretrained(triple.reasoner)

    vlm = _seeded(tf.AutoModelForImageTextToText, _vlm_config(spec, vocab, vlm_extra_vocab), seed + 1)
    targets = _vlm_text_targets(vlm, list(base))
    _set_params(vlm, {targets[n]: v for n, v in _perturbed(base, "vlm", seed).items()})
    _save_model(vlm, triple.vlm, dtype, sharded, v5=layout == "v5")
    if layout == "hub" and spec.hub_renames:
        _rename_tensors(triple.vlm, spec.hub_renames)
    _vlm_processor(spec, vocab).save_pretrained(triple.vlm)
    return triple


def _vlm_processor(spec: FamilySpec, vocab: Mapping[str, int]) -> tf.ProcessorMixin:
    template = chat_template(image_placeholder=spec.image_placeholder)
    tok = make_tokenizer(
        vocab,
        named_specials=spec.named_tokens,
        extra_specials=[*spec.token_keys.values(), *spec.extra_tokens],
        template=template,
    )
    return spec.make_processor(tok, template)


def family_of(vlm_dir: Path) -> str:
    """Family name from a saved VLM's config.json (family names equal model types)."""
    model_type = json.loads((Path(vlm_dir) / "config.json").read_text())["model_type"]
    if model_type not in SPECS:
        raise ValueError(f"{vlm_dir} holds unsupported model_type {model_type!r}")
    return model_type


def image_forward_inputs(vlm_dir: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """One chat-formatted prompt with one small random image, run through the saved processor.

    Floating tensors (pixel values) are cast to `dtype` when given, e.g. for a bfloat16 VLM.
    """
    spec = SPECS[family_of(vlm_dir)]
    processor = tf.AutoProcessor.from_pretrained(vlm_dir)
    image = np.random.default_rng(0).integers(0, 256, (spec.image_px, spec.image_px, 3), dtype=np.uint8)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    return {
        k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
        for k, v in inputs.items()
        if isinstance(v, torch.Tensor)
    }

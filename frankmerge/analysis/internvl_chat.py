"""Run an InternVL2.5 / InternVL2 chat checkpoint through transformers' own InternVL model.

The chat checkpoints (``InternVLChatModel``) ship their modelling code, but their architecture is
the one transformers implements natively as ``InternVLForConditionalGeneration`` (InternViT, the
``mlp1`` projector, pixel-shuffle downsampling, a Qwen2 or Llama LLM). So profiling them needs no
remote code: the config is translated, the tensors are renamed as transformers' own converter
(``convert_internvl_weights_to_hf.py``) renames them (InternViT's fused ``attn.qkv`` split into
q/k/v), and the prompt is built as the checkpoint's ``chat()`` builds it, with the
``internvl2_5`` template and ``<img>`` + ``<IMG_CONTEXT>`` × 256 + ``</img>`` per 448-px tile.

One tile per image (the image resized to ``force_image_size``): ``chat()`` would add up to 12
tiles plus a thumbnail, which changes the number of visual tokens but not what a_l measures.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frankmerge.analysis.errors import ProfileError
from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.errors import one_line

IMAGE_CONTEXT = "<IMG_CONTEXT>"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SYSTEM_MESSAGE = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
SUPPORTED_LLMS = ("Qwen2ForCausalLM", "LlamaForCausalLM", "InternLM2ForCausalLM")  # InternLM2 runs as Llama

# InternViT names -> transformers' InternVLVision names, applied in order (as the converter does).
_VISION_RENAMES = (
    (r"\.layers\.", ".layer."),
    (r"class_embedding", "cls_token"),
    (r"position_embedding$", "position_embeddings"),
    (r"patch_embedding\.", "patch_embeddings.projection."),
    (r"\.ls(\d)$", r".lambda_\1"),
    (r"attn\.proj\.", "attention.projection_layer."),
    (r"attn\.", "attention."),
    (r"norm1\.", "layernorm_before."),
    (r"norm2\.", "layernorm_after."),
)
# InternLM2 names (after ``language_model.model.``) -> Llama names; ``attention.wqkv`` is split.
_INTERNLM2_RENAMES = (
    ("tok_embeddings.", "embed_tokens."),
    (".attention.wo.", ".self_attn.o_proj."),
    (".feed_forward.w1.", ".mlp.gate_proj."),
    (".feed_forward.w3.", ".mlp.up_proj."),
    (".feed_forward.w2.", ".mlp.down_proj."),
    (".attention_norm.", ".input_layernorm."),
    (".ffn_norm.", ".post_attention_layernorm."),
)
_PROJECTOR = {"mlp1.0.": "layer_norm.", "mlp1.1.": "linear_1.", "mlp1.3.": "linear_2."}
# InternViT config keys -> InternVLVisionConfig keys.
_VISION_KEYS = {"qkv_bias": "attention_bias", "qk_normalization": "use_qk_norm"}


def is_internvl_chat(raw: dict[str, Any]) -> bool:
    return raw.get("model_type") == "internvl_chat"


# ``who`` in the functions below names the checkpoint as the user gave it, flag included
# ("--vlm PATH" for profile, "--model PATH" for eval): every error message starts with it.


def check_runnable(raw: dict[str, Any], who: str) -> str:
    """The chat checkpoint's LLM architecture, if transformers' InternVL can run it."""
    architecture = ((raw.get("llm_config") or {}).get("architectures") or ["?"])[0]
    if architecture not in SUPPORTED_LLMS:
        raise ProfileError(
            f"{who}: running InternVL chat checkpoints with a {architecture} language model is not supported "
            f"(supported: {', '.join(SUPPORTED_LLMS)}); for a merge's prior, choose --alpha by hand"
        )
    return architecture


def native_config(raw: dict[str, Any], image_token_id: int, who: str) -> Any:
    """The ``InternVLConfig`` equivalent to a chat checkpoint's ``config.json``."""
    from transformers import InternVLConfig, InternVLVisionConfig, LlamaConfig, Qwen2Config

    llm = dict(raw.get("llm_config") or {})
    architecture = check_runnable(raw, who)
    text_class = Qwen2Config if architecture == "Qwen2ForCausalLM" else LlamaConfig
    if architecture == "InternLM2ForCausalLM":  # one bias flag for wqkv and wo, as Llama's attention_bias
        llm["attention_bias"] = bool(llm.pop("bias", False))
    text = text_class(**_known_keys(llm, text_class))
    vision_raw = dict(raw.get("vision_config") or {})
    for old, new in _VISION_KEYS.items():
        if old in vision_raw:
            vision_raw[new] = vision_raw.pop(old)
    vision_raw["use_absolute_position_embeddings"] = True
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size") if k not in vision_raw]
    if missing:
        raise ProfileError(f"{who}: vision_config lacks {', '.join(missing)}; the checkpoint's config.json is incomplete")
    vision = InternVLVisionConfig(**_known_keys(vision_raw, InternVLVisionConfig))
    config = InternVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=image_token_id,
        downsample_ratio=float(raw.get("downsample_ratio", 0.5)),
        vision_feature_layer=int(raw.get("select_layer", -1)),
        image_seq_length=num_image_tokens(raw),
    )
    config.tie_word_embeddings = False  # InternVLChatConfig forces untied embeddings
    return config


# Read by the config classes' constructors but folded into ``rope_parameters`` by ``to_dict``.
_CONSTRUCTOR_KEYS = {"rope_theta", "rope_scaling", "rope_parameters"}


def _known_keys(values: dict[str, Any], config_class: type) -> dict[str, Any]:
    known = set(config_class().to_dict()) | _CONSTRUCTOR_KEYS
    return {
        k: v
        for k, v in values.items()
        if k in known and k not in ("architectures", "model_type", "auto_map", "transformers_version")
    }


def num_image_tokens(raw: dict[str, Any]) -> int:
    """Visual tokens per tile: (image size / patch size)² × downsample ratio² (256 for 448 px)."""
    vision = raw.get("vision_config") or {}
    size = int(raw.get("force_image_size") or vision.get("image_size", 448))
    patch = int(vision.get("patch_size", 14))
    return int((size // patch) ** 2 * float(raw.get("downsample_ratio", 0.5)) ** 2)


def native_name(name: str) -> str:
    """A chat checkpoint's tensor name in ``InternVLForConditionalGeneration``'s state dict."""
    if name.startswith("vision_model."):
        rest = name.removeprefix("vision_model.")
        for pattern, replacement in _VISION_RENAMES:
            rest = re.sub(pattern, replacement, rest)
        return "model.vision_tower." + rest
    for old, new in _PROJECTOR.items():
        if name.startswith(old):
            return "model.multi_modal_projector." + new + name.removeprefix(old)
    if name in ("language_model.lm_head.weight", "language_model.output.weight"):
        return "lm_head.weight"
    if name.startswith("language_model.model."):
        rest = name.removeprefix("language_model.model.")
        for old, new in _INTERNLM2_RENAMES:
            rest = rest.replace(old, new)
        return "model.language_model." + rest
    raise ProfileError(f"tensor {name!r} is not part of an InternVL chat checkpoint's layout")


def native_state(checkpoint: Checkpoint, config: Any) -> dict[str, torch.Tensor]:
    """All tensors under their native names, as views of the files (nothing is copied here)."""
    vision_hidden = config.vision_config.hidden_size
    text = config.text_config
    state: dict[str, torch.Tensor] = {}
    for name in checkpoint.names():
        info = checkpoint.info(name)
        tensor = checkpoint.read_chunk(name, 0, info.numel).reshape(info.shape)
        new = native_name(name)
        if ".attention.wqkv." in new:
            state.update(_split_wqkv(new, tensor, text.num_key_value_heads, text.num_attention_heads, text.head_dim))
        elif ".attention.qkv." in new:  # InternViT's fused q/k/v: rows [q; k; v], each vision_hidden wide
            for index, part in enumerate(("q_proj", "k_proj", "v_proj")):
                state[new.replace("qkv", part)] = tensor[index * vision_hidden : (index + 1) * vision_hidden]
        else:
            state[new] = tensor
    return state


def _split_wqkv(name: str, fused: torch.Tensor, kv_heads: int, heads: int, head_dim: int) -> dict[str, torch.Tensor]:
    """InternLM2's ``wqkv``: per KV head, its query heads' rows, then its key rows, then its value rows."""
    groups = fused.reshape(kv_heads, heads // kv_heads + 2, head_dim, *fused.shape[1:])
    flat = (-1, *fused.shape[1:])
    base = name.replace(".attention.wqkv.", ".self_attn.{}.")
    return {
        base.format("q_proj"): groups[:, :-2].reshape(flat),
        base.format("k_proj"): groups[:, -2].reshape(flat),
        base.format("v_proj"): groups[:, -1].reshape(flat),
    }


def load_native(weights: Checkpoint, raw: dict[str, Any], image_token_id: int, who: str, **kwargs: Any) -> Any:
    """``InternVLForConditionalGeneration`` holding a chat checkpoint's weights, in eval mode.

    ``kwargs`` go to ``from_pretrained`` (``dtype``, ``device_map``). The tensors are views of the
    checkpoint's copy-on-write mappings, so on the CPU in the stored dtype the weights stay in the
    page cache, as with transformers' own safetensors loading.
    """
    from transformers import InternVLForConditionalGeneration

    config = native_config(raw, image_token_id, who)
    state = native_state(weights, config)
    expected = _expected_names(InternVLForConditionalGeneration, config)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ProfileError(
            f"{who}: its tensors do not match transformers' InternVL model "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); is this an InternVL2.5/InternVL2 chat checkpoint?"
        )
    if kwargs.get("dtype", "auto") == "auto":  # the stored dtype, as from_pretrained's "auto" would read it
        kwargs["dtype"] = weights.info(weights.names()[0]).dtype.torch
    model = InternVLForConditionalGeneration.from_pretrained(None, config=config, state_dict=state, **kwargs)
    return model.eval()


def _expected_names(model_class: type, config: Any) -> set[str]:
    with torch.device("meta"):
        return set(model_class(config).state_dict())


# The internvl2_5 conversation template (MPT style) with image parts as ``<image>`` placeholders,
# which ``ChatProcessor`` expands into ``<img>`` + ``<IMG_CONTEXT>`` × tokens + ``</img>``, as the
# checkpoints' ``chat()`` builds its prompts.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '" + SYSTEM_MESSAGE + "' %}{% endif %}"
    "{{ '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
IMAGE_PLACEHOLDER = "<image>"


class ChatProcessor:
    """The processor InternVL chat checkpoints do not ship, with the interface profile and eval use.

    ``apply_chat_template`` renders the internvl2_5 template (or a given one) with ``<image>``
    placeholders; calling it expands each into the image's tokens and adds one tile per image.
    """

    def __init__(self, path: Path, raw: dict[str, Any], who: str) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # it reads config.json and warns that internvl_chat is no tokenizer's model type
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        except Exception as exc:  # transformers raises OSError, ValueError for missing/odd files
            hint = (
                "its tokenizer is remote code (InternLM2's tokenization_internlm2.py), which frankmerge does not run; "
                "save the tokenizer as a fast tokenizer.json next to it, or choose --alpha by hand"
                if not (path / "tokenizer.json").is_file() and (path / "tokenizer.model").is_file()
                else f"cannot load its tokenizer without remote code ({type(exc).__name__}: {one_line(exc)})"
            )
            raise ProfileError(f"{who}: {hint}") from exc
        finally:
            hf_logging.set_verbosity(verbosity)
        self.image_token_id = image_context_id(self.tokenizer, who)
        self.size = int(raw.get("force_image_size") or (raw.get("vision_config") or {}).get("image_size", 448))
        self.tokens = num_image_tokens(raw)
        self.chat_template = CHAT_TEMPLATE

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        kwargs.setdefault("chat_template", self.chat_template)
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def pixel_values(self, image: Any) -> torch.Tensor:
        """One tile: RGB, resized (bicubic) to the model's image size, ImageNet-normalised."""
        from PIL import Image

        tile = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        array = (np.asarray(tile, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1)[None]

    def __call__(self, text: list[str], images: list[Any] | None = None, **kwargs: Any) -> Any:
        """Tokens and tiles; ``images`` as transformers' processors take them: one list per prompt, or flat in order."""
        counts = [t.count(IMAGE_PLACEHOLDER) for t in text]
        nested = bool(images) and isinstance(images[0], (list, tuple))  # type: ignore[index]
        flat = [image for row in images for image in row] if nested else list(images or [])  # type: ignore[union-attr]
        given = [len(row) for row in images] if nested else [len(flat)]  # type: ignore[union-attr]
        if (counts if nested else [sum(counts)]) != given:
            raise ProfileError(f"prompts hold {counts} image placeholders but {given} images were given")
        image_text = "<img>" + IMAGE_CONTEXT * self.tokens + "</img>"
        expanded = [t.replace(IMAGE_PLACEHOLDER, image_text) for t in text]
        batch = self.tokenizer(expanded, padding=True, return_tensors="pt", add_special_tokens=False)
        if flat:
            batch["pixel_values"] = torch.cat([self.pixel_values(image) for image in flat])
        return batch


def image_context_id(tokenizer: Any, who: str) -> int:
    token = tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT)
    if not isinstance(token, int) or token == tokenizer.unk_token_id:
        raise ProfileError(f"{who}: its tokenizer has no {IMAGE_CONTEXT} token; is this an InternVL chat checkpoint?")
    return token

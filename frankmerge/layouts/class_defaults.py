"""The class defaults of the text-decoder configs the pair doctor compares, stored, so that a
merge's doctor reads configs without importing transformers (~1 s, and ~1 s more for AutoConfig).

A config.json leaves out what its class defaults: a Qwen2 config without ``rope_theta`` runs at
θ = 10000. transformers fills such gaps when it reads the config; ``filled_text`` does the same
from ``TABLE`` for the families listed there, including the few values the classes derive
(Qwen2's window switch and layer types, Gemma's alternating windows, RoPE's standard form). For
any other family, or a config this reading does not cover, it returns None and the caller asks
transformers. ``tests/test_config_routes.py`` checks the table against transformers' classes and
both readings against each other, so neither can drift unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClassDefaults:
    """One transformers config class: its defaults for the keys the doctor reads, and its rules."""

    fields: dict[str, Any]
    theta: float  # default_theta (Gemma3: the full-attention layers')
    local_theta: float | None = None  # Gemma3: the sliding layers' default θ
    # How the class fills ``layer_types`` when a config has none: "qwen" (sliding from
    # max_window_layers on, only with use_sliding_window), "alternate" (every n-th layer full).
    windows: str | None = None
    period: int | None = None  # "alternate": one full layer in this many (Gemma2 2, Gemma3 6)
    reads_pattern: bool = False  # Gemma3 takes the period from a legacy ``sliding_window_pattern``
    legacy_gelu: bool = False  # Gemma reads hidden_act "gelu" as the tanh approximation
    mrope_default: bool = False  # Qwen-VL text classes read rope type "mrope" as "default"


# The keys whose class defaults the doctor needs (what ``doctor.fields.decoder_facts`` reads,
# plus what the classes derive those from).
KEYS: tuple[str, ...] = (
    "rms_norm_eps",
    "hidden_act",
    "hidden_activation",
    "attention_bias",
    "mlp_bias",
    "num_attention_heads",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "query_pre_attn_scalar",
    "max_position_embeddings",
    "vocab_size",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "num_key_value_heads",
    "head_dim",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "tie_word_embeddings",
)

_QWEN_VL_TEXT = {
    "rms_norm_eps": 1e-05,
    "hidden_act": "silu",
    "num_attention_heads": 64,
    "hidden_size": 8192,
    "intermediate_size": 29568,
    "num_hidden_layers": 80,
    "max_position_embeddings": 32768,
    "vocab_size": 152064,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "pad_token_id": None,
    "num_key_value_heads": 8,
    "sliding_window": 4096,
    "use_sliding_window": False,
    "max_window_layers": 80,
}
_QWEN = {
    "rms_norm_eps": 1e-06,
    "hidden_act": "silu",
    "num_attention_heads": 32,
    "hidden_size": 4096,
    "intermediate_size": 22016,
    "num_hidden_layers": 32,
    "max_position_embeddings": 32768,
    "vocab_size": 151936,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    "num_key_value_heads": 32,
    "sliding_window": 4096,
    "use_sliding_window": False,
    "max_window_layers": 28,
    "tie_word_embeddings": False,
}
_GEMMA_COMMON = {"rms_norm_eps": 1e-06, "attention_bias": False, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}
_GEMMA_COMMON |= {"head_dim": 256, "tie_word_embeddings": True}

# transformers 5's classes (checked against the installed version by the tests).
TABLE: dict[str, ClassDefaults] = {
    "llama": ClassDefaults(
        {
            "rms_norm_eps": 1e-06,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "num_attention_heads": 32,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "max_position_embeddings": 2048,
            "vocab_size": 32000,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": None,
            "num_key_value_heads": None,
            "head_dim": None,
            "tie_word_embeddings": False,
        },
        10000.0,
    ),
    "mistral": ClassDefaults(
        {
            "rms_norm_eps": 1e-06,
            "hidden_act": "silu",
            "num_attention_heads": 32,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "max_position_embeddings": 131072,
            "vocab_size": 32000,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": None,
            "num_key_value_heads": 8,
            "head_dim": None,
            "sliding_window": 4096,
            "tie_word_embeddings": False,
        },
        10000.0,
    ),
    "qwen2": ClassDefaults(_QWEN, 10000.0, windows="qwen"),
    "qwen3": ClassDefaults({**_QWEN, "attention_bias": False, "head_dim": 128}, 10000.0, windows="qwen"),
    "qwen2_vl_text": ClassDefaults(_QWEN_VL_TEXT, 1000000.0, windows="qwen", mrope_default=True),
    "qwen2_5_vl_text": ClassDefaults(_QWEN_VL_TEXT, 1000000.0, windows="qwen", mrope_default=True),
    "qwen3_vl_text": ClassDefaults(
        {
            "rms_norm_eps": 1e-06,
            "hidden_act": "silu",
            "attention_bias": False,
            "num_attention_heads": 32,
            "hidden_size": 4096,
            "intermediate_size": 22016,
            "num_hidden_layers": 32,
            "max_position_embeddings": 128000,
            "vocab_size": 151936,
            "pad_token_id": None,
            "num_key_value_heads": 32,
            "head_dim": 128,
        },
        500000.0,
    ),
    "gemma": ClassDefaults(
        {
            **_GEMMA_COMMON,
            "hidden_act": "gelu_pytorch_tanh",
            "num_attention_heads": 16,
            "hidden_size": 3072,
            "intermediate_size": 24576,
            "num_hidden_layers": 28,
            "max_position_embeddings": 8192,
            "vocab_size": 256000,
            "num_key_value_heads": 16,
        },
        10000.0,
        legacy_gelu=True,
    ),
    "gemma2": ClassDefaults(
        {
            **_GEMMA_COMMON,
            "hidden_activation": "gelu_pytorch_tanh",
            "num_attention_heads": 8,
            "hidden_size": 2304,
            "intermediate_size": 9216,
            "num_hidden_layers": 26,
            "final_logit_softcapping": 30.0,
            "attn_logit_softcapping": 50.0,
            "query_pre_attn_scalar": 256,
            "max_position_embeddings": 8192,
            "vocab_size": 256000,
            "num_key_value_heads": 4,
            "sliding_window": 4096,
        },
        10000.0,
        windows="alternate",
        period=2,
    ),
    "gemma3_text": ClassDefaults(
        {
            **_GEMMA_COMMON,
            "hidden_activation": "gelu_pytorch_tanh",
            "num_attention_heads": 8,
            "hidden_size": 2304,
            "intermediate_size": 9216,
            "num_hidden_layers": 26,
            "final_logit_softcapping": None,
            "attn_logit_softcapping": None,
            "query_pre_attn_scalar": 256,
            "max_position_embeddings": 131072,
            "vocab_size": 262208,
            "num_key_value_heads": 4,
            "sliding_window": 4096,
        },
        1000000.0,
        local_theta=10000.0,
        windows="alternate",
        period=6,
        reads_pattern=True,
    ),
}

# Remote-code decoders transformers has no class for: their config is compared as written.
AS_WRITTEN: frozenset[str] = frozenset({"internlm2"})

_ORIGINAL_CONTEXT_TYPES = ("llama3", "yarn", "longrope")  # RoPE types that record the pretraining context


def filled_text(section: dict[str, Any]) -> dict[str, Any] | None:
    """``section`` (a text decoder's config as written) with its class defaults filled in, as
    transformers would read it for the keys the doctor compares; None when the table cannot say."""
    model_type = str(section.get("model_type", ""))
    if model_type in AS_WRITTEN:
        return dict(section)
    defaults = TABLE.get(model_type)
    if defaults is None or section.get("use_bidirectional_attention"):  # Gemma3's halved window: ask transformers
        return None
    text = {**defaults.fields, **section}
    if defaults.legacy_gelu and text.get("hidden_act") == "gelu":
        text["hidden_act"] = "gelu_pytorch_tanh"
    if defaults.windows == "qwen":
        text["sliding_window"] = text["sliding_window"] if text["use_sliding_window"] else None
    if text.get("layer_types") is None and defaults.windows is not None:
        text["layer_types"] = _layer_types(text, defaults, section)
    rope = _gemma3_rope(text, defaults) if defaults.local_theta is not None else _rope(text, defaults)
    if rope is None:
        return None
    text.pop("rope_scaling", None)
    text.pop("rope_theta", None)
    text["rope_parameters"] = rope
    return text


def _layer_types(text: dict[str, Any], defaults: ClassDefaults, section: dict[str, Any]) -> list[str]:
    layers = int(text["num_hidden_layers"])
    if defaults.windows == "qwen":
        window_from = text["max_window_layers"] if text["sliding_window"] is not None else layers
        return ["sliding_attention" if i >= window_from else "full_attention" for i in range(layers)]
    period = int(section.get("sliding_window_pattern", defaults.period) if defaults.reads_pattern else defaults.period)
    return ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(layers)]


def _rope(text: dict[str, Any], defaults: ClassDefaults) -> dict[str, Any] | None:
    """The one RoPE setting of a class without per-layer-type RoPE, in transformers 5's form."""
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    if not isinstance(rope, dict) or any(isinstance(v, dict) for v in rope.values()):
        return None  # per-layer-type RoPE in a class without it: ask transformers
    rope = dict(rope)
    rope.setdefault("rope_theta", text.get("rope_theta", defaults.theta))
    if defaults.mrope_default and rope.get("rope_type", rope.get("type")) == "mrope":
        rope["rope_type"] = "default"
    _standard(rope, text)
    return rope


def _gemma3_rope(text: dict[str, Any], defaults: ClassDefaults) -> dict[str, Any] | None:
    """Gemma3's RoPE per layer type: the legacy ``rope_scaling`` applies to the full-attention layers."""
    written = text.get("rope_parameters")
    if written is not None and not (isinstance(written, dict) and all(isinstance(v, dict | None) for v in written.values())):
        return None
    rope = {k: dict(v) for k, v in written.items() if v is not None} if written else {}
    full = rope.setdefault("full_attention", {"rope_type": "default"})
    local = rope.setdefault("sliding_attention", {"rope_type": "default"})
    if isinstance(text.get("rope_scaling"), dict):
        full.update(text["rope_scaling"])
    full.setdefault("rope_theta", text.get("rope_theta", defaults.theta))
    local.setdefault("rope_theta", text.get("rope_local_base_freq", defaults.local_theta))
    for layer_type in set(rope) & set(text.get("layer_types") or ()):
        _standard(rope[layer_type], text)
    return rope


def _standard(rope: dict[str, Any], text: dict[str, Any]) -> None:
    """transformers' standard form of one RoPE setting: a type, and the pretraining context where it is used."""
    rope.setdefault("rope_type", rope.get("type", "default"))
    if rope["rope_type"] in _ORIGINAL_CONTEXT_TYPES:
        if "original_max_position_embeddings" in text:
            rope["original_max_position_embeddings"] = text["original_max_position_embeddings"]
        else:
            rope.setdefault("original_max_position_embeddings", text.get("max_position_embeddings"))

"""The config fields that decide what a text decoder computes, read the same way from every spelling.

A merge keeps the VLM's config, so every block of the merged model runs under the VLM's RoPE,
norm epsilon and activation — whatever the reasoner's weights were trained under. The hub
publishes configs with legacy keys (``rope_theta`` + ``rope_scaling`` with ``type``), transformers
5 saves ``rope_parameters`` (per layer type for Gemma3); both are reduced here to one flat set of
named facts, so that the same physical setting compares equal however it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FUNCTION = "changes the function"
EDGES = "changes behaviour at the edges"
COSMETIC = "cosmetic"
SEVERITY_ORDER = {FUNCTION: 0, EDGES: 1, COSMETIC: 2}


@dataclass(frozen=True)
class Field:
    """One compared fact: its severity when the roles disagree, and what a disagreement means."""

    name: str
    severity: str
    meaning: str


ROPE_MEANING = "attention weights learned positions under one rotary embedding and now run under another"
FIELDS: tuple[Field, ...] = (
    Field("rope_theta", FUNCTION, ROPE_MEANING + " (RoPE base θ)"),
    Field("rope_type", FUNCTION, ROPE_MEANING + " (scaling type)"),
    Field("rope_factor", FUNCTION, ROPE_MEANING + " (scaling factor)"),
    Field("rope_original_max_positions", FUNCTION, ROPE_MEANING + " (scaling's original context)"),
    Field("rope_other", FUNCTION, ROPE_MEANING + " (other scaling parameters)"),
    Field("mrope_section", FUNCTION, "the 3-D rotary sections of image positions differ"),
    Field("partial_rotary_factor", FUNCTION, ROPE_MEANING + " (rotated share of each head)"),
    Field("norm_eps", FUNCTION, "every RMSNorm divides by a different ε"),
    Field("activation", FUNCTION, "the MLP's non-linearity differs"),
    Field("attention_bias", FUNCTION, "one model's attention projections have biases the other lacks"),
    Field("mlp_bias", FUNCTION, "one model's MLP projections have biases the other lacks"),
    Field("head_dim", FUNCTION, "the same weights are cut into heads differently"),
    Field("num_attention_heads", FUNCTION, "the same weights are cut into heads differently"),
    Field("num_key_value_heads", FUNCTION, "key/value heads are shared differently"),
    Field("hidden_size", FUNCTION, "the decoders have different widths"),
    Field("intermediate_size", FUNCTION, "the MLPs have different widths"),
    Field("num_hidden_layers", FUNCTION, "the decoders have different depths"),
    Field("final_logit_softcapping", FUNCTION, "the output logits are capped differently"),
    Field("attn_logit_softcapping", FUNCTION, "attention scores are capped differently"),
    Field("query_pre_attn_scalar", FUNCTION, "attention scores are scaled differently"),
    Field("max_position_embeddings", EDGES, "the longest context each model was built for differs"),
    Field("sliding_window", EDGES, "long inputs see a different attention window"),
    Field("sliding_layers", EDGES, "a different set of layers uses windowed attention"),
    Field("eos_token_id", EDGES, "generation stops on different tokens unless the merged generation config says otherwise"),
    Field("tie_word_embeddings", COSMETIC, "the input and output embeddings are tied in one model only (the VLM's are kept)"),
    Field("vocab_size", COSMETIC, "vocabularies differ in size (reconciled by token text: see `frankmerge tokens`)"),
    Field("bos_token_id", COSMETIC, "the begin-of-sequence id differs"),
    Field("pad_token_id", COSMETIC, "the padding id differs"),
)
BY_NAME = {f.name: f for f in FIELDS}

_ROPE_KNOWN = {"rope_theta", "rope_type", "type", "factor", "original_max_position_embeddings", "mrope_section"}
_ROPE_IGNORED = {"mrope_interleaved", "partial_rotary_factor"}  # the first is layout, the second read on its own


def decoder_facts(text: dict[str, Any], *, tie: bool | None = None) -> dict[str, Any]:
    """Named facts of one text-decoder config (legacy hub keys or transformers 5's), None where unset."""
    facts: dict[str, Any] = {name: None for name in BY_NAME}
    facts.update(_rope_facts(text))
    facts["norm_eps"] = _first(text, "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps")
    facts["activation"] = _first(text, "hidden_activation", "hidden_act", "activation_function")
    for key in (
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
    ):
        facts[key] = text.get(key)
    facts["num_key_value_heads"] = text.get("num_key_value_heads") or text.get("num_attention_heads")
    heads, width = text.get("num_attention_heads"), text.get("hidden_size")
    facts["head_dim"] = text.get("head_dim") or (width // heads if isinstance(heads, int) and isinstance(width, int) else None)
    facts["sliding_window"], facts["sliding_layers"] = _window(text)
    facts["tie_word_embeddings"] = tie if tie is not None else text.get("tie_word_embeddings")
    if isinstance(facts["eos_token_id"], list) and len(facts["eos_token_id"]) == 1:
        facts["eos_token_id"] = facts["eos_token_id"][0]
    return facts


def _first(text: dict[str, Any], *keys: str) -> Any:
    return next((text[k] for k in keys if text.get(k) is not None), None)


def _rope_facts(text: dict[str, Any]) -> dict[str, Any]:
    """θ, scaling type/factor/original context, M-RoPE sections, rotated share — from any spelling."""
    params = text.get("rope_parameters")
    if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
        # Gemma3 in transformers 5: one set per layer type; the full-attention layers carry the scaling.
        params = params.get("full_attention") or next(iter(params.values()))
    scaling = params if isinstance(params, dict) else (text.get("rope_scaling") or {})
    if not isinstance(scaling, dict):
        scaling = {}
    theta = scaling.get("rope_theta", text.get("rope_theta"))
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    mrope = scaling.get("mrope_section")
    if rope_type == "mrope":  # the legacy spelling of M-RoPE: a default rotation split in sections
        rope_type = "default"
    other = {k: v for k, v in sorted(scaling.items()) if k not in _ROPE_KNOWN | _ROPE_IGNORED}
    partial = scaling.get("partial_rotary_factor", text.get("partial_rotary_factor"))
    return {
        "rope_theta": None if theta is None else float(theta),
        "rope_type": rope_type,
        "rope_factor": scaling.get("factor"),
        "rope_original_max_positions": scaling.get("original_max_position_embeddings"),
        "rope_other": other or None,
        "mrope_section": list(mrope) if mrope else None,
        "partial_rotary_factor": 1.0 if partial is None else float(partial),
    }


def _window(text: dict[str, Any]) -> tuple[int | None, int | None]:
    """(attention window in use, number of windowed layers): None when no layer uses one.

    Qwen2 configs carry a ``sliding_window`` that only applies with ``use_sliding_window``; the
    hub's DeepSeek-R1-Distill-Qwen-7B says 4096 with the switch off, so the window is not in use.
    """
    window = text.get("sliding_window")
    if text.get("use_sliding_window") is False or not window:
        return None, None
    types = text.get("layer_types")
    if isinstance(types, list):
        windowed = sum(1 for t in types if t == "sliding_attention")
        return (int(window), windowed) if windowed else (None, None)
    return int(window), text.get("num_hidden_layers")


def mrope_only_difference(values: dict[str, Any]) -> bool:
    """True when M-RoPE sections appear in some roles only: on text positions M-RoPE *is* 1-D RoPE."""
    present = [v for v in values.values() if v is not None]
    return len(set(map(tuple, present))) <= 1 and len(present) < len(values)

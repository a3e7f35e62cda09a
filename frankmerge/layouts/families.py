"""Per-family naming tables: where each model family keeps its language decoder on disk.

Each family lists the prefixes under which its text decoder (``layers``, ``embed_tokens``,
``norm``) may appear, covering both the legacy hub layout and the transformers-v5 layout, and
the names its ``lm_head`` may have. Prefixes are tried in order; the first under which block 0
exists wins. Adding a family is adding a row here (see ``../shared/docs/layouts.md``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "vlm" or "text"
    model_types: tuple[str, ...]
    decoder_prefixes: tuple[str, ...]
    lm_head_names: tuple[str, ...] = ("lm_head.weight",)
    # The decoder architecture when the family fixes it; None = read text_config.model_type.
    decoder: str | None = None
    # Multi-folder checkpoints (NVILA): the sub-folder that holds the LLM's weights and config.
    weights_subdir: str | None = None


# LLaVA-style composites: hub layout ``language_model.model.*``, v5 ``model.language_model.*``,
# and the v5.10-5.23 regression ``model.language_model.model.*``.
_LLAVA_PREFIXES = ("model.language_model.model.", "language_model.model.", "model.language_model.")
_LLAVA_HEADS = ("lm_head.weight", "language_model.lm_head.weight")
# Qwen-VL: hub layout is exactly Qwen2ForCausalLM's (``model.layers.*``), v5 nests it.
_QWEN_VL_PREFIXES = ("model.language_model.", "model.")

FAMILIES: tuple[Family, ...] = (
    Family("llava", "vlm", ("llava",), _LLAVA_PREFIXES, _LLAVA_HEADS),
    Family("llava_next", "vlm", ("llava_next",), _LLAVA_PREFIXES, _LLAVA_HEADS),
    Family("llava_onevision", "vlm", ("llava_onevision",), _LLAVA_PREFIXES, _LLAVA_HEADS),
    Family("internvl", "vlm", ("internvl",), _LLAVA_PREFIXES, _LLAVA_HEADS),
    Family("mistral3", "vlm", ("mistral3",), _LLAVA_PREFIXES, _LLAVA_HEADS),
    Family("gemma3", "vlm", ("gemma3",), _LLAVA_PREFIXES, _LLAVA_HEADS, decoder="gemma3"),
    Family("qwen2_vl", "vlm", ("qwen2_vl",), _QWEN_VL_PREFIXES, decoder="qwen2"),
    Family("qwen2_5_vl", "vlm", ("qwen2_5_vl",), _QWEN_VL_PREFIXES, decoder="qwen2"),
    Family("qwen3_vl", "vlm", ("qwen3_vl",), _QWEN_VL_PREFIXES, decoder="qwen3"),
    Family("idefics3", "vlm", ("idefics3",), ("model.text_model.", "text_model.")),
    Family("smolvlm", "vlm", ("smolvlm",), ("model.text_model.", "text_model.")),
    Family("llama", "text", ("llama",), ("model.", ""), decoder="llama"),
    Family("mistral", "text", ("mistral",), ("model.", ""), decoder="mistral"),
    Family("qwen2", "text", ("qwen2",), ("model.", ""), decoder="qwen2"),
    Family("qwen3", "text", ("qwen3",), ("model.", ""), decoder="qwen3"),
    Family("gemma3_text", "text", ("gemma3_text",), ("model.", ""), decoder="gemma3"),
    # Checkpoints that ship remote code, read by their layout alone (paper_layouts.md); their
    # configs are parsed as JSON by ``remote_configs.py``, never through their code.
    Family(
        "internvl_chat",
        "vlm",
        ("internvl_chat",),
        ("language_model.model.",),
        ("language_model.lm_head.weight", "language_model.output.weight"),
    ),
    Family("nvila", "vlm", ("llava_llama",), ("model.",), weights_subdir="llm"),
    Family("internlm2", "text", ("internlm2",), ("model.",), ("output.weight",), decoder="internlm2"),
)

# Decoders whose shared tensors have other names than ``embed_tokens`` / ``norm``.
EMBED_NAMES: dict[str, str] = {"internlm2": "tok_embeddings.weight"}

# Text-config model types that are the same decoder architecture under another name.
DECODER_ALIASES: dict[str, str] = {
    "qwen2_vl_text": "qwen2",
    "qwen2_5_vl_text": "qwen2",
    "qwen3_vl_text": "qwen3",
    "gemma3_text": "gemma3",
}

# Families refused outright, with the reason shown to the user.
REFUSED: dict[str, str] = {
    "mllama": "Mllama interleaves cross-attention layers with the decoder blocks, so its blocks do not "
    "correspond one-to-one to a text LLM's; it is not supported",
}

BY_NAME: dict[str, Family] = {family.name: family for family in FAMILIES}
BY_MODEL_TYPE: dict[str, Family] = {mt: family for family in FAMILIES for mt in family.model_types}

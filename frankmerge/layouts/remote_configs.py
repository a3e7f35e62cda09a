"""Configs of checkpoints that ship remote code, read as plain JSON — their code never runs.

InternVL2.5/InternVL2 chat checkpoints (``internvl_chat``) keep the LLM's config under
``llm_config``; NVILA (``llava_llama``) keeps the LLM in an ``llm/`` sub-folder with its own,
transformers-native config; InternLM2 text models (``internlm2``) need remote code for
AutoConfig but their JSON has every fact a merge needs. See ``../shared/docs/paper_layouts.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from frankmerge.errors import CorruptCheckpointError, LayoutError

# llm_config.architectures[0] of an InternVL chat checkpoint -> decoder architecture.
INTERNVL_LLMS = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama", "InternLM2ForCausalLM": "internlm2"}
NVILA_SUBDIRS = ("llm", "vision_tower", "mm_projector")


def remote_text_facts(directory: Path, raw: dict[str, Any], role: str) -> dict[str, Any] | None:
    """(decoder, num_layers, vocab_size, tie) for a remote-code family, or None if not one."""
    model_type = raw.get("model_type")
    if model_type == "internvl_chat":
        llm = raw.get("llm_config")
        if not isinstance(llm, dict):
            raise CorruptCheckpointError(f"--{role} {directory}: InternVL chat config.json has no llm_config")
        architecture = (llm.get("architectures") or ["?"])[0]
        if architecture not in INTERNVL_LLMS:
            raise LayoutError(
                f"--{role} {directory}: InternVL chat checkpoint with a {architecture} language model is not supported "
                f"(supported: {', '.join(INTERNVL_LLMS)})"
            )
        return _facts(INTERNVL_LLMS[architecture], llm, directory, role, tie=False)
    if model_type == "llava_llama":
        missing = [sub for sub in NVILA_SUBDIRS if not (directory / sub).is_dir()]
        if missing:
            raise CorruptCheckpointError(
                f"--{role} {directory}: NVILA checkpoint without its {', '.join(s + '/' for s in missing)} sub-folder; "
                "re-download the whole repository"
            )
        return None  # the LLM sub-folder is transformers-native: read_config reads it
    if model_type == "internlm2":
        return _facts("internlm2", raw, directory, role, tie=bool(raw.get("tie_word_embeddings", False)))
    return None


def _facts(decoder: str, section: dict[str, Any], directory: Path, role: str, *, tie: bool) -> dict[str, Any]:
    if not isinstance(section.get("num_hidden_layers"), int):
        raise CorruptCheckpointError(f"--{role} {directory}: config.json does not say num_hidden_layers")
    return {"decoder": decoder, "num_layers": section["num_hidden_layers"], "vocab_size": section.get("vocab_size"), "tie": tie}

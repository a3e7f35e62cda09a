"""Documented bases of popular reasoners and VLMs, recognised by hub id or by directory name.

Only lineages their authors state are listed, with where they say it. DeepSeek-R1's distilled
models are the trap: the 1.5B and 7B come from Qwen2.5-*Math*, not from Qwen2.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

R1_CARD = "DeepSeek-R1 model card, distilled-model table"


@dataclass(frozen=True)
class DocumentedLineage:
    model: str
    base: str
    source: str


DOCUMENTED: tuple[DocumentedLineage, ...] = (
    DocumentedLineage("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "Qwen/Qwen2.5-Math-1.5B", R1_CARD),
    DocumentedLineage("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "Qwen/Qwen2.5-Math-7B", R1_CARD),
    DocumentedLineage("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "Qwen/Qwen2.5-14B", R1_CARD),
    DocumentedLineage("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "Qwen/Qwen2.5-32B", R1_CARD),
    DocumentedLineage("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "meta-llama/Llama-3.1-8B", R1_CARD),
    DocumentedLineage("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "meta-llama/Llama-3.3-70B-Instruct", R1_CARD),
    DocumentedLineage("Qwen/QwQ-32B", "Qwen/Qwen2.5-32B", "QwQ-32B model card"),
    DocumentedLineage("Qwen/Qwen2-VL-7B-Instruct", "Qwen/Qwen2-7B", "Qwen2-VL report: LLM initialised from Qwen2"),
    DocumentedLineage("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-7B", "Qwen2.5-VL report: LLM initialised from Qwen2.5"),
    DocumentedLineage("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-3B", "Qwen2.5-VL report: LLM initialised from Qwen2.5"),
    DocumentedLineage("Qwen/Qwen2.5-VL-32B-Instruct", "Qwen/Qwen2.5-32B", "Qwen2.5-VL report: LLM initialised from Qwen2.5"),
    DocumentedLineage("Qwen/Qwen2.5-VL-72B-Instruct", "Qwen/Qwen2.5-72B", "Qwen2.5-VL report: LLM initialised from Qwen2.5"),
    DocumentedLineage("llava-hf/llava-1.5-7b-hf", "lmsys/vicuna-7b-v1.5", "LLaVA-1.5 model card"),
    DocumentedLineage("llava-hf/llava-v1.6-vicuna-7b-hf", "lmsys/vicuna-7b-v1.5", "LLaVA-NeXT model card"),
    DocumentedLineage("llava-hf/llava-v1.6-mistral-7b-hf", "mistralai/Mistral-7B-Instruct-v0.2", "LLaVA-NeXT model card"),
    DocumentedLineage("llava-hf/llava-onevision-qwen2-7b-ov-hf", "Qwen/Qwen2-7B-Instruct", "LLaVA-OneVision model card"),
    DocumentedLineage("HuggingFaceM4/Idefics3-8B-Llama3", "meta-llama/Meta-Llama-3.1-8B-Instruct", "Idefics3 model card"),
    DocumentedLineage("OpenGVLab/InternVL2_5-8B", "internlm/internlm2_5-7b-chat", "InternVL2.5 model card"),
    DocumentedLineage("OpenGVLab/InternVL2_5-38B", "Qwen/Qwen2.5-32B-Instruct", "InternVL2.5 model card"),
    DocumentedLineage("OpenGVLab/InternVL2_5-78B", "Qwen/Qwen2.5-72B-Instruct", "InternVL2.5 model card"),
)
_BY_NAME = {entry.model.rsplit("/", 1)[-1].lower(): entry for entry in DOCUMENTED}


def _name(reference: str) -> str:
    """The model name of a hub id (org/name[@revision]) or a local directory, lower-cased."""
    return PurePath(reference.split("@", 1)[0].rstrip("/")).name.lower()


def documented_base(reference: str, name_or_path: object = None) -> DocumentedLineage | None:
    """The documented lineage of ``reference`` (or of the config's ``_name_or_path``), if listed."""
    for candidate in (reference, name_or_path):
        if isinstance(candidate, str) and candidate:
            entry = _BY_NAME.get(_name(candidate))
            if entry is not None:
                return entry
    return None


def is_same_model(reference: str, hub_id: str) -> bool:
    """Whether ``reference`` names ``hub_id`` (by hub id or by a local directory of that name)."""
    return _name(reference) == _name(hub_id)

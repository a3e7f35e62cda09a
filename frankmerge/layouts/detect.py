"""Map one checkpoint's tensor names to the canonical decoder layout.

The canonical layout names a decoder tensor by ``(block index, suffix)`` — the suffix being what
follows ``layers.{i}.`` — plus the three shared tensors ``embed``, ``norm`` and ``lm_head``.
Everything a VLM holds outside its text decoder is ``other`` and is copied unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from frankmerge.errors import CorruptCheckpointError, LayoutError, one_line
from frankmerge.layouts.families import BY_MODEL_TYPE, BY_NAME, DECODER_ALIASES, EMBED_NAMES, REFUSED, Family
from frankmerge.layouts.remote_configs import remote_text_facts

# Buffers that old checkpoints store inside blocks but that are not weights (recomputed at load).
# They are never merged; a VLM's copies are kept as they are.
NON_WEIGHT_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class ModelConfig:
    """The few config facts a merge needs, read through transformers' AutoConfig."""

    model_type: str
    text_model_type: str
    num_layers: int
    vocab_size: int | None
    tie_word_embeddings: bool | None  # top-level value as the model class resolves it
    raw: dict[str, object] = field(repr=False)
    # The text decoder's config with the class defaults filled in (transformers' own reading), or the
    # raw section for remote-code families; what the pair doctor compares.
    text: dict[str, object] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class DecoderLayout:
    """Where one role's decoder tensors live."""

    role: str
    family: Family
    decoder: str  # decoder architecture, e.g. "qwen2"
    prefix: str
    blocks: tuple[dict[str, str], ...]  # per block: suffix -> tensor name
    embed: str
    norm: str
    lm_head: str | None  # None when tied (no lm_head stored)
    other: tuple[str, ...]  # everything not in the text decoder (vision tower, projector, ...)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)


def read_config(directory: Path, role: str) -> ModelConfig:
    """Read config.json through AutoConfig (never with remote code) and extract the text facts."""
    path = directory / "config.json"
    if not path.is_file():
        raise CorruptCheckpointError(f"--{role} {directory}: no config.json; is this a Hugging Face model directory?")
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise CorruptCheckpointError(f"{path}: not valid JSON ({one_line(exc)})") from exc
    model_type = str(raw.get("model_type", ""))
    if model_type in REFUSED:
        raise LayoutError(f"--{role} {directory}: {REFUSED[model_type]}")
    remote = remote_text_facts(directory, raw, role)
    if remote is not None:
        section = raw.get("llm_config") if isinstance(raw.get("llm_config"), dict) else raw
        return ModelConfig(
            model_type, remote["decoder"], remote["num_layers"], remote["vocab_size"], remote["tie"], raw, _with_defaults(section)
        )
    family = BY_MODEL_TYPE.get(model_type)
    if family is not None and family.weights_subdir:  # NVILA: facts from the LLM's own config
        inner = read_config(directory / family.weights_subdir, role)
        return ModelConfig(
            model_type, inner.text_model_type, inner.num_layers, inner.vocab_size, inner.tie_word_embeddings, raw, inner.text
        )
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError, KeyError, OSError and validation errors
        from transformers import CONFIG_MAPPING

        if model_type not in CONFIG_MAPPING:
            raise LayoutError(
                f"--{role} {directory}: transformers does not know model_type {model_type!r}; models that need "
                "remote code are never executed — pass a transformers-native checkpoint"
            ) from exc
        reason = str(exc).strip().splitlines()[-1].strip()
        raise CorruptCheckpointError(f"{path}: invalid config ({reason}); fix or re-download config.json") from exc
    text = config.get_text_config()
    tie = getattr(config, "tie_word_embeddings", None)
    return ModelConfig(
        model_type=config.model_type,
        text_model_type=getattr(text, "model_type", config.model_type),
        num_layers=int(text.num_hidden_layers),
        vocab_size=getattr(text, "vocab_size", None),
        tie_word_embeddings=None if tie is None else bool(tie),
        raw=raw,
        text=text.to_dict(),
    )


def _with_defaults(section: dict[str, object]) -> dict[str, object]:
    """A remote-code checkpoint's LLM config with its transformers class defaults filled in, when
    transformers knows its model_type (InternVL chat's Qwen2 or Llama); as written otherwise."""
    from transformers import CONFIG_MAPPING

    model_type = str(section.get("model_type", ""))
    if model_type not in CONFIG_MAPPING:
        return dict(section)
    try:
        return CONFIG_MAPPING[model_type](**section).to_dict()
    except Exception:  # a config its class rejects is still worth comparing as written
        return dict(section)


def family_for(config: ModelConfig, role: str, override: str | None) -> Family:
    """The naming table to use: the user's override, else the one for ``config.model_type``."""
    if override is not None:
        if override not in BY_NAME:
            raise LayoutError(f"--{role}-layout {override!r}: unknown layout; choose one of {', '.join(sorted(BY_NAME))}")
        return BY_NAME[override]
    family = BY_MODEL_TYPE.get(config.model_type)
    if family is None:
        raise LayoutError(
            f"--{role}: model_type {config.model_type!r} has no layout table; pass --{role}-layout with one of "
            f"{', '.join(sorted(BY_NAME))} if its tensors are named like one of those"
        )
    return family


def decoder_of(family: Family, config: ModelConfig) -> str:
    name = family.decoder or config.text_model_type
    return DECODER_ALIASES.get(name, name)


def detect_layout(names: list[str], family: Family, config: ModelConfig, role: str) -> DecoderLayout:
    """Find ``family``'s decoder in ``names`` and split the names into blocks, shared and other."""
    name_set = set(names)
    prefix = next((p for p in family.decoder_prefixes if any(n.startswith(f"{p}layers.0.") for n in names)), None)
    if prefix is None:
        tried = ", ".join(f"{p}layers.0.*" for p in family.decoder_prefixes)
        raise LayoutError(f"--{role}: no decoder tensors found for layout {family.name!r} (looked for {tried})")
    pattern = re.compile(rf"^{re.escape(prefix)}layers\.(\d+)\.(.+)$")
    by_block: dict[int, dict[str, str]] = {}
    for name in names:
        match = pattern.match(name)
        if match and not match.group(2).endswith(NON_WEIGHT_SUFFIXES):
            by_block.setdefault(int(match.group(1)), {})[match.group(2)] = name
    indices = sorted(by_block)
    if indices != list(range(len(indices))):
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise LayoutError(f"--{role}: decoder blocks {missing[:5]} are missing under {prefix}layers.*")
    if len(indices) != config.num_layers:
        raise LayoutError(f"--{role}: config says {config.num_layers} decoder layers but the checkpoint holds {len(indices)}")
    decoder = decoder_of(family, config)
    embed, norm = f"{prefix}{EMBED_NAMES.get(decoder, 'embed_tokens.weight')}", f"{prefix}norm.weight"
    for needed in (embed, norm):
        if needed not in name_set:
            raise LayoutError(f"--{role}: tensor {needed!r} not found for layout {family.name!r}")
    lm_head = next((h for h in family.lm_head_names if h in name_set), None)
    decoder_names = {n for block in by_block.values() for n in block.values()} | {embed, norm, lm_head}
    return DecoderLayout(
        role=role,
        family=family,
        decoder=decoder,
        prefix=prefix,
        blocks=tuple(by_block[i] for i in indices),
        embed=embed,
        norm=norm,
        lm_head=lm_head,
        other=tuple(n for n in names if n not in decoder_names),
    )

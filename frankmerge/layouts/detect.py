"""Map one checkpoint's tensor names to the canonical decoder layout.

The canonical layout names a decoder tensor by ``(block index, suffix)`` — the suffix being what
follows ``layers.{i}.`` — plus the three shared tensors ``embed``, ``norm`` and ``lm_head``.
Everything a VLM holds outside its text decoder is ``other`` and is copied unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from frankmerge.errors import CorruptCheckpointError, LayoutError, one_line
from frankmerge.layouts import class_defaults
from frankmerge.layouts.families import BY_MODEL_TYPE, BY_NAME, DECODER_ALIASES, EMBED_NAMES, REFUSED, Family
from frankmerge.layouts.remote_configs import remote_text_facts

# Buffers that old checkpoints store inside blocks but that are not weights (recomputed at load).
# They are never merged; a VLM's copies are kept as they are.
NON_WEIGHT_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class ModelConfig:
    """The few config facts a merge needs: from config.json itself where it states them all, else
    through transformers' AutoConfig."""

    model_type: str
    text_model_type: str
    num_layers: int
    vocab_size: int | None
    tie_word_embeddings: bool | None  # top-level value as the model class resolves it
    raw: dict[str, object] = field(repr=False)
    # The text decoder's config with the class defaults filled in (transformers' own reading); what
    # the pair doctor compares. None until asked for (see ``text``).
    text_config: dict[str, object] | None = field(default=None, repr=False, compare=False)
    directory: Path | None = field(default=None, repr=False, compare=False)
    # The text decoder's section of config.json as written, when read without transformers.
    section: dict[str, object] | None = field(default=None, repr=False, compare=False)
    remote: bool = field(default=False, repr=False, compare=False)  # a remote-code family's LLM section

    @property
    def text(self) -> dict[str, object]:
        """The text decoder's config with the class defaults filled in: from the stored table of
        class defaults where it knows the family, else through transformers (imported on first use)."""
        if self.text_config is None:
            filled = None if self.section is None else class_defaults.filled_text(self.section)
            if filled is None and self.remote:
                filled = _with_defaults(self.section or {})
            if filled is None:
                assert self.directory is not None, "a ModelConfig without its text config needs its directory"
                filled = _auto_config(self.directory, self.raw, "model").get_text_config().to_dict()
            object.__setattr__(self, "text_config", filled)
        return self.text_config  # type: ignore[return-value]


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
        facts = (remote["decoder"], remote["num_layers"], remote["vocab_size"], remote["tie"])
        return ModelConfig(model_type, *facts, raw=raw, section=dict(section), remote=True)  # type: ignore[arg-type]
    family = BY_MODEL_TYPE.get(model_type)
    if family is not None and family.weights_subdir:  # NVILA: facts from the LLM's own config
        return replace(read_config(directory / family.weights_subdir, role), model_type=model_type, raw=raw)
    if family is not None:
        stated = _stated_facts(raw, family)
        if stated is not None:  # no transformers: ~1 s of imports and AutoConfig's registry scan
            section = raw.get("text_config") if family.kind == "vlm" else raw
            return ModelConfig(model_type, *stated, raw=raw, directory=directory, section=section)  # type: ignore[arg-type]
    config = _auto_config(directory, raw, role)
    text = config.get_text_config()
    tie = getattr(config, "tie_word_embeddings", None)
    return ModelConfig(
        model_type=config.model_type,
        text_model_type=getattr(text, "model_type", config.model_type),
        num_layers=int(text.num_hidden_layers),
        vocab_size=getattr(text, "vocab_size", None),
        tie_word_embeddings=None if tie is None else bool(tie),
        raw=raw,
        text_config=text.to_dict(),
        directory=directory,
    )


def _with_defaults(section: dict[str, object]) -> dict[str, object]:
    """A remote-code checkpoint's LLM config with its transformers class defaults filled in, when
    transformers knows its model_type; as written otherwise. The fallback of the stored table."""
    from transformers import CONFIG_MAPPING

    model_type = str(section.get("model_type", ""))
    if model_type not in CONFIG_MAPPING:
        return dict(section)
    try:
        return CONFIG_MAPPING[model_type](**section).to_dict()
    except Exception:  # a config its class rejects is still worth comparing as written
        return dict(section)


def _stated_facts(raw: dict[str, object], family: Family) -> tuple[str, int, int | None, bool] | None:
    """(text model_type, layers, vocabulary, tying) when config.json states each of them, else None
    (a class default would fill the gap: transformers reads it). The text section is ``text_config``
    for a VLM; a VLM config without one (Qwen2-VL's legacy flat layout) goes through transformers."""
    section = raw.get("text_config") if family.kind == "vlm" else raw
    if not isinstance(section, dict):
        return None
    text_type = section.get("model_type")
    layers, vocab, tie = section.get("num_hidden_layers"), section.get("vocab_size"), raw.get("tie_word_embeddings")
    if not isinstance(text_type, str) or not isinstance(layers, int) or not isinstance(vocab, int) or not isinstance(tie, bool):
        return None
    return text_type, layers, vocab, tie


def _auto_config(directory: Path, raw: dict[str, object], role: str):  # type: ignore[no-untyped-def]  # -> PretrainedConfig
    """transformers' reading of ``directory``'s config.json (never with remote code), errors named."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory, trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError, KeyError, OSError and validation errors
        from transformers import CONFIG_MAPPING

        model_type = str(raw.get("model_type", ""))
        if model_type not in CONFIG_MAPPING:
            raise LayoutError(
                f"--{role} {directory}: transformers does not know model_type {model_type!r}; models that need "
                "remote code are never executed — pass a transformers-native checkpoint"
            ) from exc
        reason = str(exc).strip().splitlines()[-1].strip()
        path = directory / "config.json"
        raise CorruptCheckpointError(f"{path}: invalid config ({reason}); fix or re-download config.json") from exc


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

"""The one shape every benchmark's rows are turned into, and what scoring says about each."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

KINDS: tuple[str, ...] = ("multiple-choice", "open", "yes-no", "multi-select")


@dataclass(frozen=True)
class ImageRef:
    """Where one image's bytes are: inline bytes, base64 text (VLMEvalKit TSV) or a file."""

    label: str  # e.g. "image_3 of validation_Art_1", for error messages
    data: bytes | None = None
    b64: str | None = None
    path: Path | None = None


@dataclass(frozen=True)
class Item:
    """One benchmark question, ready to prompt and to score."""

    id: str
    prompt: str  # the user text; ``<image k>`` tags mark where images go when present
    images: tuple[ImageRef, ...]
    gold: str | tuple[str, ...]
    kind: str  # one of KINDS
    choices: tuple[str, ...] = ()
    # breakdown dimension -> the item's values there (several for MathVista's skills)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    difficulty: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Judgement:
    """A benchmark parser's verdict on one answer; the fallback flags are always reported."""

    parsed: str
    correct: bool
    parse_failed: bool = False  # the official parser found no answer
    random_fallback: bool = False  # ... and guessed a random option (MMMU, MMMU-Pro)
    nearest_fallback: bool = False  # ... and took the most similar option (MathVista)

    @property
    def guessed(self) -> bool:
        return self.random_fallback or self.nearest_fallback

"""Session fixtures: tiny homologous triples built once from configs, and a reference merge."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from frankmerge.testbed.tiny import TinyTriple, build_tiny_triple

BuildTriple = Callable[..., TinyTriple]


@pytest.fixture(scope="session")
def tiny_triple(tmp_path_factory: pytest.TempPathFactory) -> BuildTriple:
    """``tiny_triple(family, layout=..., sharded=..., vlm_extra_vocab=...)``, cached per session."""
    cache: dict[tuple[object, ...], TinyTriple] = {}

    def build(
        family: str, *, layout: str = "default", sharded: bool = False, vlm_extra_vocab: int = 0, dtype: str = "float32"
    ) -> TinyTriple:
        key = (family, layout, sharded, vlm_extra_vocab, dtype)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"{family}-{layout}-{'sharded' if sharded else 'single'}-{dtype}")
            cache[key] = build_tiny_triple(
                root, family, layout=layout, sharded=sharded, vlm_extra_vocab=vlm_extra_vocab, dtype=getattr(torch, dtype)
            )
        return cache[key]

    return build


BLOCK = re.compile(r"layers\.(\d+)\.(.+)$")


def block_key(name: str) -> tuple[int, str] | None:
    """(block, suffix) of a decoder tensor name, found independently of frankmerge's tables."""
    if "vision" in name or "visual" in name:
        return None
    match = BLOCK.search(name)
    return (int(match.group(1)), match.group(2)) if match else None


def copy_tree(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target

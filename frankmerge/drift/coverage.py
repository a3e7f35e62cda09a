"""Which decoder tensors a prior covers: module groups over canonical decoder names.

A canonical name is what follows the decoder prefix in every layout: ``layers.{i}.{suffix}``,
``embed_tokens.weight``, ``norm.weight`` and ``lm_head.weight``. Both the prior file and the
attachment to a loaded model speak canonical names, so the on-disk layout (legacy hub or v5)
and the in-memory names never have to agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from frankmerge.drift.errors import DriftOptionError
from frankmerge.layouts import DecoderLayout

MODULE_GROUPS: tuple[str, ...] = ("attn", "mlp", "norm", "embed", "head")
DEFAULT_MODULES: tuple[str, ...] = ("attn", "mlp")  # the paper's choice

EMBED, NORM, HEAD = "embed_tokens.weight", "norm.weight", "lm_head.weight"
_BLOCK = re.compile(r"^layers\.(\d+)\.(.+)$")
_ATTN = re.compile(r"(^|\.)(self_attn|attention)\.(q_proj|k_proj|v_proj|o_proj)\.(weight|bias)$")
_MLP = re.compile(r"(^|\.)mlp\.(gate_proj|up_proj|down_proj)\.(weight|bias)$")
_NORM = re.compile(r"(^|\.)[^.]*norm[^.]*\.(weight|bias)$")


def parse_modules(modules: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"attn,mlp"`` or an iterable of group names -> validated groups in canonical order."""
    if modules is None:
        return DEFAULT_MODULES
    items = [m.strip() for m in (modules.split(",") if isinstance(modules, str) else modules)]
    items = [m for m in items if m]
    unknown = [m for m in items if m not in MODULE_GROUPS]
    if unknown or not items:
        what = f"unknown module group {', '.join(map(repr, unknown))}" if unknown else "no module group given"
        raise DriftOptionError(f"--modules: {what}; valid groups are {', '.join(MODULE_GROUPS)}")
    return tuple(g for g in MODULE_GROUPS if g in items)


def group_of(canonical: str) -> str | None:
    """The module group of a canonical decoder tensor; None for tensors no group covers."""
    if canonical == EMBED:
        return "embed"
    if canonical == HEAD:
        return "head"
    if canonical == NORM:
        return "norm"
    match = _BLOCK.match(canonical)
    if match is None:
        return None
    suffix = match.group(2)
    if _ATTN.search(suffix):
        return "attn"
    if _MLP.search(suffix):
        return "mlp"
    if _NORM.search(suffix):
        return "norm"
    return None


def block_name(index: int, suffix: str) -> str:
    return f"layers.{index}.{suffix}"


def canonical_names(layout: DecoderLayout) -> dict[str, str]:
    """Canonical name -> on-disk tensor name for one checkpoint's decoder (lm_head only if untied)."""
    names = {block_name(i, suffix): name for i, block in enumerate(layout.blocks) for suffix, name in block.items()}
    names[EMBED] = layout.embed
    names[NORM] = layout.norm
    if layout.lm_head is not None:
        names[HEAD] = layout.lm_head
    return names


def select(names: Mapping[str, str], modules: Iterable[str]) -> dict[str, str]:
    """The entries of ``names`` whose group is in ``modules``, in decoder order."""
    wanted = set(modules)
    return {k: v for k, v in names.items() if group_of(k) in wanted}


def block_index(canonical: str) -> int | None:
    match = _BLOCK.match(canonical)
    return int(match.group(1)) if match else None

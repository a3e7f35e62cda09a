"""Open the three checkpoints of a merge and check that they can be merged at all.

Everything here runs before a byte is written: resolving paths, parsing every header, mapping
each role onto its family's layout, and the homology check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.checkpoints.resolve import resolve_checkpoint
from frankmerge.errors import FrankmergeError, HomologyError
from frankmerge.layouts import DecoderLayout, ModelConfig, detect_layout, family_for, read_config
from frankmerge.recipe import MergeRecipe

ROLES = ("vlm", "reasoner", "base")
REASONER_BASE = "reasoner_base"  # optional fourth role (the reasoner's own base); its flag is --reasoner-base


def roles_of(recipe: MergeRecipe) -> tuple[str, ...]:
    """The roles a recipe opens: the three, and the reasoner's own base when it has one."""
    return (*ROLES, REASONER_BASE) if getattr(recipe, REASONER_BASE, None) else ROLES


def role_label(role: str) -> str:
    """How messages name a role: its flag's name (``reasoner_base`` -> ``reasoner-base``)."""
    return role.replace("_", "-")


def flag_of(role: str) -> str:
    return "--" + role_label(role)


MAX_LISTED_MISMATCHES = 5


@dataclass
class RoleInput:
    role: str
    reference: str
    path: Path
    weights_dir: Path  # ``path``, or its sub-folder holding the LLM (NVILA's ``llm/``)
    checkpoint: Checkpoint
    config: ModelConfig
    layout: DecoderLayout


def open_role(role: str, reference: str, recipe: MergeRecipe) -> RoleInput:
    """One checkpoint opened and mapped; ``role`` is a recipe key (``reasoner_base``) or a label."""
    key, role = role, role_label(role)
    path = resolve_checkpoint(reference, role=role, allow_download=recipe.allow_download)
    config = read_config(path, role)
    family = family_for(config, role, getattr(recipe.layouts, key, None))
    weights_dir = path / family.weights_subdir if family.weights_subdir else path
    checkpoint = Checkpoint(weights_dir, allow_pickle=recipe.allow_pickle)
    try:
        layout = detect_layout(checkpoint.names(), family, config, role)
    except FrankmergeError:
        checkpoint.close()
        raise
    return RoleInput(role, reference, path, weights_dir, checkpoint, config, layout)


def open_inputs(recipe: MergeRecipe) -> dict[str, RoleInput]:
    """Open all three roles; close what was opened if any of them fails."""
    opened: dict[str, RoleInput] = {}
    try:
        for role in roles_of(recipe):
            opened[role] = open_role(role, getattr(recipe, role), recipe)
        if opened["vlm"].layout.family.kind != "vlm":
            raise HomologyError(
                f"--vlm {recipe.vlm}: is a text-only {opened['vlm'].config.model_type} model; pass the vision-language model"
            )
        check_homology(opened, allow_family_mismatch=recipe.allow_family_mismatch)
    except BaseException:
        for item in opened.values():
            item.checkpoint.close()
        raise
    return opened


def check_homology(inputs: dict[str, RoleInput], *, allow_family_mismatch: bool = False) -> None:
    """Same decoder family, block count, per-block tensor names and shapes in all three roles."""
    vlm = inputs["vlm"]
    for role in (r for r in ("reasoner", "base", REASONER_BASE) if r in inputs):
        other = inputs[role]
        flag = flag_of(role)
        if other.layout.decoder != vlm.layout.decoder and not allow_family_mismatch:
            raise HomologyError(
                f"{flag} is a {other.layout.decoder} decoder but the VLM's language model is "
                f"{vlm.layout.decoder}; FRANK needs models fine-tuned from the same base LLM "
                "(pass --allow-family-mismatch only if the architectures are truly identical)"
            )
        if other.layout.num_blocks != vlm.layout.num_blocks:
            raise HomologyError(
                f"{flag} has {other.layout.num_blocks} decoder blocks but the VLM has "
                f"{vlm.layout.num_blocks}; the models are not homologous"
            )
        mismatches = _block_mismatches(vlm, other)
        for kind in ("norm",):
            mismatches += _shape_mismatch(vlm, other, getattr(vlm.layout, kind), getattr(other.layout, kind))
        hidden_v = vlm.checkpoint.info(vlm.layout.embed).shape[1:]
        hidden_o = other.checkpoint.info(other.layout.embed).shape[1:]
        if hidden_v != hidden_o:
            mismatches.append(f"embed_tokens width {list(hidden_v)} vs {list(hidden_o)}")
        if mismatches:
            shown = "; ".join(mismatches[:MAX_LISTED_MISMATCHES])
            more = f" (+{len(mismatches) - MAX_LISTED_MISMATCHES} more)" if len(mismatches) > MAX_LISTED_MISMATCHES else ""
            raise HomologyError(f"VLM and {flag} are not homologous: {shown}{more}")


def _block_mismatches(vlm: RoleInput, other: RoleInput) -> list[str]:
    found: list[str] = []
    for index, (block_v, block_o) in enumerate(zip(vlm.layout.blocks, other.layout.blocks, strict=True)):
        for suffix in sorted(set(block_v) ^ set(block_o)):
            where = "VLM" if suffix in block_v else other.role
            found.append(f"block {index}: {suffix} only in {where}")
        for suffix in sorted(set(block_v) & set(block_o)):
            found += _shape_mismatch(vlm, other, block_v[suffix], block_o[suffix], f"block {index}: {suffix}")
    return found


def _shape_mismatch(vlm: RoleInput, other: RoleInput, name_v: str, name_o: str, label: str | None = None) -> list[str]:
    shape_v = vlm.checkpoint.info(name_v).shape
    shape_o = other.checkpoint.info(name_o).shape
    if shape_v == shape_o:
        return []
    return [f"{label or name_v} shape {list(shape_v)} vs {list(shape_o)}"]

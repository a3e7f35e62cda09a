"""The tensors outside the blocks that the text decoder shares: embeddings, final norm, lm_head.

``merge`` writes them after the blocks, by the recipe's embeddings policy: the VLM's as they are
(``keep_vlm``), or merged on the rows whose token both tokenizers agree on (``merge_shared``),
with the coefficients of the nearest block; carried reasoning tokens take the reasoner's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from frankmerge.casting import cast_into
from frankmerge.checkpoints.dtypes import F32
from frankmerge.checkpoints.writer import ShardedWriter
from frankmerge.errors import RecipeError
from frankmerge.inputs import RoleInput
from frankmerge.methods.frank import BlockCoefficients
from frankmerge.recipe import MergeRecipe
from frankmerge.streaming import RowPatch, Source, SourceRows, Workspace, write_copy, write_merged
from frankmerge.tokens import CarriedToken, TokenPlan

log = logging.getLogger(__name__)


@dataclass
class SharedRecord:
    """What happened to one of the tensors outside the blocks that the text decoder shares."""

    tensor: str
    action: str  # "kept_vlm" or "merged"
    merged_rows: int | None = None
    lambda_v: float | None = None
    lambda_r: float | None = None
    kept_vlm_rows: int | None = None  # rows inside the merged range kept because their token differs


def sources(inputs: dict[str, RoleInput], pick: Callable[..., str | None]) -> tuple[Source, Source, Source]:
    """The (VLM, reasoner, base) sources of one tensor, named by ``pick`` from each role's layout."""
    found = []
    for role in ("vlm", "reasoner", "base"):
        item = inputs[role]
        name = pick(item.layout) or item.layout.embed  # a tied lm_head is the embedding matrix
        found.append(Source(role, item.checkpoint, name))
    return found[0], found[1], found[2]


def write_shared(
    ws: Workspace,
    writer: ShardedWriter,
    inputs: dict[str, RoleInput],
    recipe: MergeRecipe,
    coefficients: list[BlockCoefficients],
    tokens: TokenPlan,
) -> list[SharedRecord]:
    """Embeddings, final norm and lm_head: the VLM's, or (merge_shared) merged on shared rows.

    Merged with the coefficients of the nearest block: block 1 for the embeddings, block L for
    the final norm and lm_head. A row is merged only where both tokenizers give its id the same
    token text; rows beyond the smallest vocabulary, padding rows and ids that mean different
    tokens (the VLM's image tokens among them) keep the VLM's values. Without tokenizers, rows are
    matched by index alone, with a warning. Carried reasoning tokens take the reasoner's rows, in
    place of a padding row or appended after the last one.
    """
    carried = tokens.carried
    layout = inputs["vlm"].layout
    records = []
    targets = [("embed", coefficients[0]), ("norm", coefficients[-1])]
    if layout.lm_head is not None:
        targets.append(("lm_head", coefficients[-1]))
    for attribute, coefficient in targets:
        triple = sources(inputs, lambda lay, attr=attribute: getattr(lay, attr))
        vlm_info = triple[0].checkpoint.info(triple[0].name)
        patch, appended = (None, None) if attribute == "norm" else _carried_rows(ws, triple[1], vlm_info.shape, carried)
        if recipe.embeddings == "keep_vlm":
            write_copy(ws, writer, triple[0].name, triple[0], patch)
            records.append(SharedRecord(triple[0].name, "kept_vlm"))
        else:
            rows = min(s.checkpoint.info(s.name).shape[0] for s in triple)
            per_row = vlm_info.numel // vlm_info.shape[0]
            lambdas = (coefficient.lambda_v, coefficient.lambda_r)
            kept: list[int] = []
            if attribute != "norm":
                kept = _rows_to_keep(tokens, rows)
                patch = _keep_vlm_rows(triple[0], per_row, kept, patch)
            write_merged(ws, writer, triple[0].name, triple, *lambdas, rows * per_row, vlm_info.numel, patch=patch)
            records.append(SharedRecord(triple[0].name, "merged", rows - len(kept), *lambdas, kept_vlm_rows=len(kept)))
        if appended is not None:
            dtype = writer.expect().dtype
            writer.write(triple[0].name, cast_into(writer.buffer(appended.size, dtype), dtype, appended, F32))
    return records


MAX_KEPT_SHARE = 0.1  # merge_shared refuses vocabularies that disagree on more rows than this


def _rows_to_keep(tokens: TokenPlan, rows: int) -> list[int]:
    """Rows below ``rows`` that merge_shared must leave as the VLM's (their tokens differ)."""
    if tokens.rows_of_other_meaning is None:
        log.warning("embeddings=merge_shared without both tokenizers: rows are matched by index alone")
        return []
    kept = [i for i in tokens.rows_of_other_meaning if i < rows]
    if len(kept) > MAX_KEPT_SHARE * rows:
        raise RecipeError(
            f"embeddings=merge_shared: {len(kept)} of {rows} embedding rows hold different tokens in the VLM and the "
            "reasoner, so their vocabularies are not the same; use --embeddings keep_vlm"
        )
    return kept


def _keep_vlm_rows(vlm: Source, width: int, kept: list[int], patch: RowPatch | None) -> RowPatch | SourceRows | None:
    """The VLM's own values put back into ``kept`` rows, read as they stream; carried-token rows win."""
    return SourceRows(vlm, width, kept, then=patch) if kept else patch


def _carried_rows(
    ws: Workspace, reasoner: Source, vlm_shape: tuple[int, ...], carried: list[CarriedToken]
) -> tuple[RowPatch | None, np.ndarray[Any, Any] | None]:
    """The reasoner's rows of the carried tokens: patches inside the VLM's matrix, and rows past its end."""
    if not carried:
        return None, None
    rows, width = vlm_shape[0], vlm_shape[1]
    values = {t.merged_id: ws.read_f32(reasoner, t.reasoner_id * width, width).copy() for t in carried}
    beyond = sorted(i for i in values if i >= rows)
    if beyond and beyond != list(range(rows, rows + len(beyond))):
        raise RecipeError(f"the VLM's tokenizer uses ids past its {rows} embedding rows; its checkpoint looks inconsistent")
    patch = RowPatch(width, {i: v for i, v in values.items() if i < rows}) if len(beyond) < len(values) else None
    appended = np.stack([values[i] for i in beyond]).reshape(-1) if beyond else None
    return patch, appended

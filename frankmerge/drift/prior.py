"""Build the reasoning prior Δ = θ_reasoner − θ_vlm over the VLM's language decoder.

Both checkpoints are mapped onto canonical decoder names through the layout tables, so the
VLM's names (``model.language_model.layers…`` or ``language_model.model.layers…``) are never
looked up verbatim in the text LLM — the defect that makes the public DRIFT code attach zero
hooks. Tensors are streamed chunk by chunk: memory stays at a few chunks whatever the model.
The vision tower and projector are never covered: only decoder tensors have canonical names.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from frankmerge import __version__, kernels, workers
from frankmerge.checkpoints.dtypes import OUTPUT_DTYPES, dtype_name
from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.doctor import check_pair
from frankmerge.drift.coverage import EMBED, HEAD, canonical_names, group_of, parse_modules, select
from frankmerge.drift.errors import DriftOptionError, PriorMismatchError
from frankmerge.drift.prior_file import DriftPrior, PriorEntry, PriorMetadata, PriorWriter, load_prior, with_placeholder_norms
from frankmerge.errors import HomologyError, NonFiniteError, OutputExistsError
from frankmerge.inputs import RoleInput, open_role
from frankmerge.recipe import Layouts, MergeRecipe
from frankmerge.streaming import dot64
from frankmerge.tokens import rows_of_other_meaning

log = logging.getLogger(__name__)

CHUNK = 1 << 22  # elements per read; 4 Mi float32 = 16 MiB per buffer
MAX_LISTED = 5


@dataclass(frozen=True)
class PriorOptions:
    modules: tuple[str, ...] = ("attn", "mlp")
    dtype: torch.dtype = torch.bfloat16
    vlm_layout: str | None = None
    reasoner_layout: str | None = None
    allow_pickle: bool = False
    allow_download: bool = False
    allow_nonfinite: bool = False
    overwrite: bool = False
    chunk: int = CHUNK
    threads: int | None = None  # threads that compute [every core the process may run on]; same bits for any value


def prior_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` -> torch.bfloat16, with an error listing the valid names."""
    if name not in OUTPUT_DTYPES:
        raise DriftOptionError(f"--dtype {name!r}: unknown; valid dtypes are {', '.join(OUTPUT_DTYPES)}")
    return OUTPUT_DTYPES[name].torch


def build_prior(vlm: str | Path, reasoner: str | Path, out: str | Path, options: PriorOptions | None = None) -> DriftPrior:
    """Compute Δ for every covered decoder tensor of ``vlm`` and write it to ``out`` (one file)."""
    options = options or PriorOptions()
    modules = parse_modules(options.modules)
    out = Path(out)
    if out.exists() and not options.overwrite:
        raise OutputExistsError(f"--out {out}: exists; pass --overwrite or choose another path")
    if out.is_dir():
        raise OutputExistsError(f"--out {out}: is a directory; pass a file path such as prior.safetensors")
    roles = {
        "vlm": _open("vlm", str(vlm), options.vlm_layout, options),
        "reasoner": _open("reasoner", str(reasoner), options.reasoner_layout, options),
    }
    try:
        plan = _plan(roles["vlm"], roles["reasoner"], modules)
        for line in check_pair(roles, lineage=False).function_warnings():
            log.warning("pair check: %s", line)
        other_meaning = _rows_of_other_meaning(roles["vlm"], roles["reasoner"], plan)
        with workers.using(workers.available_cores() if options.threads is None else options.threads):
            meta = _stream(roles["vlm"], roles["reasoner"], plan, modules, out, options, other_meaning)
    finally:
        for item in roles.values():
            item.checkpoint.close()
    log.info("DRIFT prior: %d tensors, ‖Δ‖ = %.4g, written to %s", len(meta.entries), meta.total_norm, out)
    return load_prior(out)


@dataclass(frozen=True)
class _Planned:
    canonical: str
    vlm_name: str
    reasoner_name: str
    shape: tuple[int, ...]
    reasoner_rows: int | None  # embed/head: the reasoner's row count when it differs


def open_input(
    role: str, reference: str, layout: str | None = None, *, allow_pickle: bool = False, allow_download: bool = False
) -> RoleInput:
    """Resolve, read the config and map the layout of one checkpoint, exactly as a merge does."""
    # Only the reading options of a recipe matter here; the merge's own validation does not apply.
    recipe = MergeRecipe.model_construct(
        layouts=Layouts(**{role: layout}), allow_pickle=allow_pickle, allow_download=allow_download
    )
    return open_role(role, reference, recipe)


def _open(role: str, reference: str, layout: str | None, options: PriorOptions) -> RoleInput:
    return open_input(role, reference, layout, allow_pickle=options.allow_pickle, allow_download=options.allow_download)


def _plan(vlm: RoleInput, reasoner: RoleInput, modules: tuple[str, ...]) -> list[_Planned]:
    """Pair every covered VLM tensor with the reasoner's; refuse anything that does not line up."""
    if vlm.layout.family.kind != "vlm":
        raise HomologyError(
            f"--vlm {vlm.reference}: is a text-only {vlm.config.model_type} model; pass the vision-language model"
        )
    if vlm.layout.decoder != reasoner.layout.decoder:
        raise HomologyError(
            f"--reasoner is a {reasoner.layout.decoder} decoder but the VLM's language model is {vlm.layout.decoder}; "
            "DRIFT needs a reasoner fine-tuned from the VLM's base LLM"
        )
    if vlm.layout.num_blocks != reasoner.layout.num_blocks:
        raise HomologyError(
            f"--reasoner has {reasoner.layout.num_blocks} decoder blocks but the VLM has {vlm.layout.num_blocks}; "
            "the models are not homologous"
        )
    if "head" in modules and vlm.layout.lm_head is None:
        raise DriftOptionError(
            "--modules head: the VLM ties lm_head to its embeddings, so there is no separate head to cover; use 'embed'"
        )
    v_names = canonical_names(vlm.layout)
    r_names = canonical_names(reasoner.layout)
    if HEAD not in r_names:  # a tied reasoner's lm_head is its embedding matrix
        r_names[HEAD] = reasoner.layout.embed
    covered = select(v_names, modules)
    plan: list[_Planned] = []
    problems: list[str] = []
    for canonical, v_name in covered.items():
        r_name = r_names.get(canonical)
        if r_name is None:
            problems.append(f"{v_name} has no counterpart in the reasoner ({canonical})")
            continue
        v_shape, r_shape = vlm.checkpoint.info(v_name).shape, reasoner.checkpoint.info(r_name).shape
        rows = None
        if canonical in (EMBED, HEAD) and v_shape[1:] == r_shape[1:]:
            rows = r_shape[0] if r_shape[0] != v_shape[0] else None
        elif v_shape != r_shape:
            problems.append(f"{v_name} shape {list(v_shape)} vs reasoner {r_name} {list(r_shape)}")
            continue
        plan.append(_Planned(canonical, v_name, r_name, v_shape, rows))
    if problems:
        more = f" (+{len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise PriorMismatchError(f"VLM and reasoner do not line up: {'; '.join(problems[:MAX_LISTED])}{more}")
    if not plan:
        raise PriorMismatchError(f"no decoder tensor of the VLM falls in module groups {', '.join(modules)}")
    return plan


def _rows_of_other_meaning(vlm: RoleInput, reasoner: RoleInput, plan: list[_Planned]) -> list[int] | None:
    """For covered embeddings/head: the rows whose ids mean different tokens (InternVL2.5's
    ``<IMG_CONTEXT>`` and QwQ's ``<think>`` share id 151667), so that Δ never pulls one toward the other."""
    rows = [(p.shape[0], p.reasoner_rows or p.shape[0]) for p in plan if p.canonical in (EMBED, HEAD)]
    if not rows:
        return None
    vlm_rows, reasoner_rows = rows[0]
    return rows_of_other_meaning(vlm.weights_dir, reasoner.weights_dir, vlm_rows, reasoner_rows)


def _stream(
    vlm: RoleInput,
    reasoner: RoleInput,
    plan: list[_Planned],
    modules: tuple[str, ...],
    out: Path,
    options: PriorOptions,
    other_meaning: list[int] | None = None,
) -> PriorMetadata:
    from frankmerge.report import describe_input

    uncovered = tuple(k for k in canonical_names(vlm.layout) if group_of(k) not in modules)
    draft = PriorMetadata(
        modules=modules,
        dtype=dtype_name(options.dtype),
        num_blocks=vlm.layout.num_blocks,
        entries={
            p.canonical: PriorEntry(group_of(p.canonical) or "", p.shape, p.vlm_name, p.reasoner_name, 0.0, 0.0) for p in plan
        },
        uncovered=uncovered,
        inputs={"vlm": describe_input(vlm), "reasoner": describe_input(reasoner)},
        tool_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    budget = len(with_placeholder_norms(draft).to_json()) + 64 * len(plan)  # rows_matched and escapes
    writer = PriorWriter(out, {p.canonical: (options.dtype, p.shape) for p in plan}, budget)
    buffers = _Buffers(options.chunk)
    entries: dict[str, PriorEntry] = {}
    try:
        for item in plan:
            rows_to_zero = other_meaning if item.canonical in (EMBED, HEAD) else None
            norm_sq, vlm_sq, rows = _write_delta(
                vlm.checkpoint, reasoner.checkpoint, item, writer, buffers, options, rows_to_zero
            )
            entries[item.canonical] = PriorEntry(
                draft.entries[item.canonical].group,
                item.shape,
                item.vlm_name,
                item.reasoner_name,
                math.sqrt(norm_sq),
                math.sqrt(vlm_sq),
                rows,
                None if rows_to_zero is None else len(rows_to_zero),
            )
        meta = PriorMetadata(**{**draft.__dict__, "entries": entries})
        writer.finish(meta)
    except BaseException:
        writer.abort()
        raise
    return meta


class _Buffers:
    """Chunk buffers allocated once: float32 per role."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.f32 = {r: torch.empty(chunk, dtype=torch.float32) for r in ("vlm", "reasoner")}
        self._out: dict[torch.dtype, torch.Tensor] = {}

    def out(self, dtype: torch.dtype) -> torch.Tensor:
        """A chunk buffer in the prior's dtype, for the fused path."""
        if dtype not in self._out:
            self._out[dtype] = torch.empty(self.chunk, dtype=dtype)
        return self._out[dtype]


def _write_delta(
    vlm: Checkpoint,
    reasoner: Checkpoint,
    item: _Planned,
    writer: PriorWriter,
    buf: _Buffers,
    options: PriorOptions,
    rows_to_zero: list[int] | None = None,
) -> tuple[float, float, int | None]:
    """Stream Δ of one tensor; rows only the VLM holds (image tokens, padding) and ``rows_to_zero``
    (sorted; ids of different tokens) get Δ = 0."""
    numel = math.prod(item.shape)
    width = math.prod(item.shape[1:]) if len(item.shape) > 1 else 1
    shared = numel if item.reasoner_rows is None else min(item.reasoner_rows * width, numel)
    dtypes = (vlm.info(item.vlm_name).dtype, reasoner.info(item.reasoner_name).dtype, options.dtype)
    if shared == numel and not rows_to_zero and not options.allow_nonfinite and kernels.supports(*dtypes):
        return (*_fused_delta(vlm, reasoner, item, writer, buf, options), None)
    norm_sq = vlm_sq = 0.0
    for start in range(0, numel, buf.chunk):
        count = min(buf.chunk, numel - start)
        v = buf.f32["vlm"][:count].copy_(vlm.read_chunk(item.vlm_name, start, count))
        vlm.release(item.vlm_name, start, count)
        vlm_sq += dot64(v, v)
        delta = buf.f32["reasoner"][:count]
        both = max(0, min(count, shared - start))
        if both:
            delta[:both].copy_(reasoner.read_chunk(item.reasoner_name, start, both))
            reasoner.release(item.reasoner_name, start, both)
            delta[:both].sub_(v[:both])
        delta[both:].zero_()
        if rows_to_zero:
            _zero_rows(delta, start, width, rows_to_zero)
        if not options.allow_nonfinite and not bool(torch.isfinite(delta).all()):
            raise _nonfinite_delta(item)
        norm_sq += dot64(delta, delta)
        writer.write(item.canonical, delta.to(options.dtype))
    rows = None if item.reasoner_rows is None else min(item.reasoner_rows, item.shape[0])
    return norm_sq, vlm_sq, rows


DELTA = (1.0, -1.0, 0.0)  # merge_into's (λ_V, λ_R, λ_0) on (θ_R, θ_V, θ_V): θ_R − θ_V, rounded once


def _fused_delta(
    vlm: Checkpoint, reasoner: Checkpoint, item: _Planned, writer: PriorWriter, buf: _Buffers, options: PriorOptions
) -> tuple[float, float]:
    """Δ of a tensor both models hold whole, by the fused kernels: one pass for ‖Δ‖² and ‖θ_V‖²
    (Δ in float32, sums in float64), one for Δ rounded into the prior's dtype. Both run on the
    workers (``frankmerge.workers``), piece by piece, with the pieces' sums added in order: the
    prior is the same bit for bit for any thread count."""
    numel = math.prod(item.shape)
    out = buf.out(options.dtype)
    pool = workers.current()
    norm_sq = vlm_sq = 0.0
    for start in range(0, numel, buf.chunk):
        count = min(buf.chunk, numel - start)
        r = kernels.as_array(reasoner.read_chunk(item.reasoner_name, start, count))
        v = kernels.as_array(vlm.read_chunk(item.vlm_name, start, count))
        # τ = θ_R − θ_V with θ_0 = θ_V: the sums give ‖Δ‖² and ‖θ_V‖²
        sums = pool.map(lambda lo, hi, r=r, v=v: kernels.task_vector_sums(r[lo:hi], r[lo:hi], v[lo:hi]), count)
        for delta_sq, _, _, v_sq in sums:
            if not (math.isfinite(delta_sq) and math.isfinite(v_sq)):
                raise _nonfinite_delta(item)
            norm_sq, vlm_sq = norm_sq + delta_sq, vlm_sq + v_sq
        chunk = out[:count]
        target = kernels.as_array(chunk)
        pool.map(lambda lo, hi, t=target, r=r, v=v: kernels.merge_into(t[lo:hi], r[lo:hi], v[lo:hi], v[lo:hi], *DELTA), count)
        reasoner.release(item.reasoner_name, start, count)
        vlm.release(item.vlm_name, start, count)
        writer.write(item.canonical, chunk)
    return norm_sq, vlm_sq


def _nonfinite_delta(item: _Planned) -> NonFiniteError:
    return NonFiniteError(
        f"Δ of {item.vlm_name} holds NaN/Inf (from the VLM or reasoner {item.reasoner_name}); "
        "check the checkpoints or pass --allow-nonfinite"
    )


def _zero_rows(chunk: torch.Tensor, start: int, width: int, rows: list[int]) -> None:
    """Zero the parts of a flat chunk (elements from ``start``) that fall in the sorted ``rows``."""
    end = start + chunk.numel()
    for row in rows[bisect.bisect_left(rows, start // width) : bisect.bisect_right(rows, (end - 1) // width)]:
        chunk[max(row * width, start) - start : min((row + 1) * width, end) - start] = 0.0

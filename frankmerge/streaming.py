"""Chunked streaming of the merge: block statistics, merged tensors, copies and NaN/Inf checks.

Every tensor is processed in flat chunks, so the memory a merge needs is a few chunks, independent
of model size. Chunks are numpy arrays (``checkpoints/dtypes.py``). bfloat16, float16 and float32
chunks go through the fused kernels (``frankmerge.kernels``) straight from the checkpoint's mapping
into the writer's slots, without torch; other dtypes (float64) through torch's element-wise
operations on views of float32 buffers allocated once (``Workspace``), so that no fresh pages are
touched per tensor (page faults on new allocations otherwise dominate the run time).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from frankmerge import kernels, workers
from frankmerge.casting import as_float32, cast_into
from frankmerge.checkpoints.dtypes import F16, F32, DType, as_dtype, from_torch, to_torch
from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.checkpoints.writer import ShardedWriter
from frankmerge.errors import NonFiniteError

if TYPE_CHECKING:
    import torch

_PRODUCTS = threading.local()  # per thread: a reused buffer for dot64's element-wise products


@dataclass(frozen=True)
class Source:
    """One role's copy of a tensor."""

    role: str
    checkpoint: Checkpoint
    name: str


@dataclass
class Workspace:
    """Reusable chunk buffers: one float32 buffer per role (reads are views of the files, outputs go into the writer's slots)."""

    chunk: int
    out_dtype: DType  # a torch dtype or a name is turned into its DType
    allow_nonfinite: bool = False
    f32: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out_dtype = as_dtype(self.out_dtype)
        for role in ("vlm", "reasoner", "base"):
            self.f32[role] = np.empty(self.chunk, dtype=np.float32)

    def read_f32(self, source: Source, start: int, count: int) -> np.ndarray[Any, Any]:
        """Elements ``[start, start+count)`` of ``source`` in float32, in the role's buffer."""
        raw = source.checkpoint.read_array(source.name, start, count)
        out = as_float32(raw, source.checkpoint.info(source.name).dtype, self.f32[source.role][:count])
        source.checkpoint.release(source.name, start, count)
        return out


def fused(*sources: Source) -> bool:
    """Whether the fused kernels take all these tensors (bfloat16, float16 or float32)."""
    return kernels.supports(*(s.checkpoint.info(s.name).dtype for s in sources))


def read_arrays(sources: tuple[Source, ...], start: int, count: int) -> list[np.ndarray[Any, Any]]:
    """Elements ``[start, start+count)`` of each source as the arrays the kernels take (views; ``release`` them)."""
    return [kernels.as_array(s.checkpoint.read_array(s.name, start, count)) for s in sources]


def release(sources: tuple[Source, ...], start: int, count: int) -> None:
    for source in sources:
        source.checkpoint.release(source.name, start, count)


@dataclass
class RowPatch:
    """Rows of a matrix replaced by other values while it streams (carried reasoning tokens)."""

    width: int
    rows: dict[int, np.ndarray[Any, Any]]  # row index -> float32 values of length ``width`` (torch tensors are taken too)

    def __post_init__(self) -> None:
        self.rows = {row: v if isinstance(v, np.ndarray) else from_torch(v) for row, v in self.rows.items()}

    def apply(self, start: int, chunk: np.ndarray[Any, Any], dtype: DType) -> None:
        """Overwrite the parts of ``chunk`` (flat elements from ``start``, holding ``dtype``) that lie in patched rows."""
        end = start + chunk.size
        for row, values in self.rows.items():
            lo, hi = max(row * self.width, start), min((row + 1) * self.width, end)
            if lo < hi:
                cast_into(chunk[lo - start : hi - start], dtype, values[lo - row * self.width : hi - row * self.width], F32)


@dataclass
class SourceRows:
    """Rows of a matrix put back to ``source``'s values while it streams, read when their chunk
    passes (merge_shared's rows of other meaning): memory stays one chunk however many rows.

    ``then`` is applied afterwards, so its rows (carried reasoning tokens) win.
    """

    source: Source
    width: int
    rows: list[int]  # sorted row indices
    then: RowPatch | None = None

    def apply(self, start: int, chunk: np.ndarray[Any, Any], dtype: DType) -> None:
        end = start + chunk.size
        first = bisect.bisect_left(self.rows, start // self.width)
        last = bisect.bisect_right(self.rows, (end - 1) // self.width)
        index = first
        while index < last:  # one read per run of consecutive rows (padding rows come in one run)
            run_end = index + 1
            while run_end < last and self.rows[run_end] == self.rows[run_end - 1] + 1:
                run_end += 1
            lo = max(self.rows[index] * self.width, start)
            hi = min((self.rows[run_end - 1] + 1) * self.width, end)
            checkpoint, name = self.source.checkpoint, self.source.name
            values = checkpoint.read_array(name, lo, hi - lo)
            cast_into(chunk[lo - start : hi - start], dtype, values, checkpoint.info(name).dtype)
            checkpoint.release(name, lo, hi - lo)
            index = run_end
        if self.then is not None:
            self.then.apply(start, chunk, dtype)


@dataclass
class Sums:
    """Running float64 sums over task vectors."""

    norm_v_sq: float = 0.0
    norm_r_sq: float = 0.0
    dot_vr: float = 0.0
    norm_0_sq: float = 0.0

    def add(self, other: Sums) -> None:
        self.norm_v_sq += other.norm_v_sq
        self.norm_r_sq += other.norm_r_sq
        self.dot_vr += other.dot_vr
        self.norm_0_sq += other.norm_0_sq


def dot64(a: torch.Tensor, b: torch.Tensor) -> float:
    """⟨a, b⟩ of two flat float32 tensors, as a Python float (callers sum chunks in float64).

    Element-wise products summed by torch's cascade summation: relative error ~1e-8 on 4 Mi
    elements, where BLAS ``torch.dot`` accumulates in float32 lanes (~2e-5) and, as one call per
    small slice, stalls on OpenMP barriers whenever another process holds a core.
    """
    torch = workers.torch_module()
    buffer = getattr(_PRODUCTS, "buffer", None)
    if buffer is None or buffer.numel() < a.numel():
        buffer = _PRODUCTS.buffer = torch.empty(a.numel(), dtype=torch.float32)
    products = torch.mul(a, b, out=buffer[: a.numel()])
    return float(products.sum())


def task_vector_sums(ws: Workspace, vlm: Source, reasoner: Source, base: Source, numel: int) -> Sums:
    """‖τ_V‖², ‖τ_R‖², ⟨τ_V, τ_R⟩ and ‖θ_0‖² of one tensor (or of its first ``numel`` elements)."""
    sums = Sums()
    sources = (vlm, reasoner, base)
    use_kernels = fused(*sources)
    for start in range(0, numel, ws.chunk):
        count = min(ws.chunk, numel - start)
        if use_kernels:
            arrays = read_arrays(sources, start, count)
            parts = workers.current().map(lambda lo, hi, a=arrays: kernels.task_vector_sums(*(x[lo:hi] for x in a)), count)
            release(sources, start, count)
        else:
            parts = [_torch_sums(ws, sources, start + lo, hi - lo) for lo, hi in workers.pieces(count)]
        # Added piece by piece in order: the same sums for any thread count (and any chunk size
        # that is a multiple of the piece).
        for (lo, hi), part in zip(workers.pieces(count), parts, strict=True):
            piece = Sums(*part) if isinstance(part, tuple) else part
            if not all(math.isfinite(x) for x in (piece.norm_v_sq, piece.norm_r_sq, piece.norm_0_sq)):
                piece = _nonfinite_chunk(ws, sources, start + lo, hi - lo)
            sums.add(piece)
    return sums


def _torch_sums(ws: Workspace, sources: tuple[Source, ...], start: int, count: int) -> Sums:
    """One piece's sums through torch (dtypes the kernels do not take: float64)."""
    tau_v, tau_r, theta_0 = (_f32_tensor(ws, s, start, count) for s in sources)
    tau_v.sub_(theta_0)
    tau_r.sub_(theta_0)
    return Sums(dot64(tau_v, tau_v), dot64(tau_r, tau_r), dot64(tau_v, tau_r), dot64(theta_0, theta_0))


def _nonfinite_chunk(ws: Workspace, sources: tuple[Source, ...], start: int, count: int) -> Sums:
    """Name the input with NaN/Inf, or (when allowed) redo the sums without those entries."""
    _raise_if_nonfinite(ws, sources, start, count)
    # Overflow of the squares alone (finite but huge values) also lands here; keep what is finite.
    tau_v, tau_r, theta_0 = (_f32_tensor(ws, s, start, count) for s in sources)
    tau_v.sub_(theta_0).nan_to_num_(0.0, 0.0, 0.0)
    tau_r.sub_(theta_0).nan_to_num_(0.0, 0.0, 0.0)
    theta_0.nan_to_num_(0.0, 0.0, 0.0)
    return Sums(dot64(tau_v, tau_v), dot64(tau_r, tau_r), dot64(tau_v, tau_r), dot64(theta_0, theta_0))


def _f32_tensor(ws: Workspace, source: Source, start: int, count: int) -> torch.Tensor:
    """``ws.read_f32`` as a torch tensor (a view), for torch's path."""
    return workers.torch_module().from_numpy(ws.read_f32(source, start, count))


def write_merged(
    ws: Workspace,
    writer: ShardedWriter,
    out_name: str,
    sources: tuple[Source, Source, Source],
    lambda_v: float,
    lambda_r: float,
    merged_numel: int,
    total_numel: int,
    *,
    inputs_checked: bool = False,
    patch: RowPatch | SourceRows | None = None,
) -> None:
    """Write θ_0 + λ_V τ_V + λ_R τ_R for the first ``merged_numel`` elements, the VLM's values after.

    Computed as (1 − λ_V − λ_R) θ_0 + λ_V θ_V + λ_R θ_R in float32, skipping zero terms, so that
    λ = (1, 0) reproduces the VLM exactly. ``inputs_checked`` says the statistics pass already
    proved all three inputs finite, which saves a pass.
    """
    vlm, reasoner, base = sources
    lambda_0 = 1.0 - lambda_v - lambda_r
    if abs(lambda_0) < 1e-12:
        lambda_0 = 0.0
    use_kernels = kernels.supports(ws.out_dtype) and fused(*sources)
    for start in range(0, total_numel, ws.chunk):
        count = min(ws.chunk, total_numel - start)
        merged = min(max(merged_numel - start, 0), count)
        if use_kernels:
            out = writer.buffer(count, ws.out_dtype)
            _merged_chunk(out, ws.out_dtype, sources, start, merged, (lambda_v, lambda_r, lambda_0))
            if patch is not None:
                patch.apply(start, out, ws.out_dtype)
            # Finite inputs (proved by the statistics pass) can still overflow float16's range.
            narrow = ws.out_dtype == F16
            if (narrow or not inputs_checked) and not ws.allow_nonfinite and not _all_finite(out, ws.out_dtype):
                if not inputs_checked:
                    _raise_if_nonfinite(ws, sources[1:], start, merged)
                    _raise_if_nonfinite(ws, sources[:1], start, count)
                _narrowed(ws, out_name, out, ws.out_dtype)  # raises for float16
                raise NonFiniteError(f"merged tensor {out_name!r} overflowed to Inf; use --dtype float32")
            writer.write(out_name, out)
            continue
        torch = workers.torch_module()
        acc = _f32_tensor(ws, vlm, start, count)
        if merged:
            head = acc[:merged]
            if lambda_v != 1.0:
                head.mul_(lambda_v)
            if lambda_r != 0.0:
                head.add_(_f32_tensor(ws, reasoner, start, merged), alpha=lambda_r)
            if lambda_0 != 0.0:
                head.add_(_f32_tensor(ws, base, start, merged), alpha=lambda_0)
        if not inputs_checked and not ws.allow_nonfinite and not bool(torch.isfinite(acc).all()):
            _raise_if_nonfinite(ws, sources[1:], start, merged)
            _raise_if_nonfinite(ws, sources[:1], start, count)
            raise NonFiniteError(f"merged tensor {out_name!r} overflowed to Inf; use --dtype float32")
        if patch is not None:
            patch.apply(start, acc.numpy(), F32)
        out = _torch_cast(writer.buffer(count, ws.out_dtype), ws.out_dtype, acc)
        writer.write(out_name, _narrowed(ws, out_name, out, ws.out_dtype))


def _torch_cast(out: np.ndarray[Any, Any], dtype: DType, values: torch.Tensor) -> np.ndarray[Any, Any]:
    """``values`` cast by torch into ``out`` (holding ``dtype``), on torch's path; returns ``out``."""
    to_torch(out, dtype).copy_(values)
    return out


def _merged_chunk(
    out: np.ndarray[Any, Any],
    out_dtype: DType,
    sources: tuple[Source, Source, Source],
    start: int,
    merged: int,
    lambdas: tuple[float, float, float],
) -> np.ndarray[Any, Any]:
    """One output chunk by the fused kernel: its first ``merged`` elements merged, the VLM's values after."""
    vlm = sources[0]
    count = out.size
    if merged:
        target = kernels.as_array(out[:merged])
        arrays = read_arrays(sources, start, merged)
        workers.current().map(lambda lo, hi: kernels.merge_into(target[lo:hi], *(a[lo:hi] for a in arrays), *lambdas), merged)
        release(sources, start, merged)
    if merged < count:
        tail = vlm.checkpoint.read_array(vlm.name, start + merged, count - merged)
        cast_into(out[merged:], out_dtype, tail, vlm.checkpoint.info(vlm.name).dtype)
        vlm.checkpoint.release(vlm.name, start + merged, count - merged)
    return out


KERNEL_COPY_MIN_BYTES = 1 << 20  # smaller tensors are not worth draining the writer's queue for


def write_copy(ws: Workspace, writer: ShardedWriter, out_name: str, source: Source, patch: RowPatch | None = None) -> None:
    """Copy a tensor chunk by chunk, cast to the planned dtype (bit-exact when the dtype is kept).

    A large tensor kept as it is (the VLM's embeddings, vision tower) is read only to check it is
    finite and then copied file to file by the kernel, which costs a fraction of writing it.
    """
    info = source.checkpoint.info(source.name)
    planned = writer.expect()
    location = source.checkpoint.byte_range(source.name)
    if location is not None and patch is None and planned.dtype == info.dtype and location[2] >= KERNEL_COPY_MIN_BYTES:
        if info.dtype.is_floating_point and not ws.allow_nonfinite:
            for _, values in source.checkpoint.arrays(source.name, ws.chunk):
                _check_finite(ws, values, info.dtype, source)
        writer.copy_from(out_name, *location)
        return
    for start in range(0, max(info.numel, 1), ws.chunk):
        count = min(ws.chunk, info.numel - start)
        raw = source.checkpoint.read_array(source.name, start, count)
        if info.dtype.is_floating_point:
            _check_finite(ws, raw, info.dtype, source)
        # Into a writer slot: the view's pages are released before it is written.
        out = cast_into(writer.buffer(count, planned.dtype), planned.dtype, raw, info.dtype)
        if planned.dtype != info.dtype:
            _narrowed(ws, out_name, out, planned.dtype)
        source.checkpoint.release(source.name, start, count)
        if patch is not None:
            patch.apply(start, out, planned.dtype)
        writer.write(out_name, out)


def _narrowed(ws: Workspace, out_name: str, values: np.ndarray[Any, Any], dtype: DType) -> np.ndarray[Any, Any]:
    """``values`` after the cast to ``dtype``, refused if that is float16 and the cast overflowed (|x| > 65504 becomes Inf)."""
    if dtype == F16 and not ws.allow_nonfinite and not _all_finite(values, dtype):
        raise NonFiniteError(f"tensor {out_name!r} overflows float16 (|x| > 65504); use --dtype bfloat16 or float32")
    return values


def _all_finite(values: np.ndarray[Any, Any], dtype: DType) -> bool:
    """No NaN or Inf in a flat array (by the kernel where it takes the dtype: numpy's and torch's checks are slower)."""
    if kernels.supports(dtype):
        return bool(kernels.all_finite(kernels.as_array(values)))
    if values.dtype.kind == "f":  # float64
        return bool(np.isfinite(values).all())
    return bool(workers.torch_module().isfinite(to_torch(values, dtype)).all())  # float8


def _raise_if_nonfinite(ws: Workspace, sources: tuple[Source, ...], start: int, count: int) -> None:
    for source in sources:
        if count:
            _check_finite(ws, ws.read_f32(source, start, count), F32, source)


def _check_finite(ws: Workspace, values: np.ndarray[Any, Any], dtype: DType, source: Source) -> None:
    if ws.allow_nonfinite or values.size == 0:
        return
    if not _all_finite(values, dtype):
        raise NonFiniteError(
            f"--{source.role} tensor {source.name!r} contains NaN or Inf; fix the checkpoint or pass --allow-nonfinite"
        )


def write_elementwise(
    ws: Workspace,
    writer: ShardedWriter,
    out_name: str,
    sources: tuple[Source, Source, Source],
    merge_delta: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor],
) -> None:
    """θ_0 + merge_delta(τ_V, τ_R) for methods that need the whole tensor (TIES, DARE).

    Holds this one tensor's task vectors in float32; everything else streams as usual.
    """
    workers.torch_module()  # on the merge's thread count before the method computes
    vlm, reasoner, base = sources
    numel = vlm.checkpoint.info(vlm.name).numel
    shape = vlm.checkpoint.info(vlm.name).shape
    theta_0 = _load_f32(ws, base, numel)
    tau_v = _load_f32(ws, vlm, numel).sub_(theta_0)
    tau_r = _load_f32(ws, reasoner, numel).sub_(theta_0)
    merged = theta_0.add_(merge_delta(tau_v.reshape(shape), tau_r.reshape(shape), vlm.name).reshape(-1))
    for start in range(0, max(numel, 1), ws.chunk):
        count = min(ws.chunk, numel - start)
        out = _torch_cast(writer.buffer(count, ws.out_dtype), ws.out_dtype, merged[start : start + count])
        writer.write(out_name, _narrowed(ws, out_name, out, ws.out_dtype))


def _load_f32(ws: Workspace, source: Source, numel: int) -> torch.Tensor:
    whole = np.empty(numel, dtype=np.float32)
    dtype = source.checkpoint.info(source.name).dtype
    for start in range(0, numel, ws.chunk):
        count = min(ws.chunk, numel - start)
        as_float32(source.checkpoint.read_array(source.name, start, count), dtype, whole[start : start + count])
        source.checkpoint.release(source.name, start, count)
    return workers.torch_module().from_numpy(whole)

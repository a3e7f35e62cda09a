"""Fused element-wise kernels of the streaming merge (and of ``drift-prior`` and ``analyze``), compiled by numba.

torch runs every element-wise operation as its own pass over memory: one chunk's statistics
(three conversions, two subtractions, four products and four sums) take 13 passes, its merge 7.
These kernels make each a single pass that reads the checkpoint's bytes where they lie, which
makes the merge's arithmetic about 4x faster (benchmarks/README.md). numba has neither bfloat16
nor float16, so both travel as their bit patterns — bfloat16 as ``uint16``, float16 as ``int16``
(the numpy type is what tells the kernels which one they hold) — and are widened and rounded here
exactly as torch does it (round to nearest even, subnormals kept, overflow to Inf).

Kernels are compiled on first use and cached by numba on disk (beside this module, or in the
user's cache directory when that is read-only), so later runs only load them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

from frankmerge.checkpoints.dtypes import DType, dtype_name, from_torch

if TYPE_CHECKING:
    import torch


def _load_numba_math_without_blas_probe() -> None:
    """Import numba's ``np.arraymath`` with ``scipy.linalg`` hidden from it.

    numba loads that module with its CPU target the first time any kernel runs, and it probes for
    BLAS by importing scipy.linalg (0.3-0.6 s of a merge's start-up, measured). The probe only
    picks np.cov's inner product (these kernels use no BLAS), and numba's linear algebra imports
    scipy itself when compiled, so hiding it here changes nothing else.
    """
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules["scipy.linalg"]


_load_numba_math_without_blas_probe()

# Reassociation lets LLVM vectorise the float64 reductions; contraction allows FMAs. No
# "nnan"/"ninf": the callers detect NaN/Inf from the results, which must therefore propagate.
_FASTMATH = {"reassoc", "contract"}
_KERNEL_DTYPES = {"bfloat16": np.uint16, "float16": np.int16, "float32": np.float32}  # what as_array gives


def _compiled(**options):  # noqa: ANN202 - returns numba's decorator
    """``njit`` with an on-disk cache where numba finds a writable place for one, without otherwise."""

    def decorate(function):  # noqa: ANN001, ANN202
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError:  # "no locator available": read-only package and cache dirs; compile per run
            return njit(**options)(function)

    return decorate


def supports(*dtypes: DType | torch.dtype) -> bool:
    """Whether the fused kernels take arrays of all these dtypes."""
    return all(dtype_name(dtype) in _KERNEL_DTYPES for dtype in dtypes)


def as_array(values: np.ndarray[Any, Any] | torch.Tensor) -> np.ndarray[Any, Any]:
    """A flat contiguous chunk of a supported dtype as the numpy view the kernels take (no copy).

    Chunks are numpy arrays on the merge's path (bfloat16 already as ``uint16``), torch tensors
    where torch computes (``drift-prior``); float16 becomes its ``int16`` bits.
    """
    array = values if isinstance(values, np.ndarray) else from_torch(values)
    return array.view(np.int16) if array.dtype == np.float16 else array


def convert(out: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> None:
    """``values`` cast into ``out`` (bfloat16, float16 or float32 each), rounded as torch rounds.

    ``merge_into`` with λ = (1, 0, 0): each value widened to float32 and stored once, so no other
    kernel needs compiling for it.
    """
    array = as_array(values)
    merge_into(as_array(out), array, array, array, 1.0, 0.0, 0.0)


@intrinsic
def _bits_to_f32(typingctx, bits):  # noqa: ARG001 - numba's intrinsic signature
    def codegen(context, builder, signature, args):  # noqa: ARG001
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.uint32), codegen


@intrinsic
def _f32_to_bits(typingctx, value):  # noqa: ARG001
    def codegen(context, builder, signature, args):  # noqa: ARG001
        return builder.bitcast(args[0], context.get_value_type(types.uint32))

    return types.uint32(types.float32), codegen


def _widen(x):  # pragma: no cover - replaced by the overload below inside compiled code
    raise NotImplementedError


@overload(_widen)
def _widen_impl(x):
    if x == types.uint16:  # bfloat16 bits: the upper half of a float32
        return lambda x: _bits_to_f32(np.uint32(x) << np.uint32(16))
    if x == types.int16:  # float16 bits
        return lambda x: _f16_to_f32(x)
    if x == types.float32:
        return lambda x: x
    return None


@njit
def _f16_to_f32(x):
    """float16 bits -> float32, exactly (every float16 is a float32)."""
    half = np.uint32(np.uint16(x))
    sign = (half & np.uint32(0x8000)) << np.uint32(16)
    exponent = (half >> np.uint32(10)) & np.uint32(0x1F)
    mantissa = half & np.uint32(0x3FF)
    if exponent == np.uint32(0x1F):  # Inf / NaN (payload kept)
        return _bits_to_f32(sign | np.uint32(0x7F800000) | (mantissa << np.uint32(13)))
    if exponent != np.uint32(0):
        return _bits_to_f32(sign | ((exponent + np.uint32(112)) << np.uint32(23)) | (mantissa << np.uint32(13)))
    # zero or subnormal: mantissa x 2^-24, a product by a power of two (exact)
    return _bits_to_f32(_f32_to_bits(np.float32(mantissa) * np.float32(2.0**-24)) | sign)


@njit
def _f32_to_f16(value):
    """float32 -> float16 bits, round to nearest even in integer arithmetic (so no fast-math flag
    can reorder it); NaN -> 0x7E00 and the sign, as torch."""
    bits = _f32_to_bits(value)
    sign = (bits >> np.uint32(16)) & np.uint32(0x8000)
    magnitude = bits & np.uint32(0x7FFFFFFF)
    if magnitude > np.uint32(0x7F800000):
        half = np.uint32(0x7E00)
    elif magnitude >= np.uint32(0x477FF000):  # >= 65520, half-way to 2^16: rounds to Inf
        half = np.uint32(0x7C00)
    elif magnitude >= np.uint32(0x38800000):  # >= 2^-14: a normal float16
        rebased = magnitude - np.uint32(112 << 23)
        half = (rebased + np.uint32(0xFFF) + ((rebased >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
    elif magnitude <= np.uint32(0x33000000):  # <= 2^-25: rounds to zero (2^-25 itself is a tie to even 0)
        half = np.uint32(0)
    else:  # subnormal: the 24-bit significand shifted into units of 2^-24, rounded to nearest even
        shift = np.uint32(126) - (magnitude >> np.uint32(23))
        significand = (magnitude & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
        half = significand >> shift
        remainder = significand & ((np.uint32(1) << shift) - np.uint32(1))
        midpoint = np.uint32(1) << (shift - np.uint32(1))
        if remainder > midpoint or (remainder == midpoint and (half & np.uint32(1)) == np.uint32(1)):
            half += np.uint32(1)
    return np.int16(np.uint16(half | sign))


def _store(out, index, value):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_store)
def _store_impl(out, index, value):
    if out.dtype == types.uint16:  # float32 -> bfloat16, round to nearest even, NaN -> 0x7FC0 (torch's rule)

        def store_bf16(out, index, value):
            bits = _f32_to_bits(value)
            rounded = np.uint16((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
            out[index] = np.uint16(0x7FC0) if value != value else rounded  # a select: keeps the loop vectorised

        return store_bf16
    if out.dtype == types.int16:

        def store_f16(out, index, value):
            out[index] = _f32_to_f16(value)

        return store_f16
    if out.dtype == types.float32:

        def store_f32(out, index, value):
            out[index] = value

        return store_f32
    return None


@_compiled(nogil=True, fastmath=_FASTMATH)
def task_vector_sums(vlm, reasoner, base):
    """(‖τ_V‖², ‖τ_R‖², ⟨τ_V, τ_R⟩, ‖θ_0‖²) of one chunk: τ in float32, products and sums in float64."""
    norm_v = 0.0
    norm_r = 0.0
    dot_vr = 0.0
    norm_0 = 0.0
    for i in range(vlm.size):
        theta_0 = _widen(base[i])
        tau_v = np.float64(_widen(vlm[i]) - theta_0)
        tau_r = np.float64(_widen(reasoner[i]) - theta_0)
        norm_v += tau_v * tau_v
        norm_r += tau_r * tau_r
        dot_vr += tau_v * tau_r
        norm_0 += np.float64(theta_0) * np.float64(theta_0)
    return norm_v, norm_r, dot_vr, norm_0


@_compiled(nogil=True, fastmath=_FASTMATH)
def merge_into(out, vlm, reasoner, base, lambda_v, lambda_r, lambda_0):
    """out = λ_V θ_V + λ_R θ_R + λ_0 θ_0 in float32, rounded once to ``out``'s dtype.

    Zero terms are skipped (and λ_V = 1 not applied), so λ = (1, 0) gives the VLM bit for bit,
    and a term with λ = 0 cannot bring in a NaN from its input.
    """
    weight_v = np.float32(lambda_v)
    weight_r = np.float32(lambda_r)
    weight_0 = np.float32(lambda_0)
    scale_v = lambda_v != 1.0
    use_r = lambda_r != 0.0
    use_0 = lambda_0 != 0.0
    for i in range(out.size):
        value = _widen(vlm[i])
        if scale_v:
            value = value * weight_v
        if use_r:
            value = value + _widen(reasoner[i]) * weight_r
        if use_0:
            value = value + _widen(base[i]) * weight_0
        _store(out, i, value)


def _nonfinite(x):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_nonfinite)
def _nonfinite_impl(x):  # NaN or ±Inf: an all-ones exponent
    if x == types.uint16:
        return lambda x: (x & np.uint16(0x7F80)) == np.uint16(0x7F80)
    if x == types.int16:
        return lambda x: (np.uint16(x) & np.uint16(0x7C00)) == np.uint16(0x7C00)
    if x == types.float32:
        return lambda x: (_f32_to_bits(x) & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
    return None


@_compiled(nogil=True)
def all_finite(values):
    """Whether no element is NaN or ±Inf; no early exit, so that it vectorises."""
    bad = False
    for i in range(values.size):
        bad |= _nonfinite(values[i])
    return not bad


@_compiled(nogil=True, fastmath=_FASTMATH)
def analysis_sums(vlm, reasoner, base):
    """One chunk's sums for ``frankmerge analyze``: ⟨θ_V,θ_V⟩, ⟨θ_R,θ_R⟩, ⟨θ_V,θ_R⟩, ⟨θ_0,θ_0⟩,
    ‖θ_V − θ_R‖², ⟨τ_V,τ_V⟩, ⟨τ_R,τ_R⟩, ⟨τ_V,τ_R⟩ (differences in float32, products and sums in
    float64), and the count of entries where τ_V and τ_R have opposite signs."""
    theta_vv = 0.0
    theta_rr = 0.0
    theta_vr = 0.0
    theta_00 = 0.0
    diff_sq = 0.0
    tau_vv = 0.0
    tau_rr = 0.0
    tau_vr = 0.0
    conflicts = 0
    for i in range(vlm.size):
        v = _widen(vlm[i])
        r = _widen(reasoner[i])
        b = _widen(base[i])
        theta_vv += np.float64(v) * np.float64(v)
        theta_rr += np.float64(r) * np.float64(r)
        theta_vr += np.float64(v) * np.float64(r)
        theta_00 += np.float64(b) * np.float64(b)
        diff = np.float64(v - r)
        diff_sq += diff * diff
        tau_v = np.float64(v - b)
        tau_r = np.float64(r - b)
        tau_vv += tau_v * tau_v
        tau_rr += tau_r * tau_r
        tau_vr += tau_v * tau_r
        conflicts += ((tau_v > 0.0) and (tau_r < 0.0)) or ((tau_v < 0.0) and (tau_r > 0.0))
    return theta_vv, theta_rr, theta_vr, theta_00, diff_sq, tau_vv, tau_rr, tau_vr, conflicts

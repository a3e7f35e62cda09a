"""Casts of the merge's numpy chunks between dtypes, rounded exactly as torch rounds.

By the fused kernels where they take both dtypes (bfloat16, float16, float32: the common case,
without importing torch), by torch on zero-copy views otherwise (float64, float8). One difference
from torch: NaN cast to bfloat16 becomes 0x7FC0, as in the kernels' merged chunks, where torch's
vectorised cast writes 0xFFFF; NaN reaches a cast only under ``--allow-nonfinite``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from frankmerge import kernels
from frankmerge.checkpoints.dtypes import F32, DType, to_torch


def cast_into(out: np.ndarray[Any, Any], out_dtype: DType, values: np.ndarray[Any, Any], dtype: DType) -> np.ndarray[Any, Any]:
    """``values`` (holding ``dtype``) cast into ``out`` (holding ``out_dtype``); returns ``out``."""
    if dtype == out_dtype:
        np.copyto(out, values)
    elif kernels.supports(dtype, out_dtype):
        kernels.convert(out, values)
    else:
        to_torch(out, out_dtype).copy_(to_torch(values, dtype))
    return out


def as_float32(values: np.ndarray[Any, Any], dtype: DType, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
    """``values`` widened (or, from float64, rounded) to float32, into ``out`` or a new array."""
    return cast_into(np.empty(values.shape, np.float32) if out is None else out, F32, values, dtype)


def as_float64(values: np.ndarray[Any, Any], dtype: DType) -> np.ndarray[Any, Any]:
    """``values`` as a new float64 array (exact: every float32, float16 and bfloat16 is a float64)."""
    if dtype.storage.kind == "f":
        return values.astype(np.float64)
    if kernels.supports(dtype):
        return as_float32(values, dtype).astype(np.float64)
    return to_torch(values, dtype).double().numpy()

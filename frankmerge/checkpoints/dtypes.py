"""The tensor dtypes a checkpoint may hold, without torch.

The merge moves tensors as numpy arrays (importing torch costs ~1.5 s of a merge's start-up).
numpy has no bfloat16, so each dtype names the numpy type that holds its bytes: bfloat16 travels
as ``uint16`` bit patterns, the float8 types as ``uint8``. Every other float dtype is numpy's own,
so a float array's numpy type alone tells which dtype it holds. torch's dtype is looked up only
where torch computes (float64 inputs, TIES/DARE, profiling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DType:
    """One safetensors dtype: its code in the header, its name (torch's), the numpy type of its bytes."""

    code: str  # "BF16"
    name: str  # "bfloat16", the name transformers' configs and torch use
    storage: np.dtype[Any]
    is_floating_point: bool

    @property
    def itemsize(self) -> int:
        return self.storage.itemsize

    @property
    def torch(self) -> torch.dtype:
        """torch's dtype of the same name (imports torch)."""
        import torch

        return getattr(torch, self.name)

    def __str__(self) -> str:
        return self.name


def _dtype(code: str, name: str, storage: type, floating: bool = False) -> DType:
    return DType(code, name, np.dtype(storage), floating)


F64 = _dtype("F64", "float64", np.float64, True)
F32 = _dtype("F32", "float32", np.float32, True)
F16 = _dtype("F16", "float16", np.float16, True)
BF16 = _dtype("BF16", "bfloat16", np.uint16, True)
SAFETENSORS: dict[str, DType] = {
    d.code: d
    for d in (
        F64,
        F32,
        F16,
        BF16,
        _dtype("I64", "int64", np.int64),
        _dtype("I32", "int32", np.int32),
        _dtype("I16", "int16", np.int16),
        _dtype("I8", "int8", np.int8),
        _dtype("U8", "uint8", np.uint8),
        _dtype("BOOL", "bool", np.bool_),
        _dtype("F8_E4M3", "float8_e4m3fn", np.uint8, True),
        _dtype("F8_E5M2", "float8_e5m2", np.uint8, True),
    )
}
BY_NAME: dict[str, DType] = {d.name: d for d in SAFETENSORS.values()}
OUTPUT_DTYPES: dict[str, DType] = {"bfloat16": BF16, "float16": F16, "float32": F32}


def as_dtype(dtype: DType | str | torch.dtype) -> DType:
    """A DType from itself, its name or torch's dtype (callers that hold torch tensors pass those)."""
    if isinstance(dtype, DType):
        return dtype
    return BY_NAME[str(dtype).removeprefix("torch.")]


def dtype_name(dtype: DType | torch.dtype) -> str:
    """The transformers-style name of a dtype (``torch.bfloat16`` -> ``"bfloat16"``)."""
    return str(dtype).removeprefix("torch.")


def element_size(dtype: DType | torch.dtype) -> int:
    return dtype.itemsize


def to_torch(values: np.ndarray[Any, Any], dtype: DType) -> torch.Tensor:
    """A torch view of an array holding ``dtype``'s bytes (no copy; imports torch)."""
    import torch

    if dtype.storage == np.uint16:  # torch's numpy bridge takes int16, not uint16
        values = values.view(np.int16)
    tensor = torch.from_numpy(values)
    return tensor if tensor.dtype == dtype.torch else tensor.view(dtype.torch)


def from_torch(tensor: torch.Tensor) -> np.ndarray[Any, Any]:
    """The numpy array holding a tensor's bytes (no copy), typed as ``DType.storage``."""
    import torch

    dtype = as_dtype(tensor.dtype)
    if dtype.is_floating_point and dtype.storage.kind in "ui":  # bfloat16, float8: numpy has no such type
        tensor = tensor.view(torch.int16 if dtype.itemsize == 2 else torch.uint8)
    return tensor.detach().numpy().view(dtype.storage)

"""Casts of numpy chunks round as torch's casts, bit for bit, and numpy/torch views share memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frankmerge.casting import as_float64, cast_into
from frankmerge.checkpoints.dtypes import BY_NAME, SAFETENSORS, as_dtype, from_torch, to_torch

FLOATS = ("bfloat16", "float16", "float32", "float64")


def _specials(dtype: torch.dtype) -> torch.Tensor:
    """Random values across many binades, with ±0, ±Inf, NaN, overflow and subnormal edges."""
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(4096, generator=generator, dtype=torch.float64) * 2.0 ** torch.randint(
        -30, 30, (4096,), generator=generator
    )
    edges = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 65504.0, 65520.0, 1e-8, 6e-8, 3e38, 1e-40])
    return torch.cat([values, edges.double()]).to(dtype)


@pytest.mark.parametrize("source", FLOATS)
@pytest.mark.parametrize("target", FLOATS)
def test_cast_into_matches_torch_bit_for_bit(source: str, target: str) -> None:
    """Every non-NaN value bit for bit; NaN stays NaN (to bfloat16 the kernels write 0x7FC0, as in
    merged chunks, where torch's vectorised cast writes 0xFFFF and its scalar one 0x7FC0)."""
    values = _specials(getattr(torch, source))
    expected = values.to(getattr(torch, target))
    src, dst = BY_NAME[source], BY_NAME[target]
    out = np.empty(values.numel(), dtype=dst.storage)
    cast_into(out, dst, from_torch(values), src)
    got = to_torch(out, dst)
    nan = expected.isnan()
    assert torch.equal(got.isnan(), nan) and int(nan.sum()) == 1
    assert torch.equal(got[~nan].view(torch.uint8), expected[~nan].view(torch.uint8))


@pytest.mark.parametrize("source", FLOATS)
def test_as_float64_is_exact(source: str) -> None:
    values = _specials(getattr(torch, source))
    got = torch.from_numpy(as_float64(from_torch(values), BY_NAME[source]))
    assert torch.equal(got.isnan(), values.isnan())
    assert torch.equal(got[~got.isnan()], values.double()[~got.isnan()])


@pytest.mark.parametrize("code", sorted(SAFETENSORS))
def test_views_share_memory_both_ways(code: str) -> None:
    dtype = SAFETENSORS[code]
    assert as_dtype(dtype.torch) == as_dtype(dtype.name) == dtype and dtype.torch.itemsize == dtype.itemsize
    tensor = torch.zeros(8, dtype=dtype.torch)
    array = from_torch(tensor)
    assert array.dtype == dtype.storage and array.size == 8
    array.view(np.uint8)[:] = 1
    assert torch.equal(tensor.view(torch.uint8), torch.ones(8 * dtype.itemsize, dtype=torch.uint8))
    assert to_torch(array, dtype).data_ptr() == tensor.data_ptr() and to_torch(array, dtype).dtype == dtype.torch

"""The fused numba kernels agree with float64 references, round like torch, and see every NaN/Inf."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frankmerge import kernels


def _bits(tensor: torch.Tensor) -> np.ndarray:
    return kernels.as_array(tensor.contiguous())


def _triple(dtype: torch.dtype, n: int = 100_003, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=gen) * 0.02
    vlm = base + torch.randn(n, generator=gen) * 0.002
    reasoner = base + torch.randn(n, generator=gen) * 0.001
    return vlm.to(dtype), reasoner.to(dtype), base.to(dtype)


@pytest.mark.parametrize("dtypes", [(torch.bfloat16,) * 3, (torch.float32,) * 3, (torch.bfloat16, torch.float32, torch.bfloat16)])
def test_sums_match_float64(dtypes):
    vlm, reasoner, base = (t.to(d) for t, d in zip(_triple(torch.float32), dtypes, strict=True))
    got = kernels.task_vector_sums(_bits(vlm), _bits(reasoner), _bits(base))
    # τ is formed in float32 (exact for bfloat16 inputs), then products and sums in float64
    tau_v, tau_r, theta_0 = (vlm.float() - base.float()).double(), (reasoner.float() - base.float()).double(), base.double()
    expected = [tau_v @ tau_v, tau_r @ tau_r, tau_v @ tau_r, theta_0 @ theta_0]
    for value, reference in zip(got, expected, strict=True):
        assert value == pytest.approx(float(reference), rel=1e-9)


def test_sums_propagate_nan_and_inf():
    vlm, reasoner, base = _triple(torch.bfloat16)
    for bad in (float("nan"), float("inf")):
        spoiled = reasoner.clone()
        spoiled[777] = bad
        sums = kernels.task_vector_sums(_bits(vlm), _bits(spoiled), _bits(base))
        assert not np.isfinite(sums[1])


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_merge_is_the_rounded_linear_combination(out_dtype):
    vlm, reasoner, base = _triple(torch.bfloat16)
    lambdas = (0.7, 0.45, 1.0 - 0.7 - 0.45)
    out = torch.empty(vlm.numel(), dtype=out_dtype)
    kernels.merge_into(_bits(out), _bits(vlm), _bits(reasoner), _bits(base), *lambdas)
    reference = lambdas[0] * vlm.double() + lambdas[1] * reasoner.double() + lambdas[2] * base.double()
    # float32 arithmetic then one rounding: within one float32 rounding of the exact value, or within
    # one bfloat16 ulp where the float32 result falls next to a rounding boundary.
    if out_dtype == torch.float32:
        torch.testing.assert_close(out.double(), reference, rtol=4e-7, atol=1e-9)
    else:
        correctly_rounded = reference.to(torch.bfloat16)
        ulp = (correctly_rounded.double().abs() * 2**-7).clamp_min(2**-133)
        assert ((out.double() - correctly_rounded.double()).abs() <= ulp).all()
        # bf16 inputs put many exact results on rounding ties, which float32 λs break either way:
        # no better than torch's float32 arithmetic can do, but no worse either.
        torch_f32 = (vlm.float() * lambdas[0] + reasoner.float() * lambdas[1] + base.float() * lambdas[2]).bfloat16()
        assert (out.double() - reference).norm() <= 1.01 * (torch_f32.double() - reference).norm()


def test_bfloat16_rounding_is_torchs():
    """Round to nearest even, ties included, overflow to Inf, subnormals and signed zeros kept."""
    special = torch.tensor([0.0, -0.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 3.3895e38, 3.4e38, 1e-40, -1e-40, float("inf")])
    values = torch.cat([special, torch.randn(50_000) * 10.0 ** torch.randint(-30, 30, (50_000,))])
    out = torch.empty(values.numel(), dtype=torch.bfloat16)
    kernels.merge_into(_bits(out), _bits(values), _bits(values), _bits(values), 1.0, 0.0, 0.0)
    assert np.array_equal(_bits(out), _bits(values.to(torch.bfloat16)))
    nan = torch.full((4,), float("nan"))
    kernels.merge_into(_bits(out[:4]), _bits(nan), _bits(nan), _bits(nan), 1.0, 0.0, 0.0)
    assert out[:4].isnan().all()


def test_identity_merge_is_bit_exact_and_ignores_unused_inputs():
    vlm, reasoner, base = _triple(torch.bfloat16)
    vlm[0] = -0.0
    reasoner[1] = base[2] = float("nan")  # weight 0: must not leak into the result
    out = torch.empty_like(vlm)
    kernels.merge_into(_bits(out), _bits(vlm), _bits(reasoner), _bits(base), 1.0, 0.0, 0.0)
    assert np.array_equal(_bits(out), _bits(vlm))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_all_finite(dtype):
    values = _triple(dtype)[0]
    assert kernels.all_finite(_bits(values))
    big = values.clone()
    big[3] = torch.finfo(dtype).max
    assert kernels.all_finite(_bits(big))
    for bad in (float("nan"), float("inf"), float("-inf")):
        spoiled = values.clone()
        spoiled[-1] = bad
        assert not kernels.all_finite(_bits(spoiled)), bad


def test_supported_dtypes():
    assert kernels.supports(torch.bfloat16, torch.float32)
    assert not kernels.supports(torch.bfloat16, torch.float16)  # numba has no float16: torch path


def test_kernels_compile_without_a_writable_cache(tmp_path):
    """Read-only package and home directories: numba cannot cache, the kernels still compile and run."""
    import subprocess
    import sys

    script = """
import numba.core.caching as caching, numpy as np
def no_locator(self, py_func):
    raise RuntimeError("cannot cache function: no locator available")
caching.FunctionCache.__init__ = no_locator
from frankmerge import kernels
assert not kernels.all_finite(np.array([1.0, np.inf], np.float32))
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"

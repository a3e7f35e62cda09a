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


@pytest.mark.parametrize(
    "dtypes",
    [(torch.bfloat16,) * 3, (torch.float16,) * 3, (torch.float32,) * 3, (torch.bfloat16, torch.float32, torch.float16)],
)
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


@pytest.mark.parametrize(
    ("in_dtype", "out_dtype"), [(torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32), (torch.float16, torch.float16)]
)
def test_merge_is_the_rounded_linear_combination(in_dtype, out_dtype):
    vlm, reasoner, base = _triple(in_dtype)
    lambdas = (0.7, 0.45, 1.0 - 0.7 - 0.45)
    out = torch.empty(vlm.numel(), dtype=out_dtype)
    kernels.merge_into(_bits(out), _bits(vlm), _bits(reasoner), _bits(base), *lambdas)
    reference = lambdas[0] * vlm.double() + lambdas[1] * reasoner.double() + lambdas[2] * base.double()
    # float32 arithmetic then one rounding: within one float32 rounding of the exact value, or within
    # one 16-bit ulp where the float32 result falls next to a rounding boundary.
    if out_dtype == torch.float32:
        torch.testing.assert_close(out.double(), reference, rtol=4e-7, atol=1e-9)
    else:
        correctly_rounded = reference.to(out_dtype)
        info = torch.finfo(out_dtype)  # eps = one ulp at 1.0; below the normal range, subnormal spacing
        ulp = (correctly_rounded.double().abs() * info.eps).clamp_min(info.smallest_normal * info.eps)
        assert ((out.double() - correctly_rounded.double()).abs() <= ulp).all()
        # 16-bit inputs put many exact results on rounding ties, which float32 λs break either way:
        # no better than torch's float32 arithmetic can do, but no worse either.
        torch_f32 = (vlm.float() * lambdas[0] + reasoner.float() * lambdas[1] + base.float() * lambdas[2]).to(out_dtype)
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_identity_merge_is_bit_exact_and_ignores_unused_inputs(dtype):
    vlm, reasoner, base = _triple(dtype)
    vlm[0] = -0.0
    reasoner[1] = base[2] = float("nan")  # weight 0: must not leak into the result
    out = torch.empty_like(vlm)
    kernels.merge_into(_bits(out), _bits(vlm), _bits(reasoner), _bits(base), 1.0, 0.0, 0.0)
    assert np.array_equal(_bits(out), _bits(vlm))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
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


def test_float16_widening_is_exact_for_every_bit_pattern():
    halves = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16)
    out = torch.empty(halves.numel(), dtype=torch.float32)
    kernels.merge_into(_bits(out), _bits(halves), _bits(halves), _bits(halves), 1.0, 0.0, 0.0)
    expected = halves.float()
    nan = expected.isnan()
    assert torch.equal(out[~nan].view(torch.int32), expected[~nan].view(torch.int32))  # subnormals, ±0, ±Inf
    assert out[nan].isnan().all()


def test_float16_rounding_is_torchs():
    """Round to nearest even at every midpoint between float16 values, subnormals, overflow to Inf."""
    finite = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16).double()
    finite = finite[finite.isfinite()].unique()
    midpoints = ((finite[1:] + finite[:-1]) / 2).float()
    edges = torch.tensor(
        [65504.0, 65519.99, 65520.0, 1e6, 2**-25, 2**-25 * 1.0000001, 1.5 * 2**-24, 2**-14 - 2**-25, float("inf")]
    )
    values = torch.cat([midpoints, edges, -edges, torch.randn(200_000) * 10.0 ** torch.randint(-9, 6, (200_000,)).float()])
    values = torch.cat([values, torch.nextafter(values, torch.tensor(float("inf"))), torch.nextafter(values, torch.tensor(0.0))])
    out = torch.empty(values.numel(), dtype=torch.float16)
    kernels.merge_into(_bits(out), _bits(values), _bits(values), _bits(values), 1.0, 0.0, 0.0)
    assert torch.equal(out.view(torch.int16), values.to(torch.float16).view(torch.int16))
    nan = torch.full((3,), float("nan"))
    kernels.merge_into(_bits(out[:3]), _bits(nan), _bits(nan), _bits(nan), 1.0, 0.0, 0.0)
    assert out[:3].isnan().all()


def test_supported_dtypes():
    assert kernels.supports(torch.bfloat16, torch.float16, torch.float32)
    assert not kernels.supports(torch.float64) and not kernels.supports(torch.int64)  # torch's path


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


@pytest.mark.parametrize(
    ("in_dtype", "out_dtype"),
    [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16), (torch.float64, torch.float32)],
    ids=["bf16-fused", "f16-fused", "f64-torch-path"],
)
def test_streaming_paths_match_float64(tmp_path, in_dtype, out_dtype):
    """Both the fused path and torch's (dtypes without a kernel) give the same sums and merged rows,
    with a merged head and a VLM tail (merge_shared's rows past the smaller vocabulary) and a patched row."""
    from safetensors.torch import save_file

    from frankmerge.checkpoints.reader import Checkpoint
    from frankmerge.checkpoints.writer import PlannedTensor, ShardedWriter
    from frankmerge.streaming import RowPatch, Source, Workspace, task_vector_sums, write_merged

    rows, width, merged_rows = 50, 37, 40
    tensors = [t.reshape(rows, width) for t in _triple(torch.float32, n=rows * width)]
    for role, tensor in zip(("vlm", "reasoner", "base"), tensors, strict=True):
        (tmp_path / role).mkdir()
        save_file({"w": tensor.to(in_dtype)}, tmp_path / role / "model.safetensors")
    vlm, reasoner, base = (Checkpoint(tmp_path / role) for role in ("vlm", "reasoner", "base"))
    sources = (Source("vlm", vlm, "w"), Source("reasoner", reasoner, "w"), Source("base", base, "w"))
    ws = Workspace(333, out_dtype)  # chunks that cut rows
    sums = task_vector_sums(ws, *sources, rows * width)
    v, r, b = (t.to(in_dtype).double().reshape(-1) for t in tensors)
    assert sums.norm_v_sq == pytest.approx(float((v - b) @ (v - b)), rel=1e-5)
    assert sums.dot_vr == pytest.approx(float((v - b) @ (r - b)), rel=1e-4)

    (tmp_path / "out").mkdir()
    writer = ShardedWriter(tmp_path / "out", [PlannedTensor("w", out_dtype, (rows, width))], 1 << 30)
    patch = RowPatch(width, {3: torch.full((width,), 0.5)})
    write_merged(ws, writer, "w", sources, 0.6, 0.3, merged_rows * width, rows * width, patch=patch)
    writer.close()
    with Checkpoint(tmp_path / "out") as out:
        got = out.load("w").double()
    expected = (0.6 * v + 0.3 * r + 0.1 * b).reshape(rows, width).to(out_dtype).double()
    expected[merged_rows:] = v.reshape(rows, width)[merged_rows:].to(out_dtype).double()
    expected[3] = 0.5
    torch.testing.assert_close(got, expected, rtol=torch.finfo(out_dtype).eps, atol=1e-6)
    assert torch.equal(got[merged_rows:], expected[merged_rows:])  # the VLM's tail, bit for bit
    for checkpoint in (vlm, reasoner, base):
        checkpoint.close()

"""Kernels spread over threads give the same bits for any thread count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from frankmerge import MergeRecipe, Prior, merge, workers
from frankmerge.analysis import analyze_task_vectors
from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.cli import main
from frankmerge.drift.prior import PriorOptions, build_prior
from frankmerge.streaming import Source, Workspace, task_vector_sums

THREAD_COUNTS = (1, 2, 3)


def test_pieces_cover_the_range_in_order():
    assert workers.pieces(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert workers.pieces(0, 4) == []
    assert workers.available_cores() >= 1


def test_map_returns_results_in_piece_order():
    for threads in THREAD_COUNTS:
        with workers.using(threads) as pool:
            assert pool.threads == threads
            assert workers.current() is pool
            assert pool.map(lambda lo, hi: (lo, hi), 10, 3) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert workers.current().threads == 1  # back to the caller's thread


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_statistics_are_bit_identical_for_any_thread_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype):
    monkeypatch.setattr(workers, "PIECE", 1000)  # many pieces per chunk on a small tensor
    n = 25_013
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, generator=gen) * 0.02
    roles = {
        "vlm": base + torch.randn(n, generator=gen) * 0.003,
        "reasoner": base + torch.randn(n, generator=gen) * 0.001,
        "base": base,
    }
    sources = []
    for role, values in roles.items():
        (tmp_path / role).mkdir()
        save_file({"w": values.to(dtype)}, str(tmp_path / role / "model.safetensors"))
        sources.append(Source(role, Checkpoint(tmp_path / role), "w"))
    got = []
    for threads in THREAD_COUNTS:
        with workers.using(threads):
            sums = task_vector_sums(Workspace(8000, torch.float32), *sources, n)
        got.append((sums.norm_v_sq, sums.norm_r_sq, sums.dot_vr, sums.norm_0_sq))
    assert got[0] == got[1] == got[2]  # exact equality: the same additions in the same order
    tau_v = roles["vlm"].to(dtype).double() - base.to(dtype).double()
    assert got[0][0] == pytest.approx(float(tau_v @ tau_v), rel=1e-6)


def test_merge_is_bit_identical_for_any_thread_count(tiny_triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(workers, "PIECE", 64)  # tiny tensors: several pieces each
    triple = tiny_triple("qwen2_5_vl", layout="v5", sharded=True, dtype="bfloat16")
    recipe = MergeRecipe(vlm=str(triple.vlm), reasoner=str(triple.reasoner), base=str(triple.base), prior=Prior(kind="none"))
    outputs = []
    for threads in THREAD_COUNTS:
        out = tmp_path / f"threads-{threads}"
        result = merge(recipe, out, progress=False, chunk=256, threads=threads)
        tensors: dict[str, torch.Tensor] = {}
        for file in sorted(out.glob("*.safetensors")):
            tensors.update(load_file(str(file)))
        outputs.append((tensors, result.stats, result.coefficients))
    reference, stats, coefficients = outputs[0]
    assert any(c.lambda_r != 0.0 for c in coefficients)  # a real merge, not a copy of the VLM
    for tensors, other_stats, other_coefficients in outputs[1:]:
        assert other_stats == stats  # the sums, exactly
        assert other_coefficients == coefficients
        assert tensors.keys() == reference.keys()
        for name, values in reference.items():
            assert torch.equal(tensors[name].view(torch.uint8), values.view(torch.uint8)), name


def test_analysis_is_bit_identical_for_any_thread_count(tiny_triple, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(workers, "PIECE", 64)  # tiny tensors: several pieces each
    triple = tiny_triple("qwen2_5_vl", layout="v5", sharded=True, dtype="bfloat16")
    rows = []
    for threads in THREAD_COUNTS:
        result = analyze_task_vectors(str(triple.vlm), str(triple.reasoner), str(triple.base), chunk=256, threads=threads)
        rows.append(result.rows)
    assert any(r.sign_conflict > 0 for r in rows[0])  # real task vectors, not zeros
    assert rows[0] == rows[1] == rows[2]  # every float exactly


def test_drift_prior_is_bit_identical_for_any_thread_count(tiny_triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(workers, "PIECE", 64)
    triple = tiny_triple("qwen2_5_vl", layout="v5", sharded=True, dtype="bfloat16")
    priors = []
    for threads in THREAD_COUNTS:
        options = PriorOptions(chunk=256, threads=threads)
        prior = build_prior(triple.vlm, triple.reasoner, tmp_path / f"prior-{threads}.safetensors", options)
        priors.append((load_file(prior.path), {k: (e.norm, e.vlm_norm) for k, e in prior.meta.entries.items()}))
    reference, norms = priors[0]
    assert any(bool(t.abs().sum() > 0) for t in reference.values())
    for tensors, other_norms in priors[1:]:
        assert other_norms == norms  # ‖Δ‖ and ‖θ_V‖ per tensor, exactly
        assert tensors.keys() == reference.keys()
        for name, values in reference.items():
            assert torch.equal(tensors[name].view(torch.uint8), values.view(torch.uint8)), name


def test_analyze_and_drift_prior_pass_threads_to_the_workers(tiny_triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    triple = tiny_triple("qwen2_vl")
    seen: list[int] = []
    real = workers.using

    def using(threads: int):  # noqa: ANN202 - the context manager workers.using returns
        seen.append(threads)
        return real(threads)

    monkeypatch.setattr(workers, "using", using)
    roles = ["--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner)]
    analysis = CliRunner().invoke(
        main, ["analyze", *roles, "--base", str(triple.base), "--out", str(tmp_path / "a"), "-q", "--threads", "3"]
    )
    assert analysis.exit_code == 0, analysis.output
    prior = CliRunner().invoke(main, ["drift-prior", *roles, "--out", str(tmp_path / "p.safetensors"), "--threads", "2"])
    assert prior.exit_code == 0, prior.output
    assert seen == [3, 2]
    default = CliRunner().invoke(main, ["drift-prior", *roles, "--out", str(tmp_path / "q.safetensors")])
    assert default.exit_code == 0 and seen[-1] == workers.available_cores()


def test_torch_runs_on_the_merges_thread_count_and_gets_its_own_back() -> None:
    """torch, when a merge needs it, computes on the count ``torch_threads`` set; after, its own count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with workers.torch_threads(1):
            assert workers.torch_module().get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)

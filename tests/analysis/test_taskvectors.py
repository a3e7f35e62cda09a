"""`frankmerge analyze` statistics against a direct float64 computation on whole tensors."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from frankmerge.analysis import analyze_task_vectors
from frankmerge.analysis.diagnostics import COS_WARN, diagnose
from frankmerge.analysis.taskvectors import GroupStats, TaskVectorAnalysis, module_group
from frankmerge.cli import main
from frankmerge.methods.frank import prior_weights
from tests.analysis.reference import load_all

LAYER = re.compile(r"layers\.(\d+)\.(.+)$")


def _direct(triple) -> dict[tuple[int, str], dict[str, float]]:  # type: ignore[no-untyped-def]
    """Per (block, group) statistics from whole float64 tensors, names matched by their suffix."""
    states = {role: load_all(getattr(triple, role)) for role in ("vlm", "reasoner", "base")}

    def blocks(state: dict[str, torch.Tensor]) -> dict[tuple[int, str], torch.Tensor]:
        found = {}
        for name, tensor in state.items():
            match = LAYER.search(name)
            if match and "vision" not in name and "visual" not in name:
                found[(int(match.group(1)), match.group(2))] = tensor.double().flatten()
        return found

    v, r, b = (blocks(states[k]) for k in ("vlm", "reasoner", "base"))
    assert set(v) == set(r) == set(b)
    grouped: dict[tuple[int, str], list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
    for (index, suffix), theta_v in v.items():
        for group in (module_group(suffix), "block"):
            grouped.setdefault((index, group), []).append((theta_v, r[(index, suffix)], b[(index, suffix)]))
    out = {}
    for key, parts in grouped.items():
        theta_v, theta_r, theta_0 = (torch.cat([p[i] for p in parts]) for i in range(3))
        tau_v, tau_r = theta_v - theta_0, theta_r - theta_0
        out[key] = {
            "norm_v": float(tau_v.norm()),
            "norm_r": float(tau_r.norm()),
            "norm_0": float(theta_0.norm()),
            "cos_vr": float(tau_v @ tau_r / (tau_v.norm() * tau_r.norm())),
            "sign_conflict": float(((tau_v * tau_r) < 0).double().mean()),
            "dist_vr": float((theta_v - theta_r).norm()),
            "cos_theta_vr": float(theta_v @ theta_r / (theta_v.norm() * theta_r.norm())),
            "numel": theta_v.numel(),
        }
    return out


@pytest.mark.parametrize(("family", "chunk"), [("qwen3_vl", 1 << 22), ("gemma3", 1000), ("llava", 777)])
def test_statistics_equal_direct_computation(tiny_triple, family: str, chunk: int):
    triple = tiny_triple(family)
    result = analyze_task_vectors(str(triple.vlm), str(triple.reasoner), str(triple.base), alpha=0.3, chunk=chunk)
    expected = _direct(triple)
    assert {(row.index, row.group) for row in result.rows} == set(expected)
    for row in result.rows:
        want = expected[(row.index, row.group)]
        assert row.numel == want["numel"]
        for key in ("norm_v", "norm_r", "norm_0", "dist_vr"):
            assert getattr(row, key) == pytest.approx(want[key], rel=1e-5), (row.index, row.group, key)
        for key in ("cos_vr", "cos_theta_vr", "sign_conflict"):
            assert getattr(row, key) == pytest.approx(want[key], abs=1e-5), (row.index, row.group, key)
        if want["norm_0"] > 0:
            assert row.rel_norm_v == pytest.approx(want["norm_v"] / want["norm_0"], rel=1e-5)
            assert row.rel_dist_vr == pytest.approx(want["dist_vr"] / want["norm_0"], rel=1e-5)
        else:  # Gemma's norms are stored as offsets from 1 and start at 0: no relative norm exists
            assert math.isnan(row.rel_norm_v) and math.isnan(row.rel_dist_vr)
    weights = prior_weights("exponential", 4, 0.3)
    for block, w_v, lam in zip(result.blocks, weights, result.lambda_v_eq16, strict=True):
        nv, nr = block.norm_v**2, block.norm_r**2
        assert lam == pytest.approx(w_v * nv / (w_v * nv + (1 - w_v) * nr))
    assert {r.group for r in result.rows} >= {"attention", "mlp", "norms", "block"}


def test_module_groups():
    assert module_group("self_attn.q_proj.weight") == "attention"
    assert module_group("self_attn.k_proj.bias") == "attention"
    assert module_group("self_attn.q_norm.weight") == "norms"
    assert module_group("mlp.down_proj.weight") == "mlp"
    assert module_group("input_layernorm.weight") == "norms"
    assert module_group("pre_feedforward_layernorm.weight") == "norms"
    assert module_group("something.else") == "other"


def test_cli_writes_csv_json_and_plots(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    out = tmp_path / "analysis"
    args = ["analyze", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base)]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--alpha", "0.2"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "analysis.json").read_text())
    assert data["num_blocks"] == 4 and data["alpha_eq16"] == 0.2 and len(data["blocks"]) == 4
    assert set(data["blocks"][0]["groups"]) == {"attention", "mlp", "norms"}
    rows = list(csv.DictReader((out / "analysis.csv").open()))
    assert len(rows) == 4 * 4 and {r["group"] for r in rows} == {"attention", "mlp", "norms", "block"}
    block0 = next(r for r in rows if r["group"] == "block" and r["block"] == "0")
    assert float(block0["cos_vr"]) == pytest.approx(data["blocks"][0]["cos_vr"])
    for name in ("fig3_cosine.png", "norms.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    for warning in data["warnings"]:
        assert f"warning: {warning['message']}" in result.output


def test_cli_refuses_non_homologous_models_and_writes_nothing(tiny_triple, tmp_path: Path):
    qwen, llava = tiny_triple("qwen2_vl"), tiny_triple("llava")
    out = tmp_path / "analysis"
    args = ["analyze", "--vlm", str(qwen.vlm), "--reasoner", str(llava.reasoner), "--base", str(qwen.base), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and result.output.startswith("error: ") and not out.exists()


def _synthetic(blocks: list[dict[str, float]], alpha: float = 0.0) -> TaskVectorAnalysis:
    rows = []
    for index, b in enumerate(blocks):
        rows.append(
            GroupStats(
                index=index,
                group="block",
                numel=100,
                norm_v=b["nv"],
                norm_r=b["nr"],
                norm_0=100.0,
                rel_norm_v=b["nv"] / 100,
                rel_norm_r=b["nr"] / 100,
                cos_vr=b.get("cos", 0.0),
                sign_conflict=0.5,
                dist_vr=b.get("dist", 1.0),
                rel_dist_vr=b.get("dist", 1.0) / 100,
                cos_theta_vr=b.get("cos_theta", 0.999),
            )
        )
    weights = prior_weights("exponential", len(blocks), alpha)
    eq16 = tuple(w * b["nv"] ** 2 / (w * b["nv"] ** 2 + (1 - w) * b["nr"] ** 2) for w, b in zip(weights, blocks, strict=True))
    return TaskVectorAnalysis("v", "r", "b", len(blocks), tuple(rows), alpha, "given", eq16, eq16, (), 0.0)


def test_no_warning_when_assumptions_hold():
    analysis = _synthetic([{"nv": 2.0, "nr": 1.0}] * 4)
    assert diagnose(analysis) == []


def test_warns_about_correlated_blocks():
    analysis = _synthetic([{"nv": 2.0, "nr": 1.0, "cos": 0.0}] * 3 + [{"nv": 2.0, "nr": 1.0, "cos": -0.45}])
    (warning,) = diagnose(analysis)
    assert warning.code == "correlated_task_vectors" and "layers 4" in warning.message and "-0.45" in warning.message
    assert COS_WARN < 0.45


def test_warns_when_eq16_hands_every_block_to_the_reasoner():
    analysis = _synthetic([{"nv": 0.1, "nr": 1.0}] * 8, alpha=0.1)
    (warning,) = diagnose(analysis)
    assert warning.code == "reasoner_dominates_eq16"
    assert "0.01× the size" in warning.message and "1/8" in warning.message


def test_warns_when_models_are_far_apart():
    analysis = _synthetic([{"nv": 30.0, "nr": 30.0, "dist": 40.0, "cos_theta": 0.8}] * 4)
    (warning,) = diagnose(analysis)
    assert warning.code == "far_apart_in_parameter_space" and "40.0%" in warning.message and "0.800" in warning.message
    assert math.isclose(analysis.blocks[0].rel_dist_vr, 0.4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=["bf16-fused", "f32-fused", "f64-torch"])
def test_tensor_sums_match_float64_on_both_paths(tmp_path: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    from frankmerge.analysis.taskvectors import tensor_sums
    from frankmerge.checkpoints.reader import Checkpoint
    from frankmerge.streaming import Source, Workspace

    gen = torch.Generator().manual_seed(3)
    base = torch.randn(4321, generator=gen) * 0.02
    values = {"vlm": base + torch.randn(4321, generator=gen) * 0.003, "reasoner": base - torch.randn(4321, generator=gen) * 0.002}
    values["base"] = base
    checkpoints = {}
    for role, tensor in values.items():
        (tmp_path / role).mkdir()
        save_file({"w": tensor.to(dtype)}, tmp_path / role / "model.safetensors")
        checkpoints[role] = Checkpoint(tmp_path / role)
    sources = tuple(Source(role, checkpoints[role], "w") for role in ("vlm", "reasoner", "base"))
    got = tensor_sums(Workspace(1000, torch.float32), torch.empty(1000), sources, 4321)
    v, r, b = (values[role].to(dtype).double() for role in ("vlm", "reasoner", "base"))
    tv, tr = v - b, r - b
    assert got.tau_vv == pytest.approx(float(tv @ tv), rel=1e-5) and got.tau_vr == pytest.approx(float(tv @ tr), rel=1e-4)
    assert got.theta_vv == pytest.approx(float(v @ v), rel=1e-6) and got.diff_sq == pytest.approx(
        float((v - r) @ (v - r)), rel=1e-5
    )
    assert got.conflicts == int(((tv > 0) & (tr < 0)).sum() + ((tv < 0) & (tr > 0)).sum())
    for checkpoint in checkpoints.values():
        checkpoint.close()

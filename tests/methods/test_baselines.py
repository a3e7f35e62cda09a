"""Every baseline against a direct whole-tensor computation written from method.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from frankmerge import FrankmergeError, MergeRecipe, merge
from frankmerge.methods.sparse import tensor_generator
from frankmerge.recipe import Parameters
from tests.reference import blocks_of, load_dir


def run(triple, tmp_path: Path, method: str, name: str = "out", **parameters) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    recipe = MergeRecipe(
        vlm=str(triple.vlm),
        reasoner=str(triple.reasoner),
        base=str(triple.base),
        method=method,
        parameters=Parameters(**parameters),
    )
    merge(recipe, tmp_path / name, progress=False)
    return load_dir(tmp_path / name), json.loads((tmp_path / name / "merge_report.json").read_text())


def block_tensors(triple):  # type: ignore[no-untyped-def]
    """(key, VLM name, θ_V, θ_R, θ_0) for every decoder block tensor, in float64."""
    V, R, B = load_dir(triple.vlm), load_dir(triple.reasoner), load_dir(triple.base)
    bv, br, bb = blocks_of(V), blocks_of(R), blocks_of(B)
    return [(key, bv[key], V[bv[key]].double(), R[br[key]].double(), B[bb[key]].double()) for key in sorted(bv)], V


def assert_blocks(merged, triple, expected_fn, tol=1e-5):  # type: ignore[no-untyped-def]
    rows, vlm_state = block_tensors(triple)
    for key, name, v, r, b in rows:
        torch.testing.assert_close(merged[name].double(), expected_fn(key, name, v, r, b), rtol=tol, atol=tol * 1e-1, msg=name)
    block_names = {row[1] for row in rows}
    for name, tensor in vlm_state.items():
        if name not in block_names:
            assert torch.equal(merged[name], tensor), f"{name} must stay the VLM's"


def test_linear_is_br2v(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    merged, report = run(triple, tmp_path, "linear")
    assert report["method_settings"] == {"beta": 0.9}
    card = (tmp_path / "out" / "README.md").read_text()
    assert "BR2V linear merging" in card and "beta = 0.9" in card, "the model card names the method and its setting"
    assert_blocks(merged, triple, lambda k, n, v, r, b: 0.9 * v + 0.1 * r)


def test_task_arithmetic_with_per_layer_lists(tiny_triple, tmp_path: Path):
    triple = tiny_triple("llava", layout="hub", sharded=True, vlm_extra_vocab=8)
    lv, lr = [0.1, 0.2, 0.3, 0.4], [1.0, 0.5, 0.25, 0.0]
    merged, _ = run(triple, tmp_path, "task_arithmetic", lambda_v=lv, lambda_r=lr)
    assert_blocks(merged, triple, lambda k, n, v, r, b: b + lv[k[0]] * (v - b) + lr[k[0]] * (r - b))


def test_task_arithmetic_half_half_is_the_average(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    merged, _ = run(triple, tmp_path, "task_arithmetic", lambda_v=0.5, lambda_r=0.5)
    assert_blocks(merged, triple, lambda k, n, v, r, b: (v + r) / 2)


def test_layer_swap_keeps_the_first_blocks(tiny_triple, tmp_path: Path):
    triple = tiny_triple("idefics3", layout="v5")
    merged, _ = run(triple, tmp_path, "layer_swap", k=2)
    assert_blocks(merged, triple, lambda k, n, v, r, b: v if k[0] < 2 else 0.9 * v + 0.1 * r)


def test_metagpt_uses_whole_model_norms(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    rows, _ = block_tensors(triple)
    nv = sum(float(((v - b) ** 2).sum()) for _, _, v, r, b in rows)
    nr = sum(float(((r - b) ** 2).sum()) for _, _, v, r, b in rows)
    merged, report = run(triple, tmp_path, "metagpt")
    assert [blk["lambda_v"] for blk in report["blocks"]] == pytest.approx([nv / (nv + nr)] * len(report["blocks"]))
    assert_blocks(merged, triple, lambda k, n, v, r, b: b + nv / (nv + nr) * (v - b) + nr / (nv + nr) * (r - b))


def _trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    k = max(1, int(density * tau.numel()))
    threshold = tau.abs().flatten().sort(descending=True).values[k - 1]
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def _ties_paper(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    elected = torch.sign(deltas[0] + deltas[1])
    total = torch.zeros_like(deltas[0])
    count = torch.zeros_like(deltas[0])
    for w, d in zip(weights, deltas, strict=True):
        agree = (torch.sign(d) == elected) & (d != 0)
        total += w * d * agree
        count += agree
    return total / count.clamp(min=1)


def test_ties_is_the_papers(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    merged, report = run(triple, tmp_path, "ties")
    assert report["method_settings"] == {"weights": [1.6, 0.2], "density": 0.2, "scale": 1.0, "mergekit_compat": False}
    assert_blocks(merged, triple, lambda k, n, v, r, b: b + _ties_paper([_trim(v - b, 0.2), _trim(r - b, 0.2)], [1.6, 0.2]))


def test_ties_mergekit_variant_normalises_by_weights(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    merged, _ = run(triple, tmp_path, "ties", density=0.5, weights=[1.0, 0.5], mergekit_compat=True)

    def expected(k, n, v, r, b):  # type: ignore[no-untyped-def]
        weighted = [1.0 * _trim(v - b, 0.5), 0.5 * _trim(r - b, 0.5)]
        elected = torch.where(weighted[0] + weighted[1] >= 0, 1.0, -1.0).double()
        masks = [torch.sign(d) == elected for d in weighted]
        divisor = 1.0 * masks[0] + 0.5 * masks[1]
        return b + (weighted[0] * masks[0] + weighted[1] * masks[1]) / torch.where(divisor == 0, 1.0, divisor)

    assert_blocks(merged, triple, expected)


def _dare(tau: torch.Tensor, p: float, seed: int, role: str, name: str) -> torch.Tensor:
    keep = torch.rand(tau.shape, generator=tensor_generator(seed, role, name)) >= p
    return tau * keep / (1 - p)


def test_dare_linear_rescales_by_one_over_keep(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    merged, _ = run(triple, tmp_path, "dare_linear", drop_rate=0.3, seed=7)
    assert_blocks(
        merged, triple, lambda k, n, v, r, b: b + 0.9 * _dare(v - b, 0.3, 7, "vlm", n) + 0.1 * _dare(r - b, 0.3, 7, "reasoner", n)
    )
    rows, _ = block_tensors(triple)
    _, name, v, r, b = rows[5]
    kept = (merged[name].double() - b - 0.1 * _dare(r - b, 0.3, 7, "reasoner", name)).abs() > 1e-9
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.05), "about 1 − p of the VLM's entries survive"


def test_dare_ties_elects_signs_after_dropping(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    merged, _ = run(triple, tmp_path, "dare_ties", drop_rate=0.5, seed=3)
    assert_blocks(
        merged,
        triple,
        lambda k, n, v, r, b: b + _ties_paper([_dare(v - b, 0.5, 3, "vlm", n), _dare(r - b, 0.5, 3, "reasoner", n)], [1.6, 0.2]),
    )


def _dare_l1(tau: torch.Tensor, p: float, seed: int, role: str, name: str) -> torch.Tensor:
    """mergekit's DARE rescale: survivors scaled back to the tensor's original L1 norm."""
    keep = torch.rand(tau.shape, generator=tensor_generator(seed, role, name)) >= p
    kept = tau * keep
    return kept * (tau.abs().sum() / kept.abs().sum())


def test_dare_linear_mergekit_variant_rescales_to_the_l1_norm(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    merged, report = run(triple, tmp_path, "dare_linear", drop_rate=0.4, seed=5, mergekit_compat=True)
    assert report["method_settings"]["mergekit_compat"] is True
    assert_blocks(
        merged,
        triple,
        lambda k, n, v, r, b: b + 0.9 * _dare_l1(v - b, 0.4, 5, "vlm", n) + 0.1 * _dare_l1(r - b, 0.4, 5, "reasoner", n),
    )


def test_dare_ties_mergekit_variant_does_not_divide(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    merged, _ = run(triple, tmp_path, "dare_ties", drop_rate=0.5, seed=3, weights=[1.0, 0.5], mergekit_compat=True)

    def expected(k, n, v, r, b):  # type: ignore[no-untyped-def]
        weighted = [1.0 * _dare_l1(v - b, 0.5, 3, "vlm", n), 0.5 * _dare_l1(r - b, 0.5, 3, "reasoner", n)]
        elected = torch.where(weighted[0] + weighted[1] >= 0, 1.0, -1.0).double()
        return b + sum(d * (torch.sign(d) == elected) for d in weighted)

    assert_blocks(merged, triple, expected)


def test_dare_is_reproducible_and_seeded(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    first, _ = run(triple, tmp_path, "dare_linear", "a", seed=1)
    again, _ = run(triple, tmp_path, "dare_linear", "b", seed=1)
    other, _ = run(triple, tmp_path, "dare_linear", "c", seed=2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize(
    ("method", "parameters", "message"),
    [
        ("ties", {"density": 0.0}, "density must be in (0, 1]"),
        ("ties", {"density": 1.5}, "density must be in (0, 1]"),
        ("dare_linear", {"drop_rate": 1.0}, "drop_rate must be in (0, 1)"),
        ("dare_ties", {"drop_rate": -0.1}, "drop_rate must be in (0, 1)"),
        ("task_arithmetic", {"lambda_v": [0.1, 0.2]}, "2 per-layer values but the VLM has 4 blocks"),
        ("linear", {"density": 0.5}, "does not apply to method 'linear'"),
        ("nonsense", {}, "'frank', 'linear', 'task_arithmetic', 'ties', 'dare_linear', 'dare_ties', 'layer_swap' or 'metagpt'"),
    ],
)
def test_bad_method_parameters(tiny_triple, tmp_path: Path, method: str, parameters: dict, message: str):
    from click.testing import CliRunner

    from frankmerge.cli import main

    triple = tiny_triple("qwen2_vl")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "vlm": str(triple.vlm),
                "reasoner": str(triple.reasoner),
                "base": str(triple.base),
                "method": method,
                "parameters": parameters,
            }
        )
    )
    result = CliRunner().invoke(main, ["merge", str(recipe), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_elementwise_methods_refuse_merge_shared(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    recipe = MergeRecipe(
        vlm=str(triple.vlm), reasoner=str(triple.reasoner), base=str(triple.base), method="ties", embeddings="merge_shared"
    )
    with pytest.raises(FrankmergeError, match="merge_shared"):
        merge(recipe, tmp_path / "out", progress=False)

"""Two bases (--reasoner-base): τ_R over the reasoner's own base, checked element-wise against an
independent float64 computation, through every kind of method, the CLI and the report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from frankmerge.errors import FrankmergeError, HomologyError, RecipeError
from frankmerge.merge import merge
from frankmerge.recipe import MergeRecipe, Prior, build_recipe
from tests.reference import blocks_of, load_dir, reference_merge


def _perturbed_copy(source: Path, target: Path, scale: float, seed: int) -> Path:
    """``source`` with every floating tensor moved by Gaussian noise of ``scale`` × its RMS."""
    shutil.copytree(source, target)
    generator = torch.Generator().manual_seed(seed)
    for path in target.glob("*.safetensors"):
        values = load_file(path)
        moved = {}
        for name, value in values.items():
            rms = value.float().pow(2).mean().sqrt().clamp_min(1e-3)
            moved[name] = (value.float() + scale * rms * torch.randn(value.shape, generator=generator)).to(value.dtype)
        save_file(moved, path, metadata={"format": "pt"})
    return target


@pytest.fixture()
def four(tiny_triple: Any, tmp_path: Path) -> dict[str, Path]:
    """A llava triple plus a reasoner base 20 % away from --base."""
    triple = tiny_triple("llava")
    own = _perturbed_copy(triple.base, tmp_path / "reasoner-base", 0.2, seed=1)
    return {"vlm": triple.vlm, "reasoner": triple.reasoner, "base": triple.base, "reasoner_base": own}


def _recipe(paths: dict[str, Path], **extra: Any) -> MergeRecipe:
    return build_recipe({**{r: str(p) for r, p in paths.items()}, **extra}, source="test")


def test_frank_with_a_reasoner_base_matches_the_reference(four: dict[str, Path], tmp_path: Path) -> None:
    result = merge(_recipe(four, prior=Prior(kind="none")), tmp_path / "out", progress=False)
    ref = reference_merge(four["vlm"], four["reasoner"], four["base"], "none", None, reasoner_base=four["reasoner_base"])
    one_base = reference_merge(four["vlm"], four["reasoner"], four["base"], "none", None)
    for got, want, other in zip(result.coefficients, ref["blocks"], one_base["blocks"], strict=True):  # type: ignore[call-overload]
        assert got.lambda_v == pytest.approx(want["lambda_v"], rel=1e-5)
        assert abs(want["lambda_v"] - other["lambda_v"]) > 1e-3  # the second base changes the coefficients
    merged = load_dir(tmp_path / "out")
    for name, expected in ref["expected"].items():  # type: ignore[union-attr]
        torch.testing.assert_close(merged[name].double(), expected, rtol=1e-5, atol=1e-6, msg=name)
    report = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    assert report["recipe"]["reasoner_base"] == str(four["reasoner_base"])
    assert "reasoner_base" in report["inputs"]
    assert report["compatibility"]["lineage"]["to_base"]["reasoner"]["reference"] == "reasoner_base"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "τ_R = θ_R − θ_0R" in card and str(four["reasoner_base"]) in card


def test_task_arithmetic_with_a_reasoner_base(four: dict[str, Path], tmp_path: Path) -> None:
    recipe = _recipe(four, method="task_arithmetic", parameters={"lambda_v": 0.3, "lambda_r": 0.7})
    merge(recipe, tmp_path / "out", progress=False)
    V, R, B, RB = (load_dir(four[r]) for r in ("vlm", "reasoner", "base", "reasoner_base"))
    merged = load_dir(tmp_path / "out")
    bv, br, bb, brb = blocks_of(V), blocks_of(R), blocks_of(B), blocks_of(RB)
    for key, name in bv.items():
        theta_0 = B[bb[key]].double()
        expected = theta_0 + 0.3 * (V[name].double() - theta_0) + 0.7 * (R[br[key]].double() - RB[brb[key]].double())
        torch.testing.assert_close(merged[name].double(), expected, rtol=1e-5, atol=1e-6, msg=name)


def test_ties_with_a_reasoner_base_equals_ties_on_the_transplanted_reasoner(four: dict[str, Path], tmp_path: Path) -> None:
    """TIES is element-wise and nonlinear: with two bases it must equal TIES over a reasoner written
    to disk as θ_0 + (θ_R − θ_0R)."""
    transplanted = Path(shutil.copytree(four["reasoner"], tmp_path / "transplanted"))
    B, RB = load_dir(four["base"]), load_dir(four["reasoner_base"])
    for path in transplanted.glob("*.safetensors"):
        values = load_file(path)
        save_file({k: (v + B[k] - RB[k]) if k in B else v for k, v in values.items()}, path, metadata={"format": "pt"})
    merge(_recipe(four, method="ties"), tmp_path / "two", progress=False)
    one = {k: v for k, v in four.items() if k != "reasoner_base"} | {"reasoner": transplanted}
    merge(_recipe(one, method="ties"), tmp_path / "one", progress=False)
    two, single = load_dir(tmp_path / "two"), load_dir(tmp_path / "one")
    for name in blocks_of(two).values():
        torch.testing.assert_close(two[name], single[name], rtol=1e-5, atol=1e-6, msg=name)


def test_cli_and_bad_reasoner_bases(four: dict[str, Path], tmp_path: Path, tiny_triple: Any) -> None:
    args = [f"--{r.replace('_', '-')}={p}" for r, p in four.items()]
    done = subprocess.run(
        [sys.executable, "-m", "frankmerge.cli", "merge", *args, "--no-prior", "-q", "--out", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"reasoner_base: {four['reasoner_base']}" in (tmp_path / "cli" / "frankmerge_recipe.yaml").read_text()
    with pytest.raises(RecipeError, match="reasoner_base does not apply"):
        _recipe(four, method="linear")
    with pytest.raises(RecipeError, match="merge_shared with reasoner_base"):
        _recipe(four, prior=Prior(kind="none"), embeddings="merge_shared")
    other = tiny_triple("qwen2_vl").base  # another family: a qwen2 decoder against llama
    with pytest.raises(HomologyError, match="--reasoner-base"):
        merge(_recipe({**four, "reasoner_base": other}, prior=Prior(kind="none")), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_a_missing_reasoner_base_is_named_by_its_flag(four: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FrankmergeError, match="^--reasoner-base "):
        merge(_recipe({**four, "reasoner_base": tmp_path / "nowhere"}, prior=Prior(kind="none")), tmp_path / "o", progress=False)

"""Parity with mergekit on a tiny text-LLM triple, in mergekit's own semantics (mergekit_compat).

mergekit cannot read a VLM, so it merges the VLM's decoder saved as a Qwen2ForCausalLM (the
tiny Qwen2-VL's hub layout already uses Qwen2's tensor names); frankmerge merges the real VLM.
Both compute in float32; decoder block tensors must agree element-wise to float32 rounding.
DARE's masks come from each tool's own random generator, so for DARE the comparison is of the
rescaling rule on a shared mask (mergekit's ``rescaled_masked_tensor`` vs ours).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from frankmerge import MergeRecipe, merge
from frankmerge.methods.sparse import drop_and_rescale
from frankmerge.recipe import Parameters
from tests.reference import blocks_of, load_dir

mergekit = pytest.importorskip("mergekit", reason="mergekit is not installed: pip install -e '.[dev]' installs it")

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def _text_copy_of_vlm(triple, root: Path) -> Path:  # type: ignore[no-untyped-def]
    """The VLM's language model as a plain Qwen2ForCausalLM checkpoint (same tensors, base's config)."""
    target = shutil.copytree(triple.base, root / "vlm-text")
    state = {k: v for k, v in load_file(triple.vlm / "model.safetensors").items() if not k.startswith("visual.")}
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    return target


def _run_mergekit(config: dict, out: Path) -> dict[str, torch.Tensor]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    run_merge(MergeConfiguration.model_validate(config), str(out), options=MergeOptions(cuda=False, copy_tokenizer=False))
    return load_dir(out)


def _compare(frank_dir: Path, kit: dict[str, torch.Tensor]) -> int:
    ours = load_dir(frank_dir)
    ours_blocks, kit_blocks = blocks_of(ours), blocks_of(kit)
    assert set(ours_blocks) == set(kit_blocks)
    for key, name in ours_blocks.items():
        torch.testing.assert_close(ours[name], kit[kit_blocks[key]], **TOLERANCE, msg=str(key))
    return len(ours_blocks)


@pytest.mark.parametrize(
    ("method", "parameters", "kit_models"),
    [
        ("task_arithmetic", {"lambda_v": 0.3, "lambda_r": 0.7}, [{"weight": 0.3}, {"weight": 0.7}]),
        # weights that do not sum to one (no hidden normalisation) and per-layer lists (layer i gets entry i)
        ("task_arithmetic", {"lambda_v": 1.0, "lambda_r": 0.6}, [{"weight": 1.0}, {"weight": 0.6}]),
        (
            "task_arithmetic",
            {"lambda_v": [0.1, 0.4, 0.7, 1.0], "lambda_r": [0.9, 0.5, 0.2, 0.0]},
            [{"weight": [0.1, 0.4, 0.7, 1.0]}, {"weight": [0.9, 0.5, 0.2, 0.0]}],
        ),
        (
            "ties",
            {"weights": [1.6, 0.2], "density": 0.2, "mergekit_compat": True},
            [{"weight": 1.6, "density": 0.2}, {"weight": 0.2, "density": 0.2}],
        ),
        (
            "ties",
            {"weights": [1.0, 1.0], "density": 0.6, "mergekit_compat": True},
            [{"weight": 1.0, "density": 0.6}, {"weight": 1.0, "density": 0.6}],
        ),
    ],
)
def test_block_tensors_match_mergekit(tiny_triple, tmp_path: Path, method: str, parameters: dict, kit_models: list):
    triple = tiny_triple("qwen2_vl")
    vlm_text = _text_copy_of_vlm(triple, tmp_path)
    config = {
        "merge_method": method,
        "base_model": str(triple.base),
        "models": [
            {"model": str(vlm_text), "parameters": kit_models[0]},
            {"model": str(triple.reasoner), "parameters": kit_models[1]},
        ],
        "dtype": "float32",
    }
    kit = _run_mergekit(config, tmp_path / "kit")
    recipe = MergeRecipe(
        vlm=str(triple.vlm),
        reasoner=str(triple.reasoner),
        base=str(triple.base),
        method=method,
        parameters=Parameters(**parameters),
    )
    merge(recipe, tmp_path / "ours", progress=False)
    assert _compare(tmp_path / "ours", kit) == 4 * 12  # 4 blocks x 12 Qwen2 tensors, all compared


def test_dare_rescale_matches_mergekit_on_a_shared_mask():
    from mergekit.sparsify import RescaleNorm, rescaled_masked_tensor

    generator = torch.Generator().manual_seed(0)
    tau = torch.randn(64, 32, generator=generator)
    drop_rate = 0.4
    ours = drop_and_rescale(tau, drop_rate, torch.Generator().manual_seed(5), l1_rescale=True)
    mask = (torch.rand(tau.shape, generator=torch.Generator().manual_seed(5)) >= drop_rate).to(tau.dtype)
    torch.testing.assert_close(ours, rescaled_masked_tensor(tau, mask, RescaleNorm.l1))
    paper = drop_and_rescale(tau, drop_rate, torch.Generator().manual_seed(5), l1_rescale=False)
    torch.testing.assert_close(paper, tau * mask / (1 - drop_rate))

"""The paper's own VLM layouts (InternVL chat, NVILA) merge by layout alone, remote code untouched."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from frankmerge import MergeRecipe, Prior, merge
from frankmerge.cli import main
from frankmerge.testbed.paper_layouts import MARKER, build_internvl_chat, build_nvila
from tests.reference import load_dir, reference_merge

ADDED_BY_MERGE = {"README.md", "merge_report.json", "frankmerge_recipe.yaml", "model.safetensors.index.json"}


@pytest.fixture(scope="module")
def paper_triples(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("paper")
    return {
        "internvl_qwen2": build_internvl_chat(root / "internvl_qwen2"),
        "internvl_internlm2": build_internvl_chat(root / "internvl_internlm2", llm="internlm2"),
        "nvila": build_nvila(root / "nvila"),
    }


def _cli_merge(vlm: Path, triple, out: Path):  # type: ignore[no-untyped-def]
    args = ["merge", "--vlm", str(vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base), "--out", str(out)]
    return CliRunner().invoke(main, [*args, "--no-prior", "-q"])


def _merge(triple, out: Path, prior: Prior) -> None:  # type: ignore[no-untyped-def]
    merge(
        MergeRecipe(vlm=str(triple.vlm), reasoner=str(triple.reasoner), base=str(triple.base), prior=prior), out, progress=False
    )


def _check_against_reference(vlm_weights: Path, triple, out_weights: Path, prior: Prior) -> None:  # type: ignore[no-untyped-def]
    ref = reference_merge(vlm_weights, triple.reasoner, triple.base, prior.kind, prior.alpha)
    report = json.loads(next(out_weights.parent.glob("**/merge_report.json")).read_text())
    for got, want in zip(report["blocks"], ref["blocks"], strict=True):
        assert got["lambda_v"] == pytest.approx(want["lambda_v"], rel=1e-5)
    merged = load_dir(out_weights)
    assert set(merged) == set(ref["vlm_state"]), "same tensor names as the input"
    for name, expected in ref["expected"].items():
        torch.testing.assert_close(merged[name].double(), expected, rtol=1e-5, atol=1e-6)
    for name, tensor in ref["vlm_state"].items():
        if name not in ref["expected"]:
            assert torch.equal(merged[name], tensor), name


@pytest.mark.parametrize("key", ["internvl_qwen2", "internvl_internlm2"])
def test_internvl_chat_merges_without_running_its_code(paper_triples, tmp_path: Path, key: str):
    triple = paper_triples[key]
    out = tmp_path / "out"
    prior = Prior(kind="exponential", alpha=0.2)
    _merge(triple, out, prior)
    _check_against_reference(triple.vlm, triple, out, prior)
    assert {p.name for p in triple.vlm.iterdir() if not p.name.endswith(".safetensors")} | ADDED_BY_MERGE == {
        p.name for p in out.iterdir() if not p.name.endswith(".safetensors")
    }
    source, written = (json.loads((d / "config.json").read_text()) for d in (triple.vlm, out))
    assert written["auto_map"] == source["auto_map"] and written["model_type"] == "internvl_chat"
    assert written["llm_config"]["tie_word_embeddings"] is False
    assert (out / "modeling_internvl_chat.py").read_text() == (triple.vlm / "modeling_internvl_chat.py").read_text()
    assert not list(tmp_path.parent.glob(f"**/{MARKER}")) and not list(triple.vlm.parent.glob(f"**/{MARKER}"))
    names = set(load_dir(out))
    assert any(n.startswith("vision_model.") for n in names) and any(n.startswith("mlp1.") for n in names)
    if key == "internvl_internlm2":
        assert any(n.endswith("attention.wqkv.weight") for n in names) and "language_model.output.weight" in names


def test_internlm2_vlm_is_not_homologous_with_a_qwen2_reasoner(paper_triples, tmp_path: Path):
    vlm, other = paper_triples["internvl_internlm2"], paper_triples["internvl_qwen2"]
    result = CliRunner().invoke(
        main,
        [
            "merge",
            "--vlm",
            str(vlm.vlm),
            "--reasoner",
            str(other.reasoner),
            "--base",
            str(vlm.base),
            "--out",
            str(tmp_path / "o"),
            "--no-prior",
            "-q",
        ],
    )
    assert result.exit_code == 1 and "qwen2 decoder" in result.output and "internlm2" in result.output
    assert not (tmp_path / "o").exists()


def test_nvila_keeps_its_folders(paper_triples, tmp_path: Path):
    triple = paper_triples["nvila"]
    out = tmp_path / "out"
    prior = Prior(kind="none")
    _merge(triple, out, prior)
    _check_against_reference(triple.vlm / "llm", triple, out / "llm", prior)
    for folder in ("vision_tower", "mm_projector"):
        comparison = filecmp.dircmp(triple.vlm / folder, out / folder)
        assert not comparison.left_only and not comparison.right_only and not comparison.diff_files, folder
    assert (out / "config.json").read_text() == (triple.vlm / "config.json").read_text()
    assert (out / "trainer_state.json").is_file() and (out / "llm" / "tokenizer.json").is_file()
    assert not list(out.glob("*.safetensors")), "NVILA has no root weights"


@pytest.mark.parametrize("folder", ["vision_tower", "llm"])
def test_nvila_missing_subfolder(paper_triples, tmp_path: Path, folder: str):
    vlm = shutil.copytree(paper_triples["nvila"].vlm, tmp_path / "vlm")
    shutil.rmtree(vlm / folder)
    triple = paper_triples["nvila"]
    result = CliRunner().invoke(
        main,
        [
            "merge",
            "--vlm",
            str(vlm),
            "--reasoner",
            str(triple.reasoner),
            "--base",
            str(triple.base),
            "--out",
            str(tmp_path / "o"),
            "--no-prior",
            "-q",
        ],
    )
    assert result.exit_code == 1 and f"{folder}/" in result.output and "re-download" in result.output
    assert not (tmp_path / "o").exists()


def test_internvl_chat_with_unsupported_llm(paper_triples, tmp_path: Path):
    vlm = shutil.copytree(paper_triples["internvl_qwen2"].vlm, tmp_path / "vlm")
    config = json.loads((vlm / "config.json").read_text())
    config["llm_config"]["architectures"] = ["Phi3ForCausalLM"]
    (vlm / "config.json").write_text(json.dumps(config))
    triple = paper_triples["internvl_qwen2"]
    result = CliRunner().invoke(
        main,
        [
            "merge",
            "--vlm",
            str(vlm),
            "--reasoner",
            str(triple.reasoner),
            "--base",
            str(triple.base),
            "--out",
            str(tmp_path / "o"),
            "--no-prior",
            "-q",
        ],
    )
    assert result.exit_code == 1 and "Phi3ForCausalLM" in result.output and "not supported" in result.output
    assert not (tmp_path / "o").exists()


def test_profile_needs_trust_remote_code_and_says_so(paper_triples, tmp_path: Path):
    triple = paper_triples["internvl_qwen2"]
    runner = CliRunner()
    result = runner.invoke(main, ["profile", "--vlm", str(triple.vlm), "--out", str(tmp_path / "p.json"), "-q"])
    assert result.exit_code == 1 and "--trust-remote-code" in result.output
    trusted = runner.invoke(
        main, ["profile", "--vlm", str(triple.vlm), "--out", str(tmp_path / "p.json"), "-q", "--trust-remote-code"]
    )
    assert trusted.exit_code == 1 and "not supported yet" in trusted.output
    nvila = runner.invoke(main, ["profile", "--vlm", str(paper_triples["nvila"].vlm), "--out", str(tmp_path / "p.json"), "-q"])
    assert nvila.exit_code == 1 and "VILA package" in nvila.output
    assert not (tmp_path / "p.json").exists() and not list(triple.vlm.glob(MARKER))


@pytest.mark.parametrize("key", ["internvl_internlm2", "nvila"])
def test_analyze_reads_remote_code_checkpoints_by_layout(paper_triples, tmp_path: Path, key: str):
    triple = paper_triples[key]
    args = ["analyze", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "analysis.json").is_file()
    assert not list(triple.vlm.rglob(MARKER))


@pytest.mark.parametrize("key", ["internvl_qwen2", "nvila"])
def test_merge_without_prior_option_on_remote_code_asks_for_alpha(paper_triples, tmp_path: Path, key: str):
    """FRANK with no prior option would profile; these VLMs only run through their own code."""
    triple = paper_triples[key]
    args = ["merge", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o"), "-q"])
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "--alpha" in lines[0] and "never executes" in lines[0] and "--trust-remote-code" not in lines[0]
    assert not (tmp_path / "o").exists() and not list(triple.vlm.glob(MARKER))


@pytest.mark.parametrize("recipe_file", sorted((Path(__file__).parents[1] / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_recipes_are_valid(recipe_file: Path):
    from frankmerge.recipe import load_recipe

    recipe = load_recipe(recipe_file)
    assert recipe.vlm and recipe.reasoner and recipe.base and recipe.method == "frank"
    assert recipe.prior is not None, "the paper pairs fix α: two of the three VLMs cannot be profiled here"

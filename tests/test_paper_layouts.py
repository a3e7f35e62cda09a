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


@pytest.mark.parametrize("key", ["internvl_qwen2", "internvl_internlm2"])
def test_internvl_chat_runs_as_transformers_internvl_with_identical_logits(paper_triples, tmp_path: Path, key: str):
    """The chat checkpoint converted in memory computes what the native model it was built from does
    (InternLM2: fused wqkv split back, run as Llama with the biases the fixture's Qwen2 source has)."""
    from PIL import Image
    from transformers import InternVLForConditionalGeneration

    from frankmerge.analysis.internvl_chat import ChatProcessor, load_native
    from frankmerge.checkpoints.reader import Checkpoint
    from frankmerge.testbed.tiny import build_tiny_triple

    chat = paper_triples[key].vlm
    native = build_tiny_triple(tmp_path / "native", "internvl", layout="hub").vlm  # the fixture's seeded source
    raw = json.loads((chat / "config.json").read_text())
    processor = ChatProcessor(chat, raw, "--vlm chat")
    image = Image.fromarray((torch.rand(70, 90, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    parts = [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]
    text = processor.apply_chat_template([{"role": "user", "content": parts}], add_generation_prompt=True, tokenize=False)
    inputs = dict(processor(text=[text], images=[image]))
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == processor.tokens == 4
    with Checkpoint(chat) as weights:
        converted = load_native(weights, raw, processor.image_token_id, "--vlm chat", dtype=torch.float32)
    reference = InternVLForConditionalGeneration.from_pretrained(native, dtype=torch.float32).eval()
    with torch.no_grad():
        got, want = converted(**inputs).logits, reference(**inputs).logits
    assert torch.allclose(got, want, rtol=0, atol=1e-5) and not torch.equal(got, torch.zeros_like(got))
    assert not list(chat.glob(MARKER))


@pytest.mark.parametrize("key", ["internvl_qwen2", "internvl_internlm2"])
def test_profile_runs_internvl_chat_without_its_code(paper_triples, tmp_path: Path, key: str):
    triple = paper_triples[key]
    out = tmp_path / "p.json"
    result = CliRunner().invoke(main, ["profile", "--vlm", str(triple.vlm), "--out", str(out), "--num-images", "3", "-q"])
    assert result.exit_code == 0, result.output
    profile = json.loads(out.read_text())
    layers = json.loads((triple.vlm / "config.json").read_text())["llm_config"]["num_hidden_layers"]
    assert [layer["layer"] for layer in profile["layers"]] == list(range(1, layers + 1)) and all(
        0 < layer["a_mean"] < 1 for layer in profile["layers"]
    )
    assert (
        profile["images"]["mean_visual_tokens"] == 4 and "InternVLForConditionalGeneration" in profile["method"]["chat_template"]
    )
    assert not list(triple.vlm.glob(MARKER))


def test_profile_refuses_what_it_cannot_run(paper_triples, tmp_path: Path):
    runner = CliRunner()
    out = ["--out", str(tmp_path / "p.json"), "-q"]
    vlm = shutil.copytree(paper_triples["internvl_qwen2"].vlm, tmp_path / "vlm")
    config = json.loads((vlm / "config.json").read_text())
    config["llm_config"]["architectures"] = ["Phi3ForCausalLM"]
    (vlm / "config.json").write_text(json.dumps(config))
    phi3 = runner.invoke(main, ["profile", "--vlm", str(vlm), *out])
    assert phi3.exit_code == 1 and "Phi3ForCausalLM" in phi3.output and "not supported" in phi3.output
    nvila = runner.invoke(main, ["profile", "--vlm", str(paper_triples["nvila"].vlm), *out])
    assert nvila.exit_code == 1 and "VILA package" in nvila.output
    assert not (tmp_path / "p.json").exists() and not list(vlm.glob(MARKER))


@pytest.mark.parametrize("key", ["internvl_internlm2", "nvila"])
def test_analyze_reads_remote_code_checkpoints_by_layout(paper_triples, tmp_path: Path, key: str):
    triple = paper_triples[key]
    args = ["analyze", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "analysis.json").is_file()
    assert not list(triple.vlm.rglob(MARKER))


def test_merge_without_prior_option_on_nvila_asks_for_alpha(paper_triples, tmp_path: Path):
    """FRANK with no prior option would profile; NVILA runs only through its own code."""
    triple = paper_triples["nvila"]
    args = ["merge", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o"), "-q"])
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "--alpha" in lines[0] and "never executes" in lines[0] and "--trust-remote-code" not in lines[0]
    assert not (tmp_path / "o").exists() and not list(triple.vlm.glob(MARKER))


def test_merge_without_prior_option_profiles_internvl_chat(paper_triples, tmp_path: Path):
    triple = paper_triples["internvl_qwen2"]
    args = ["merge", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "merge_report.json").read_text())
    assert (tmp_path / "o" / "profile.json").is_file() and report["recipe"]["prior"]["kind"] == "exponential"
    assert "profile" in report
    assert not list(triple.vlm.glob(MARKER))


@pytest.mark.parametrize("recipe_file", sorted((Path(__file__).parents[1] / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_recipes_are_valid(recipe_file: Path):
    from frankmerge.recipe import load_recipe

    recipe = load_recipe(recipe_file)
    assert recipe.vlm and recipe.reasoner and recipe.base and recipe.method == "frank"
    assert recipe.prior is not None, "the paper pairs fix α: two of the three VLMs cannot be profiled here"


@pytest.mark.parametrize("key", ["internvl_qwen2", "internvl_internlm2"])
def test_eval_runs_an_internvl_chat_merge_without_its_code(paper_triples, tmp_path: Path, key: str):
    from tests.evaluation import builders

    triple = paper_triples[key]
    merged = tmp_path / "merged"
    _merge(triple, merged, Prior(kind="exponential", alpha=0.1))
    data = builders.write_parquet(tmp_path / "data" / "validation-0.parquet", builders.mmmu_rows())
    args = ["eval", "--model", str(merged), "--benchmark", "mmmu", "--data", str(data), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, [*args, "--max-new-tokens", "4", "--batch-size", "2", "-q"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    assert len(records) == len(builders.mmmu_rows()) and all(r["error"] is None for r in records)
    assert all(0 < r["n_tokens"] <= 4 and r["n_prompt_tokens"] > 4 for r in records)
    assert not list(merged.glob(MARKER)) and not list(triple.vlm.glob(MARKER))


def test_chat_processor_renders_internvl_prompts(paper_triples):
    from PIL import Image

    from frankmerge.analysis.errors import ProfileError
    from frankmerge.analysis.internvl_chat import SYSTEM_MESSAGE, ChatProcessor

    chat = paper_triples["internvl_qwen2"].vlm
    processor = ChatProcessor(chat, json.loads((chat / "config.json").read_text()), "--vlm chat")
    parts = [{"type": "image"}, {"type": "text", "text": "Compare"}, {"type": "image"}]
    text = processor.apply_chat_template([{"role": "user", "content": parts}], add_generation_prompt=True, tokenize=False)
    user = "<|im_start|>user\n<image>\nCompare<image>\n<|im_end|>\n"
    assert text == f"<|im_start|>system\n{SYSTEM_MESSAGE}<|im_end|>\n{user}<|im_start|>assistant\n"
    images = [Image.new("RGB", (30, 40), "red"), Image.new("RGB", (90, 20), "blue")]
    batch = processor(text=[text, "<|im_start|>user\nhi<|im_end|>\n"], images=[images, []])
    ids = batch["input_ids"]
    assert int((ids[0] == processor.image_token_id).sum()) == 2 * 4 and int((ids[1] == processor.image_token_id).sum()) == 0
    assert tuple(batch["pixel_values"].shape) == (2, 3, 56, 56)
    with pytest.raises(ProfileError, match="placeholders"):
        processor(text=[text], images=[images[:1]])
    flat = processor(text=[text], images=images)  # transformers' other convention: one flat list in order
    assert torch.equal(flat["pixel_values"], batch["pixel_values"])
    with pytest.raises(ProfileError, match="placeholders"):
        processor(text=[text], images=images[:1])


def test_eval_refuses_nvila_merges_in_one_line(paper_triples, tmp_path: Path):
    from tests.evaluation import builders

    triple, says = paper_triples["nvila"], "VILA package"
    merged = tmp_path / "merged"
    _merge(triple, merged, Prior(kind="exponential", alpha=0.1))
    data = builders.write_parquet(tmp_path / "data" / "validation-0.parquet", builders.mmmu_rows())
    args = ["eval", "--model", str(merged), "--benchmark", "mmmu", "--data", str(data), "--out", str(tmp_path / "run"), "-q"]
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1 and len(lines) == 1 and says in lines[0], result.output
    assert not list(merged.rglob(MARKER)) and not (tmp_path / "run" / "generations.jsonl").exists()


def test_internvl_chat_config_keeps_rope_and_vision_settings():
    """Keys that transformers folds into rope_parameters must survive the translation (Qwen2.5: θ = 1e6)."""
    from frankmerge.analysis.internvl_chat import native_config

    llm = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
    llm |= {"num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 300, "rope_theta": 1000000.0}
    llm |= {"rope_scaling": {"type": "dynamic", "factor": 2.0}, "use_sliding_window": False}
    vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    vision |= {"qkv_bias": True, "qk_normalization": True, "norm_type": "rms_norm", "image_size": 448, "patch_size": 14}
    raw = {"model_type": "internvl_chat", "llm_config": llm, "vision_config": vision, "select_layer": -1}
    config = native_config(raw | {"downsample_ratio": 0.5, "force_image_size": 448}, 151667, "x")
    rope = config.text_config.rope_parameters
    assert rope["rope_theta"] == 1e6 and rope["rope_type"] == "dynamic" and rope["factor"] == 2.0
    assert config.vision_config.attention_bias and config.vision_config.use_qk_norm
    assert config.vision_config.norm_type == "rms_norm" and config.image_seq_length == 256
    assert config.image_token_id == 151667 and config.tie_word_embeddings is False


def test_profile_explains_a_remote_code_tokenizer(paper_triples, tmp_path: Path):
    """InternLM2-based chat checkpoints ship tokenization_internlm2.py and a sentencepiece model only."""
    vlm = shutil.copytree(paper_triples["internvl_internlm2"].vlm, tmp_path / "vlm")
    (vlm / "tokenizer.json").unlink()
    (vlm / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    tokenizer_config = json.loads((vlm / "tokenizer_config.json").read_text())
    tokenizer_config |= {
        "tokenizer_class": "InternLM2Tokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
    }
    (vlm / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (vlm / "tokenization_internlm2.py").write_text((vlm / "modeling_internvl_chat.py").read_text())
    result = CliRunner().invoke(main, ["profile", "--vlm", str(vlm), "--out", str(tmp_path / "p.json"), "-q"])
    assert result.exit_code == 1 and "tokenization_internlm2.py" in result.output and "tokenizer.json" in result.output
    assert not list(vlm.glob(MARKER)) and not (tmp_path / "p.json").exists()

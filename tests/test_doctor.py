"""The pair doctor: config fields, templates and lineage, on configs written as the hub and as
transformers 5 write them, and on tiny triples with one mismatch each."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from frankmerge.doctor import check_pair, compare_configs
from frankmerge.doctor.check import check_models
from frankmerge.doctor.fields import COSMETIC, EDGES, FUNCTION, decoder_facts
from frankmerge.doctor.lineage import measure_lineage, sampled_blocks, sampled_rows
from frankmerge.doctor.templates import read_template_facts
from frankmerge.errors import RecipeError
from frankmerge.inputs import open_inputs
from frankmerge.layouts import read_config
from frankmerge.merge import merge
from frankmerge.recipe import Prior, build_recipe
from tests.reference import load_dir

# As published on the hub (legacy keys), trimmed to what matters.
QWEN25_VL_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "max_window_layers": 28,
    "max_position_embeddings": 128000,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "vision_config": {"depth": 32, "hidden_size": 1280, "out_hidden_size": 3584},
}
R1_DISTILL_QWEN_7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000,
    "sliding_window": 4096,
    "use_sliding_window": False,
    "max_window_layers": 21,
    "max_position_embeddings": 131072,
    "use_mrope": False,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "bos_token_id": 151646,
    "eos_token_id": 151643,
}
QWEN25_7B = {**R1_DISTILL_QWEN_7B, "rope_theta": 1000000.0, "sliding_window": 131072, "max_window_layers": 28}


def _config_dir(root: Path, name: str, config: dict[str, Any]) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def _verdicts(configs: dict[str, Any]) -> dict[str, Any]:
    return {v.field.name: v for v in compare_configs(configs)}


def test_hub_configs_of_the_papers_pair_differ_in_rope_theta(tmp_path: Path) -> None:
    """Qwen2.5-VL-7B + R1-Distill-Qwen-7B + Qwen2.5-7B, legacy keys as on the hub: θ differs (function),
    max positions differ (edges), the unused sliding windows are not reported, M-RoPE is cosmetic."""
    configs = {
        role: read_config(_config_dir(tmp_path, role, cfg), role)
        for role, cfg in (("vlm", QWEN25_VL_7B), ("reasoner", R1_DISTILL_QWEN_7B), ("base", QWEN25_7B))
    }
    verdicts = _verdicts(configs)
    assert verdicts["rope_theta"].severity == FUNCTION
    assert verdicts["rope_theta"].values == {"vlm": 1e6, "reasoner": 1e4, "base": 1e6}
    assert verdicts["max_position_embeddings"].severity == EDGES
    assert "sliding_window" not in verdicts  # use_sliding_window is false everywhere: no window in use
    assert verdicts["mrope_section"].severity == COSMETIC
    assert verdicts["norm_eps"].same and verdicts["activation"].same and verdicts["head_dim"].same


def test_legacy_and_v5_spellings_of_one_setting_compare_equal(tmp_path: Path) -> None:
    """The hub's legacy flat Qwen2.5-VL config and the same config re-saved by transformers 5."""
    from transformers import AutoConfig

    legacy = _config_dir(tmp_path, "legacy", QWEN25_VL_7B)
    resaved = tmp_path / "v5"
    AutoConfig.from_pretrained(legacy).save_pretrained(resaved)
    assert "rope_parameters" in json.loads((resaved / "config.json").read_text())["text_config"]
    verdicts = compare_configs({"vlm": read_config(legacy, "vlm"), "reasoner": read_config(resaved, "reasoner")})
    assert [v.field.name for v in verdicts if not v.same] == []


def test_facts_from_every_rope_spelling() -> None:
    legacy = {"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}}
    v5 = {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0}}
    gemma3 = {
        "rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        }
    }
    facts = [decoder_facts(c) for c in (legacy, v5)]
    assert facts[0] == facts[1]
    assert facts[0]["rope_type"] == "llama3" and facts[0]["rope_other"] == {"low_freq_factor": 1.0}
    gemma = decoder_facts(gemma3)
    assert (gemma["rope_theta"], gemma["rope_type"], gemma["rope_factor"]) == (1e6, "linear", 8.0)
    windowed = decoder_facts({"sliding_window": 4096, "layer_types": ["sliding_attention", "full_attention"] * 3})
    assert (windowed["sliding_window"], windowed["sliding_layers"]) == (4096, 3)
    assert decoder_facts({"partial_rotary_factor": 0.5})["partial_rotary_factor"] == 0.5
    assert decoder_facts({"hidden_size": 64, "num_attention_heads": 4})["head_dim"] == 16


def _edit_config(directory: Path, **changes: Any) -> None:
    """Change text-decoder fields wherever this config keeps them (top level or text_config)."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    target = config.get("text_config", config)
    for key, value in changes.items():
        if key == "rope_theta" and "rope_parameters" in target:
            target["rope_parameters"]["rope_theta"] = value
        else:
            target[key] = value
    path.write_text(json.dumps(config))


def _copy_triple(triple: Any, root: Path) -> dict[str, Path]:
    return {role: Path(shutil.copytree(getattr(triple, role), root / role)) for role in ("vlm", "reasoner", "base")}


def _recipe(paths: dict[str, Path], **extra: Any) -> Any:
    return build_recipe({**{r: str(p) for r, p in paths.items()}, "prior": Prior(kind="none"), **extra}, source="test")


MISMATCHES = [
    ("rope_theta", 500000.0, "rope_theta", FUNCTION),
    ("rms_norm_eps", 1e-5, "norm_eps", FUNCTION),
    ("hidden_act", "gelu_pytorch_tanh", "activation", FUNCTION),
    ("partial_rotary_factor", 0.5, "partial_rotary_factor", FUNCTION),
    ("final_logit_softcapping", 30.0, "final_logit_softcapping", FUNCTION),
    ("max_position_embeddings", 4096, "max_position_embeddings", EDGES),
    ("eos_token_id", 7, "eos_token_id", EDGES),
    ("tie_word_embeddings", True, "tie_word_embeddings", COSMETIC),
]


@pytest.mark.parametrize(("key", "value", "field", "severity"), MISMATCHES)
def test_each_mismatch_on_a_tiny_triple_gets_its_severity(
    tiny_triple: Any, tmp_path: Path, key: str, value: Any, field: str, severity: str
) -> None:
    paths = _copy_triple(tiny_triple("llava"), tmp_path)
    _edit_config(paths["reasoner"], **{key: value})
    inputs = open_inputs(_recipe(paths))
    try:
        result = check_pair(inputs, lineage=False)
    finally:
        for item in inputs.values():
            item.checkpoint.close()
    differing = {v.field.name: v.severity for v in result.fields if not v.same}
    assert differing == {field: severity}
    assert bool(result.function_warnings()) == (severity == FUNCTION)


def test_sliding_window_in_use_on_one_role_is_an_edge_difference(tiny_triple: Any, tmp_path: Path) -> None:
    paths = _copy_triple(tiny_triple("qwen2_vl"), tmp_path)
    _edit_config(paths["reasoner"], use_sliding_window=True, sliding_window=64, layer_types=["sliding_attention"] * 4)
    result = check_models(str(paths["vlm"]), str(paths["reasoner"]))
    differing = {v.field.name: v.severity for v in result.fields if not v.same}
    assert differing == {"sliding_window": EDGES, "sliding_layers": EDGES, "mrope_section": COSMETIC}  # M-RoPE: VLM only


def _legacy_hub_triple(tiny_triple: Any, root: Path) -> dict[str, Path]:
    """A Qwen2.5-VL triple with hub tensor names and configs in the hub's legacy spelling, the
    reasoner trained under another RoPE base (as R1-Distill-Qwen-7B against Qwen2.5-VL-7B)."""
    paths = _copy_triple(tiny_triple("qwen2_5_vl", layout="hub"), root)
    vlm = json.loads((paths["vlm"] / "config.json").read_text())
    text = vlm.pop("text_config")
    rope = text.pop("rope_parameters")
    text.pop("layer_types", None)
    flat = {**vlm, **{k: v for k, v in text.items() if k not in ("model_type", "architectures", "dtype")}}
    flat.update(rope_theta=rope["rope_theta"], rope_scaling={"type": "mrope", "mrope_section": rope["mrope_section"]})
    (paths["vlm"] / "config.json").write_text(json.dumps(flat))
    for role, theta in (("reasoner", 500000.0), ("base", rope["rope_theta"])):
        config = json.loads((paths[role] / "config.json").read_text())
        config.pop("rope_parameters")
        config.pop("layer_types", None)
        config["rope_theta"] = theta
        (paths[role] / "config.json").write_text(json.dumps(config))
    return paths


def test_merge_warns_records_and_cards_a_function_changing_mismatch(
    tiny_triple: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = _legacy_hub_triple(tiny_triple, tmp_path)
    with caplog.at_level(logging.WARNING):
        result = merge(_recipe(paths), tmp_path / "out", progress=False)
    assert any("rope_theta differs" in r.getMessage() and "keeps the VLM's value" in r.getMessage() for r in caplog.records)
    compatibility = json.loads((tmp_path / "out" / "merge_report.json").read_text())["compatibility"]
    assert compatibility == result.report["compatibility"]
    assert compatibility["function_changing"] == ["rope_theta"]
    assert compatibility["lineage"]["to_base"]["reasoner"]["mean"] > 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Compatibility" in card and "rope_theta" in card and "config is the VLM's" in card
    merged = json.loads((tmp_path / "out" / "config.json").read_text())
    assert merged["rope_theta"] == 10000.0  # the VLM's value, as its config says


def test_strict_merge_refuses_in_one_line_and_writes_nothing(tiny_triple: Any, tmp_path: Path) -> None:
    paths = _legacy_hub_triple(tiny_triple, tmp_path)
    with pytest.raises(RecipeError, match=r"--strict: rope_theta differs .*reasoner 500000"):
        merge(_recipe(paths, strict=True), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    args = [f"--{r}={p}" for r, p in paths.items()]
    cli = [sys.executable, "-m", "frankmerge.cli", "merge", *args, "--no-prior", "--strict", "-q", "--out", str(tmp_path / "o")]
    done = subprocess.run(cli, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: --strict: rope_theta differs")
    assert not (tmp_path / "o").exists()


def test_check_command_prints_the_table_and_findings(tiny_triple: Any, tmp_path: Path) -> None:
    paths = _legacy_hub_triple(tiny_triple, tmp_path)
    args = [f"--{r}={p}" for r, p in paths.items()]
    report = tmp_path / "check.json"
    command = [sys.executable, "-m", "frankmerge.cli", "check", *args]
    done = subprocess.run([*command, "--json", str(report)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "rope_theta" in done.stdout and FUNCTION in done.stdout
    assert "distance to --base" in done.stdout and "findings:" in done.stdout
    saved = json.loads(report.read_text())
    assert saved["function_changing"] == ["rope_theta"]
    strict = subprocess.run([*command, "--strict"], capture_output=True, check=False)
    assert strict.returncode == 1


def test_clean_triple_has_no_findings_from_configs(tiny_triple: Any) -> None:
    triple = tiny_triple("llava")
    result = check_models(str(triple.vlm), str(triple.reasoner), str(triple.base))
    assert result.function_warnings() == [] and result.notes() == []
    assert result.lineage is not None and not any("not its base" in f for f in result.lineage_findings)


def _scaled_copy(source: Path, target: Path, base: Path, share: float) -> Path:
    """``base + share·(source − base)`` in every tensor: a model ``share`` of the way from base to source."""
    shutil.copytree(source, target)
    base_values = load_dir(base)
    for path in target.glob("*.safetensors"):
        values = load_file(path)
        save_file({k: base_values[k] + share * (v - base_values[k]) for k, v in values.items()}, path, metadata={"format": "pt"})
    return target


def _drop_last_block(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    last = config["num_hidden_layers"] - 1
    config["num_hidden_layers"] = last
    config.pop("layer_types", None)
    (target / "config.json").write_text(json.dumps(config))
    for path in target.glob("*.safetensors"):
        kept = {k: v for k, v in load_file(path).items() if f"layers.{last}." not in k}
        save_file(kept, path, metadata={"format": "pt"})
    return target


def test_candidate_bases_are_ranked_and_a_bad_one_is_reported(tiny_triple: Any, tmp_path: Path) -> None:
    """The reasoner's nearest base is a model 90 % of the way from --base to it; a 3-block candidate
    and a missing path are reported, not raised."""
    triple = tiny_triple("llava")
    near = _scaled_copy(triple.reasoner, tmp_path / "near-reasoner", triple.base, 0.9)
    short = _drop_last_block(triple.base, tmp_path / "short")
    result = check_models(
        str(triple.vlm),
        str(triple.reasoner),
        str(triple.base),
        candidate_bases=(str(near), str(short), str(tmp_path / "missing")),
    )
    assert result.lineage is not None
    reasoner_near = result.lineage.candidates[str(near)]["reasoner"].mean
    assert reasoner_near is not None and reasoner_near < 0.2 * result.lineage.to_base["reasoner"].mean  # type: ignore[operator]
    assert any(f.startswith(f"the reasoner is nearer {near}") and "--reasoner-base" in f for f in result.findings())
    assert result.lineage.candidates[str(short)]["vlm"].problem == "4 vs 3 decoder blocks"
    assert any("not comparable" in f and "missing" in f for f in result.findings())


def test_a_base_that_is_not_the_base_is_named(tiny_triple: Any, tmp_path: Path) -> None:
    """--base unrelated to both (fresh random weights): both roles are flagged."""
    triple = tiny_triple("llava")
    stranger = shutil.copytree(triple.base, tmp_path / "stranger")
    generator = torch.Generator().manual_seed(0)
    for path in stranger.glob("*.safetensors"):
        values = load_file(path)
        fresh = {k: torch.randn(v.shape, generator=generator) * v.float().std().clamp_min(1e-3) for k, v in values.items()}
        save_file({k: fresh[k].to(v.dtype) for k, v in values.items()}, path, metadata={"format": "pt"})
    result = check_models(str(triple.vlm), str(triple.reasoner), str(stranger))
    flagged = [f for f in result.lineage_findings if "--base is not its base" in f]
    assert len(flagged) == 2


def test_documented_lineage_names_the_math_base(tiny_triple: Any, tmp_path: Path) -> None:
    """A local reasoner named like DeepSeek-R1-Distill-Qwen-7B against a --base named Qwen2.5-7B."""
    triple = tiny_triple("llava")
    reasoner = shutil.copytree(triple.reasoner, tmp_path / "DeepSeek-R1-Distill-Qwen-7B")
    wrong = shutil.copytree(triple.base, tmp_path / "Qwen2.5-7B")
    result = check_models(str(triple.vlm), str(reasoner), str(wrong))
    assert result.documented["reasoner"]["documented_base"] == "Qwen/Qwen2.5-Math-7B"
    assert any("Qwen/Qwen2.5-Math-7B" in f and "--reasoner-base" in f for f in result.findings())
    right = shutil.copytree(triple.base, tmp_path / "Qwen2.5-Math-7B")
    result = check_models(str(triple.vlm), str(reasoner), str(right))
    assert result.documented["reasoner"]["base_matches"] is True
    assert not any("Qwen2.5-Math" in f for f in result.findings())


def test_templates_are_read_without_rendering(tiny_triple: Any, tmp_path: Path) -> None:
    triple = tiny_triple("llava")
    vlm, reasoner = read_template_facts(triple.vlm), read_template_facts(triple.reasoner)
    assert reasoner.opens_think and not vlm.opens_think
    paths = _copy_triple(triple, tmp_path)
    inputs = open_inputs(_recipe(paths))
    try:
        plain = check_pair(inputs, lineage=False)
        told = check_pair(inputs, lineage=False, think_template=True)
    finally:
        for item in inputs.values():
            item.checkpoint.close()
    assert any("--think-template" in f for f in plain.template_findings)
    assert not any("--think-template" in f for f in told.template_findings)
    (paths["reasoner"] / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
    )
    config = json.loads((paths["reasoner"] / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (paths["reasoner"] / "tokenizer_config.json").write_text(json.dumps(config))
    assert read_template_facts(paths["reasoner"]).opens_think


def test_analyze_reports_the_check(tiny_triple: Any, tmp_path: Path) -> None:
    from frankmerge.analysis import analyze_task_vectors

    paths = _legacy_hub_triple(tiny_triple, tmp_path)
    analysis = analyze_task_vectors(str(paths["vlm"]), str(paths["reasoner"]), str(paths["base"]))
    assert any(code == "config" and "rope_theta" in message for code, message in analysis.warnings)
    assert analysis.compatibility is not None and analysis.compatibility["function_changing"] == ["rope_theta"]


def test_drift_prior_warns_about_a_function_changing_mismatch(
    tiny_triple: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from frankmerge.drift.prior import build_prior

    paths = _legacy_hub_triple(tiny_triple, tmp_path)
    with caplog.at_level(logging.WARNING):
        build_prior(paths["vlm"], paths["reasoner"], tmp_path / "prior.safetensors")
    assert any("rope_theta differs" in r.getMessage() for r in caplog.records)


def test_sampled_blocks() -> None:
    assert sampled_blocks(1) == [0]
    assert sampled_blocks(4) == [0, 2, 3]
    assert sampled_blocks(80) == [0, 40, 79]


def test_readme_example_pair_is_diagnosed(tmp_path: Path) -> None:
    """examples/pair_doctor.py: the README's stand-ins of Qwen2.5-VL-7B + R1-Distill-Qwen-7B."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pair_doctor", Path(__file__).parents[1] / "examples" / "pair_doctor.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    paths = example.build(tmp_path / "pair")
    result = check_models(
        str(paths[example.VLM_NAME]),
        str(paths["DeepSeek-R1-Distill-Qwen-7B"]),
        str(paths["Qwen2.5-7B"]),
        candidate_bases=(str(paths["Qwen2.5-Math-7B"]),),
    )
    assert [v.field.name for v in result.mismatches(FUNCTION)] == ["rope_theta"]
    findings = "\n".join(result.findings())
    assert "Qwen/Qwen2.5-Math-7B" in findings and "farther from --base than the VLM" in findings
    assert f"nearer {paths['Qwen2.5-Math-7B']}" in findings
    fixed = check_models(
        str(paths[example.VLM_NAME]),
        str(paths["DeepSeek-R1-Distill-Qwen-7B"]),
        str(paths["Qwen2.5-7B"]),
        reasoner_base=str(paths["Qwen2.5-Math-7B"]),
    )
    assert not any("--reasoner-base" in f for f in fixed.lineage_findings)
    assert fixed.lineage is not None and fixed.lineage.to_base["reasoner"].mean < 0.1  # type: ignore[operator]


def test_sparse_remote_code_llm_config_gets_its_class_defaults(tmp_path: Path) -> None:
    """An InternVL chat config whose llm_config omits what Qwen2 defaults (θ, ε, activation) is
    compared with the defaults filled in, not as missing values."""
    sparse = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584}
    sparse |= {"num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064}
    chat = {"model_type": "internvl_chat", "architectures": ["InternVLChatModel"], "llm_config": sparse, "vision_config": {}}
    full = {**sparse, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu", "max_position_embeddings": 32768}
    configs = {
        "vlm": read_config(_config_dir(tmp_path, "vlm", chat), "vlm"),
        "reasoner": read_config(_config_dir(tmp_path, "r", full), "reasoner"),
    }
    differing = {v.field.name for v in compare_configs(configs) if not v.same}
    assert differing <= {"tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"}


def test_the_stored_class_defaults_change_no_verdict(tiny_triple: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor's table is the same whether the class defaults come from the stored table (no
    transformers) or from transformers' classes: on every tiny family, with each mismatch, on the
    hub's legacy spellings and on a sparse remote-code llm_config."""
    from frankmerge.layouts import class_defaults
    from frankmerge.testbed.tiny import FAMILIES

    cases: list[dict[str, Path]] = [
        {role: getattr(tiny_triple(family), role) for role in ("vlm", "reasoner", "base")} for family in FAMILIES
    ]
    for key, value, _field, _severity in MISMATCHES:
        paths = _copy_triple(tiny_triple("llava"), tmp_path / key)
        _edit_config(paths["reasoner"], **{key: value})
        cases.append(paths)
    cases.append(_legacy_hub_triple(tiny_triple, tmp_path / "legacy"))
    hub = tmp_path / "hub"
    cases.append({role: _config_dir(hub, role, cfg) for role, cfg in (("reasoner", R1_DISTILL_QWEN_7B), ("base", QWEN25_7B))})
    sparse = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "num_hidden_layers": 28, "hidden_size": 3584}
    chat = {"model_type": "internvl_chat", "architectures": ["InternVLChatModel"], "llm_config": sparse}
    cases.append({"vlm": _config_dir(tmp_path / "chat", "vlm", chat), "reasoner": hub / "reasoner"})

    def tables() -> list[list[dict[str, Any]]]:
        found = []
        for paths in cases:
            configs = {role: read_config(path, role) for role, path in paths.items()}
            found.append([v.to_dict() for v in compare_configs(configs)])
        return found

    with_table = tables()
    monkeypatch.setattr(class_defaults, "filled_text", lambda section: None)
    assert tables() == with_table


def test_lineage_reads_each_roles_rows_once_and_measures_every_pair(tiny_triple: Any, tmp_path: Path) -> None:
    """The VLM is compared with --base and with the reasoner, --base with both: one read per role and
    row, and each pair's distance is ‖θ_a − θ_ref‖/‖θ_ref‖ on the sampled rows, computed here directly."""
    paths = _copy_triple(tiny_triple("llava"), tmp_path)
    inputs = open_inputs(_recipe(paths))
    reads: dict[tuple[str, str, int], int] = {}
    for item in inputs.values():
        original = item.checkpoint.read_array

        def counted(name: str, start: int, count: int, _role: str = item.role, _read: Any = original) -> np.ndarray:
            reads[(_role, name, start)] = reads.get((_role, name, start), 0) + 1
            return _read(name, start, count)

        item.checkpoint.read_array = counted  # type: ignore[method-assign]
    try:
        lineage = measure_lineage(inputs)
        assert reads and max(reads.values()) == 1
        assert {role for role, _, _ in reads} == {"vlm", "reasoner", "base"}
        for item in inputs.values():
            item.checkpoint.read_array = type(item.checkpoint).read_array.__get__(item.checkpoint)  # type: ignore[method-assign]
        blocks = sampled_blocks(inputs["base"].layout.num_blocks)
        for distances, (a, ref) in (
            (lineage.to_base["vlm"], ("vlm", "base")),
            (lineage.to_base["reasoner"], ("reasoner", "base")),
            (lineage.between, ("vlm", "reasoner")),
        ):
            for index in blocks:
                block_a, block_r = inputs[a].layout.blocks[index], inputs[ref].layout.blocks[index]
                diff = norm = 0.0
                for suffix in sorted(set(block_a) & set(block_r)):
                    values_a = sampled_rows(inputs[a], block_a[suffix])
                    values_r = sampled_rows(inputs[ref], block_r[suffix])
                    diff += float(np.sum((values_a - values_r) ** 2))
                    norm += float(np.sum(values_r**2))
                assert distances.per_block[index] == pytest.approx((diff / norm) ** 0.5, rel=1e-12)
    finally:
        for item in inputs.values():
            item.checkpoint.close()

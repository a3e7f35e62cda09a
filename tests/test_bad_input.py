"""Every bad input gets a one-line error naming the problem, a non-zero exit, and no output."""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from frankmerge import FrankmergeError, MergeRecipe, Prior, merge
from frankmerge.cli import main
from frankmerge.errors import DiskFullError, human_size
from tests.fakes import full_disk


def run_cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def merge_args(vlm: Path, reasoner: Path, base: Path, out: Path, *extra: str) -> list[str]:
    return [
        "merge",
        "--vlm",
        str(vlm),
        "--reasoner",
        str(reasoner),
        "--base",
        str(base),
        "--out",
        str(out),
        "-q",
        *extra,
    ]


def assert_refused(args: list[str], out: Path, *needles: str) -> str:
    code, output = run_cli(args)
    assert code != 0, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists(), "a failed merge must not create the output"
    assert not [p for p in out.parent.iterdir() if "frankmerge-" in p.name], "staging directory or lock file left behind"
    return lines[0]


def rewrite(directory: Path, edit) -> None:  # type: ignore[no-untyped-def]
    """Apply ``edit(name, tensor) -> tensor | None`` to every tensor of a single-file checkpoint."""
    path = directory / "model.safetensors"
    state = load_file(path)
    edited = {name: new for name, tensor in state.items() if (new := edit(name, tensor)) is not None}
    save_file(edited, path, metadata={"format": "pt"})


@pytest.fixture
def triple(tiny_triple, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A private copy of a tiny Qwen2-VL triple that a test may damage."""
    source = tiny_triple("qwen2_vl")
    for role in ("vlm", "reasoner", "base"):
        shutil.copytree(getattr(source, role), tmp_path / role)
    return tmp_path / "vlm", tmp_path / "reasoner", tmp_path / "base"


def test_missing_path(triple, tmp_path: Path):
    vlm, reasoner, base = triple
    assert_refused(
        merge_args(vlm, tmp_path / "nope", base, tmp_path / "out", "--no-prior"),
        tmp_path / "out",
        "--reasoner",
        "no such directory",
    )


def test_uncached_hub_id(triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vlm, _, base = triple
    line = assert_refused(
        merge_args(vlm, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", base, tmp_path / "out", "--no-prior"),  # type: ignore[arg-type]
        tmp_path / "out",
        "not in the local Hugging Face cache",
    )
    assert "hf download deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" in line


def test_no_prior_option_profiles_the_vlm_first(triple, tmp_path: Path):
    code, output = run_cli(merge_args(*triple, tmp_path / "out"))
    assert code == 0, output
    assert "profiling" in output and "bundled calibration images" in output
    report = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    profile = json.loads((tmp_path / "out" / "profile.json").read_text())
    assert report["recipe"]["prior"]["alpha"] == profile["fit"]["alpha"]
    assert report["profile"]["path"] == str((tmp_path / "out" / "profile.json").absolute())
    assert report["profile"]["images"]["kind"] == "bundled"

    # --overwrite: the report describes the profile made now, not the previous merge's file.
    profile["images"]["kind"] = "stale"
    (tmp_path / "out" / "profile.json").write_text(json.dumps(profile))
    code, output = run_cli(merge_args(*triple, tmp_path / "out", "--overwrite"))
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    assert report["profile"]["images"]["kind"] == "bundled"


def test_fitted_prior_needs_a_profile(triple, tmp_path: Path):
    assert_refused(merge_args(*triple, tmp_path / "out", "--prior", "fitted", "--alpha", "0.1"), tmp_path / "out", "--profile")


def test_two_prior_options_are_refused(triple, tmp_path: Path):
    assert_refused(merge_args(*triple, tmp_path / "out", "--alpha", "0.1", "--no-prior"), tmp_path / "out", "--no-prior takes no")


def test_block_count_mismatch(triple, tmp_path: Path):
    vlm, reasoner, base = triple
    rewrite(reasoner, lambda name, t: None if ".layers.3." in name else t)
    config = json.loads((reasoner / "config.json").read_text())
    config["num_hidden_layers"] = 3
    config["layer_types"] = config["layer_types"][:3]
    (reasoner / "config.json").write_text(json.dumps(config))
    assert_refused(merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior"), tmp_path / "out", "3 decoder blocks", "4")


def test_shape_mismatch_lists_the_tensor(triple, tmp_path: Path):
    vlm, reasoner, base = triple
    rewrite(reasoner, lambda name, t: t[:-1] if name.endswith("layers.2.mlp.up_proj.weight") else t)
    assert_refused(
        merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior"),
        tmp_path / "out",
        "not homologous",
        "block 2: mlp.up_proj.weight",
    )


def test_reasoner_of_another_family(tiny_triple, tmp_path: Path):
    llava, qwen = tiny_triple("llava"), tiny_triple("qwen2_vl")
    assert_refused(
        merge_args(llava.vlm, qwen.reasoner, llava.base, tmp_path / "out", "--no-prior"),
        tmp_path / "out",
        "qwen2",
        "llama",
    )


def test_text_model_given_as_vlm(triple, tmp_path: Path):
    _, reasoner, base = triple
    assert_refused(merge_args(reasoner, reasoner, base, tmp_path / "out", "--no-prior"), tmp_path / "out", "text-only")


def test_corrupt_safetensors_header(triple, tmp_path: Path):
    vlm, reasoner, base = triple
    with (base / "model.safetensors").open("r+b") as handle:
        handle.seek(8)
        handle.write(b"\x00garbage")
    assert_refused(
        merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior"),
        tmp_path / "out",
        "corrupt safetensors header",
        "model.safetensors",
    )


def test_shard_missing_from_index(tiny_triple, tmp_path: Path):
    source = tiny_triple("llava", layout="hub", sharded=True, vlm_extra_vocab=8)
    vlm = shutil.copytree(source.vlm, tmp_path / "vlm")
    victim = sorted(vlm.glob("model-*.safetensors"))[1]
    victim.unlink()
    assert_refused(
        merge_args(vlm, source.reasoner, source.base, tmp_path / "out", "--no-prior"),
        tmp_path / "out",
        victim.name,
        "missing",
    )


def test_existing_output_is_kept(triple, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, output = run_cli(merge_args(*triple, out, "--no-prior"))
    assert code != 0 and "--overwrite" in output
    assert (out / "precious.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1
    code, output = run_cli(merge_args(*triple, out, "--no-prior", "--overwrite"))
    assert code == 0, output
    assert not (out / "precious.txt").exists() and (out / "merge_report.json").is_file()


def _fingerprint(directory: Path) -> dict[str, bytes]:
    return {str(f.relative_to(directory)): f.read_bytes() for f in sorted(directory.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("where", ["is the vlm", "inside the reasoner", "contains the base", "symlink to the vlm"])
def test_output_overlapping_an_input_is_refused_even_with_overwrite(triple, tmp_path: Path, where: str):
    vlm, reasoner, base = triple
    before = {role: _fingerprint(path) for role, path in zip(("vlm", "reasoner", "base"), triple, strict=True)}
    if where == "is the vlm":
        out, needle = vlm, "is the --vlm model"
    elif where == "inside the reasoner":
        out, needle = reasoner / "merged", "lies inside the --reasoner model"
    elif where == "contains the base":
        out, needle = tmp_path, "contains the --vlm model"
    else:
        out, needle = tmp_path / "link", "is the --vlm model"
        out.symlink_to(vlm, target_is_directory=True)
    code, output = run_cli(merge_args(vlm, reasoner, base, out, "--no-prior", "--overwrite"))
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], output
    assert "outside every input" in lines[0]
    after = {role: _fingerprint(path) for role, path in zip(("vlm", "reasoner", "base"), triple, strict=True)}
    assert after == before  # no input touched
    assert not (reasoner / "merged").exists()
    assert not [p for p in tmp_path.rglob("*frankmerge-partial*")]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("vlm: a\nreasoner: b: c\n", "at line 2, column 12: mapping values are not allowed here"),
        ("vlm: [a, b\nbase: c\n", "line 2, column 5: expected ',' or ']', but got ':' (while parsing a flow sequence"),
        ("vlm: a\n\tbase: c\n", "at line 2, column 1: found character '\\t' that cannot start any token"),
    ],
)
def test_recipe_that_is_not_yaml_is_one_line(tmp_path: Path, text: str, where: str):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    line = assert_refused(["merge", str(recipe), "--out", str(tmp_path / "out")], tmp_path / "out", str(recipe), where)
    assert line.endswith("; fix the syntax there"), line


def test_prior_option_missing_its_parameter_is_one_line(triple, tmp_path: Path):
    line = assert_refused(merge_args(*triple, tmp_path / "out", "--prior", "relative"), tmp_path / "out", "needs alpha")
    assert "validation error" not in line, line


def test_a_multi_line_library_message_is_printed_on_one_line(triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise FrankmergeError('x.json: not valid (Expecting value\n  in "x.json", line 3\n    ^)')

    monkeypatch.setattr(importlib.import_module("frankmerge.merge"), "open_inputs", broken)
    line = assert_refused(merge_args(*triple, tmp_path / "out", "--no-prior"), tmp_path / "out", "x.json")
    assert line == 'error: x.json: not valid (Expecting value; in "x.json", line 3; ^)', line


def test_unknown_recipe_key(triple, tmp_path: Path):
    vlm, reasoner, base = triple
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"vlm: {vlm}\nreasoner: {reasoner}\nbase: {base}\nprior: {{kind: none}}\nlamda: 0.3\n")
    assert_refused(["merge", str(recipe), "--out", str(tmp_path / "out")], tmp_path / "out", "unknown key 'lamda'")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_input(triple, tmp_path: Path, bad: float):
    vlm, reasoner, base = triple

    def poison(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if name.endswith("layers.1.self_attn.v_proj.weight"):
            tensor = tensor.clone()
            tensor[0, 0] = bad
        return tensor

    rewrite(reasoner, poison)
    assert_refused(
        merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior"),
        tmp_path / "out",
        "--reasoner",
        "layers.1.self_attn.v_proj.weight",
        "--allow-nonfinite",
    )
    code, output = run_cli(merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior", "--allow-nonfinite"))
    assert code == 0, output


def test_nonfinite_vision_tensor(triple, tmp_path: Path):
    vlm, reasoner, base = triple
    rewrite(
        vlm,
        lambda name, t: torch.full_like(t, float("nan")) if name.startswith("visual.") and name.endswith("weight") else t,
    )
    assert_refused(merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior"), tmp_path / "out", "--vlm", "visual.")


@pytest.mark.parametrize("where", ["layers.1.mlp.down_proj.weight", "visual."])
def test_float16_overflow_is_refused(triple, tmp_path: Path, where: str):
    """A finite float32 value past float16's range must not become Inf silently in the output."""
    vlm, reasoner, base = triple

    def enlarge(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if (name.endswith(where) or name.startswith(where)) and tensor.is_floating_point():
            tensor = tensor.clone()
            tensor.view(-1)[0] = 1e5
        return tensor

    for role in (vlm, reasoner, base):
        rewrite(role, enlarge)
    assert_refused(
        merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior", "--dtype", "float16"),
        tmp_path / "out",
        "overflows float16",
        "--dtype bfloat16",
    )
    code, output = run_cli(merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior", "--dtype", "bfloat16"))
    assert code == 0, output


def test_pickled_weights_need_the_flag(triple, tmp_path: Path):
    vlm, reasoner, base = triple
    state = load_file(reasoner / "model.safetensors")
    torch.save(state, reasoner / "pytorch_model.bin")
    (reasoner / "model.safetensors").unlink()
    assert_refused(merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior"), tmp_path / "out", "--allow-pickle")
    code, output = run_cli(merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior", "--allow-pickle"))
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    assert report["inputs"]["reasoner"]["format"] == "pickle"


def test_mllama_is_refused_with_a_reason(triple, tmp_path: Path):
    vlm, reasoner, base = triple
    (vlm / "config.json").write_text(json.dumps({"model_type": "mllama"}))
    assert_refused(merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior"), tmp_path / "out", "cross-attention")


def test_profile_from_another_model(triple, tmp_path: Path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"num_layers": 32, "fit": {"alpha": 0.05}}))
    assert_refused(merge_args(*triple, tmp_path / "out", "--profile", str(profile)), tmp_path / "out", "32 layers", "4")


def test_full_disk_removes_the_partial_output(triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("frankmerge.checkpoints.writer.io.FileIO", full_disk(4096))
    vlm, reasoner, base = triple
    assert_refused(merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior"), tmp_path / "out", "disk full")


def test_disk_too_small_is_refused_before_writing(triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shutil as shutil_module

    real = shutil_module.disk_usage
    monkeypatch.setattr("frankmerge.checkpoints.output.shutil.disk_usage", lambda path: real(path)._replace(free=1000))
    line = assert_refused(merge_args(*triple, tmp_path / "out", "--no-prior"), tmp_path / "out", "has 1.0 kB free")
    assert re.search(r"the merge needs \d+\.\d (kB|MB) but", line) and "0.00 GB" not in line, line


def test_sizes_in_messages_are_human_readable():
    sizes = [0, 512, 999, 1000, 3_400_000, 999_960, 1_200_000_000, 5 * 10**12]
    assert [human_size(n) for n in sizes] == ["0 B", "512 B", "999 B", "1.0 kB", "3.4 MB", "1.0 MB", "1.20 GB", "5.00 TB"]


def test_interrupted_merge_leaves_nothing(triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    merge_module = importlib.import_module("frankmerge.merge")  # the package exports a function of that name

    calls = {"n": 0}
    real = merge_module.write_merged

    def interrupt_on_second_block(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 15:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(merge_module, "write_merged", interrupt_on_second_block)
    vlm, reasoner, base = triple
    recipe = MergeRecipe(vlm=str(vlm), reasoner=str(reasoner), base=str(base), prior=Prior(kind="none"))
    with pytest.raises(KeyboardInterrupt):
        merge(recipe, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if "frankmerge" in p.name]
    code, output = run_cli(merge_args(vlm, reasoner, base, tmp_path / "out", "--no-prior"))
    assert code == 130 and "interrupted" in output


def test_errors_are_frankmerge_errors_in_the_api(triple, tmp_path: Path):
    vlm, reasoner, base = triple
    recipe = MergeRecipe(vlm=str(vlm), reasoner=str(tmp_path / "missing"), base=str(base), prior=Prior(kind="none"))
    with pytest.raises(FrankmergeError, match="no such directory"):
        merge(recipe, tmp_path / "out", progress=False)
    assert issubclass(DiskFullError, FrankmergeError), "the CLI prints every FrankmergeError as one line"


def test_unknown_method_on_the_command_line_lists_the_methods(triple, tmp_path: Path):
    code, output = run_cli(merge_args(*triple, tmp_path / "out", "--method", "slerp"))
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), output
    assert "'slerp'" in lines[0] and "ties" in lines[0] and "dare_linear" in lines[0]
    assert not (tmp_path / "out").exists()

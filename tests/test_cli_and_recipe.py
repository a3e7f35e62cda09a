"""The CLI and recipe files drive the same merge, and hub ids resolve from the local cache."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from frankmerge import MergeRecipe, Prior, merge
from frankmerge.checkpoints.resolve import resolve_checkpoint
from frankmerge.cli import main
from tests.reference import load_dir


def test_recipe_file_reproduces_the_cli_merge(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    runner = CliRunner()
    first = runner.invoke(
        main,
        [
            "merge",
            "--vlm",
            str(triple.vlm),
            "--reasoner",
            str(triple.reasoner),
            "--base",
            str(triple.base),
            "--out",
            str(tmp_path / "a"),
            "--alpha",
            "0.25",
            "--max-shard-size",
            "100KB",
        ],
    )
    assert first.exit_code == 0, first.output
    assert "lambda_V" in first.output and "merged model written" in first.output
    recipe = tmp_path / "a" / "frankmerge_recipe.yaml"
    prior = yaml.safe_load(recipe.read_text())["prior"]
    assert {k: v for k, v in prior.items() if v is not None} == {"kind": "exponential", "alpha": 0.25}
    second = runner.invoke(main, ["merge", str(recipe), "--out", str(tmp_path / "b"), "-q"])
    assert second.exit_code == 0, second.output
    a, b = load_dir(tmp_path / "a"), load_dir(tmp_path / "b")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert len(list((tmp_path / "a").glob("model-*.safetensors"))) > 1


def test_cli_flags_override_recipe_keys(tiny_triple, tmp_path: Path):
    triple = tiny_triple("qwen2_vl")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "vlm": str(triple.vlm),
                "reasoner": str(triple.reasoner),
                "base": str(triple.base),
                "prior": {"kind": "none"},
            }
        )
    )
    result = CliRunner().invoke(
        main, ["merge", str(recipe), "--out", str(tmp_path / "o"), "-q", "--alpha", "0.5", "--dtype", "float32"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "merge_report.json").read_text())
    assert report["recipe"]["prior"]["alpha"] == 0.5 and report["output"]["dtype"] == "float32"


def test_report_and_model_card(tiny_triple, tmp_path: Path):
    triple = tiny_triple("llava", layout="hub", sharded=True, vlm_extra_vocab=8)
    result = CliRunner().invoke(
        main,
        [
            "merge",
            "--vlm",
            str(triple.vlm),
            "--reasoner",
            str(triple.reasoner),
            "--base",
            str(triple.base),
            "--out",
            str(tmp_path / "m"),
            "--profile",
            str(_profile(tmp_path, 0.2)),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m" / "merge_report.json").read_text())
    assert report["recipe"]["prior"]["alpha"] == 0.2 and report["recipe"]["prior"]["profile"].endswith("profile.json")
    for role in ("vlm", "reasoner", "base"):
        files = report["inputs"][role]["files"]
        assert files and all("sha256" in f or "header_sha256" in f for f in files)
    block = report["blocks"][0]
    assert {"index", "norm_v_sq", "norm_r_sq", "cos", "w_v", "lambda_v", "lambda_r"} <= block.keys()
    assert report["wall_time_s"] > 0 and report["peak_rss_bytes"] > 0
    card = (tmp_path / "m" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers"
    assert front["base_model"] == [str(triple.vlm), str(triple.reasoner), str(triple.base)]
    assert "| 0 |" in card and "Eq. 16" in card


def _profile(tmp_path: Path, alpha: float, C: float = 1.0) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"num_layers": 4, "fit": {"alpha": alpha, "C": C}}))
    return path


def test_hub_id_resolves_from_the_local_cache(tiny_triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A model in huggingface_hub's cache layout is found offline by its id."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-vlm" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_triple("qwen2_vl").vlm, snapshot)
    (cache / "models--acme--tiny-vlm" / "refs").mkdir()
    (cache / "models--acme--tiny-vlm" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    assert resolve_checkpoint("acme/tiny-vlm", role="vlm") == snapshot


def test_report_fingerprints_tell_same_architecture_inputs_apart(tiny_triple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Base and reasoner share a header layout; their sampled fingerprints differ, and a hub blob's
    SHA-256 (the cache names blobs by content) is recorded as the file's exact hash."""
    triple = tiny_triple("qwen2_vl")
    repo = tmp_path / "hub" / "models--acme--tiny-r1"
    snapshot = repo / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for source in triple.reasoner.iterdir():
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / source.name).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    recipe = MergeRecipe(vlm=str(triple.vlm), reasoner="acme/tiny-r1", base=str(triple.base), prior=Prior(kind="none"))
    report = merge(recipe, tmp_path / "m", progress=False).report
    reasoner_file = next(f for f in report["inputs"]["reasoner"]["files"] if f["name"].endswith(".safetensors"))
    base_file = next(f for f in report["inputs"]["base"]["files"] if f["name"].endswith(".safetensors"))
    assert reasoner_file["sha256"] == hashlib.sha256((triple.reasoner / reasoner_file["name"]).read_bytes()).hexdigest()
    assert reasoner_file["header_sha256"] == base_file["header_sha256"], "the case header hashes cannot tell apart"
    assert reasoner_file["sample_sha256"] != base_file["sample_sha256"]
    assert "sha256" not in base_file, "a plain local file is not hashed whole"


def test_layouts_command_lists_families():
    result = CliRunner().invoke(main, ["layouts"])
    assert result.exit_code == 0 and "qwen2_5_vl" in result.output and "idefics3" in result.output


def test_help_exits_cleanly_for_every_command():
    runner = CliRunner()
    for args in (["--help"], ["merge", "--help"], ["demo", "--help"], ["layouts", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0 and "Usage:" in result.output and "error" not in result.output, args


@pytest.mark.parametrize(
    ("flags", "kind"),
    [
        (["--prior", "relative", "--alpha", "0.3"], "relative"),
        (["--prior", "minmax", "--alpha", "0.3"], "minmax"),
        (["--prior", "fitted"], "fitted"),
    ],
)
def test_prior_variants_from_the_command_line(tiny_triple, tmp_path: Path, flags: list[str], kind: str):
    from frankmerge.methods.frank import MINMAX_BOUNDS, prior_weights

    triple = tiny_triple("qwen2_vl")
    if kind == "fitted":
        flags = [*flags, "--profile", str(_profile(tmp_path, 0.3, C=0.8))]
    args = ["merge", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "m"), "-q", *flags])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m" / "merge_report.json").read_text())
    expected = prior_weights(kind, 4, 0.3, scale=0.8 if kind == "fitted" else None, bounds=MINMAX_BOUNDS)
    assert [b["w_v"] for b in report["blocks"]] == pytest.approx(expected)
    assert report["recipe"]["prior"]["kind"] == kind


def _console(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as the console script runs it (entry_point, with its fast exit), in a fresh process."""
    return subprocess.run([sys.executable, "-m", "frankmerge.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_console_script_exit_codes_and_complete_output(tiny_triple, tmp_path: Path):
    """The fast exit skips interpreter teardown only: codes, messages and every output file survive it."""
    triple = tiny_triple("qwen2_vl")
    out = tmp_path / "merged"
    done = _console(
        "merge", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base),
        "--out", str(out), "--no-prior", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    merged = load_dir(out)
    assert merged.keys() == load_dir(triple.vlm).keys()
    assert len(json.loads((out / "merge_report.json").read_text())["blocks"]) > 0
    assert (out / "README.md").read_text().startswith("---")

    missing = _console(
        "merge", "--vlm", str(tmp_path / "nope"), "--reasoner", "r", "--base", "b", "--out", "o", "--no-prior", cwd=tmp_path
    )
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0 and "no such directory" in missing.stderr
    assert _console("merge", "--bogus", cwd=tmp_path).returncode == 2
    listed = _console("layouts", cwd=tmp_path)
    assert listed.returncode == 0 and "qwen2_vl" in listed.stdout


def test_broken_pipe_ends_quietly(tmp_path: Path):
    reader = subprocess.Popen(
        [sys.executable, "-m", "frankmerge.cli", "layouts"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.read(10)
    reader.stdout.close()  # like `| head -c 10`
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=600) in (0, 141) and "error" not in stderr, stderr

"""`frankmerge profile` end to end: JSON contract, the merge it drives, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from frankmerge.analysis import fit_decay
from frankmerge.cli import main
from frankmerge.methods.frank import BlockStats, frank_coefficients, prior_weights


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def refused(args: list[str], *needles: str) -> str:
    code, output = run(args)
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def profiled(tiny_triple, tmp_path_factory) -> tuple[object, Path]:
    """`frankmerge profile --vlm X` with no other argument: bundled images, profile.json in the cwd."""
    triple = tiny_triple("qwen2_vl")
    cwd = tmp_path_factory.mktemp("profile-cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        code, output = run(["profile", "--vlm", str(triple.vlm)])
    assert code == 0, output
    return triple, cwd / "profile.json"


def test_profile_with_only_vlm_writes_json_and_plot(profiled):
    triple, path = profiled
    data = json.loads(path.read_text())
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["num_layers"] == 4 and data["model"]["model_type"] == "qwen2_vl"
    assert data["image_token_id"] == json.loads((triple.vlm / "config.json").read_text())["image_token_id"]
    assert data["images"]["kind"] == "bundled" and data["images"]["count"] == 32
    assert data["method"]["query"] == "after_image" and data["method"]["exclude_sink"] is False
    per_image = np.array(data["per_image"])
    assert per_image.shape == (32, 4)
    assert [layer["a_mean"] for layer in data["layers"]] == pytest.approx(per_image.mean(axis=0).tolist())
    assert [layer["a_std"] for layer in data["layers"]] == pytest.approx(per_image.std(axis=0, ddof=1).tolist())
    fit = fit_decay(per_image.mean(axis=0))
    slope, intercept = np.polyfit(np.arange(1, 5), np.log(per_image.mean(axis=0)), 1)
    assert data["fit"]["alpha"] == pytest.approx(-slope) == pytest.approx(fit.alpha)
    assert data["fit"]["C"] == pytest.approx(np.exp(intercept))
    boot = data["bootstrap"]
    assert boot["n_boot"] == 1000 and boot["by_size"][-1]["n_images"] == 32 and boot["ci95"][0] <= boot["ci95"][1]
    assert set(data["timings"]) >= {"load_s", "per_image_s", "total_s"} and data["device"] == "cpu"


def test_profile_drives_merge_to_the_coefficients_of_its_alpha(profiled, tmp_path: Path):
    triple, path = profiled
    alpha = json.loads(path.read_text())["fit"]["alpha"]
    out = tmp_path / "merged"
    args = ["merge", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base)]
    code, output = run([*args, "--out", str(out), "--profile", str(path), "-q"])
    assert code == 0, output
    report = json.loads((out / "merge_report.json").read_text())
    assert report["recipe"]["prior"]["alpha"] == alpha and report["recipe"]["prior"]["profile"] == str(path)
    weights = prior_weights("exponential", 4, alpha)
    for block, w_v in zip(report["blocks"], weights, strict=True):
        stats = BlockStats(block["index"], block["norm_v_sq"], block["norm_r_sq"], block["dot_vr"], 1.0)
        expected = frank_coefficients(stats, w_v)
        assert (block["w_v"], block["lambda_v"], block["lambda_r"]) == pytest.approx((w_v, expected.lambda_v, expected.lambda_r))


def test_profile_of_another_model_is_refused_by_merge(profiled, tmp_path: Path):
    triple, path = profiled
    data = json.loads(path.read_text())
    data["num_layers"] = 6  # as if profiled on a 6-layer VLM
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    out = tmp_path / "merged"
    args = ["merge", "--vlm", str(triple.vlm), "--reasoner", str(triple.reasoner), "--base", str(triple.base)]
    refused([*args, "--out", str(out), "--profile", str(other), "-q"], "6 layers", "4")
    assert not out.exists()
    refused(["analyze", *args[1:], "--out", str(out), "--profile", str(other), "-q"], "6 layers")
    assert not out.exists()


def _profile_args(vlm: Path, out: Path, *extra: str) -> list[str]:
    return ["profile", "--vlm", str(vlm), "--out", str(out), "-q", "--bootstrap", "20", *extra]


def test_image_directory_without_readable_images(tiny_triple, tmp_path: Path):
    vlm, out = tiny_triple("llava").vlm, tmp_path / "profile.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    refused(_profile_args(vlm, out, "--images", str(empty)), "no image files")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG but truncated")
    (broken / "b.jpg").write_bytes(b"")
    refused(_profile_args(vlm, out, "--images", str(broken)), "2 image file(s), none readable")
    refused(_profile_args(vlm, out, "--images", str(tmp_path / "missing")), "no such directory")
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_unsupported_vlm_is_refused(tiny_triple, tmp_path: Path):
    triple = tiny_triple("llava")
    out = tmp_path / "profile.json"
    refused(_profile_args(triple.base, out), "text-only")
    odd = tmp_path / "blip"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    refused(_profile_args(odd, out), "'blip-2' is not a supported VLM family")
    refused(_profile_args(tmp_path / "nowhere", out), "no such directory")
    assert not out.exists()


def test_image_directory_and_options(tiny_triple, tmp_path: Path):
    vlm = tiny_triple("idefics3").vlm
    images = tmp_path / "images"
    images.mkdir()
    from frankmerge.analysis.calibration import bundled_directory

    for name in ("calib_000.png", "calib_005.png", "calib_009.png"):
        shutil.copy(bundled_directory() / name, images / name)
    (images / "zz_broken.png").write_bytes(b"garbage")
    out = tmp_path / "p.json"
    args = _profile_args(vlm, out, "--images", str(images), "--query", "last", "--exclude-sink", "--no-plot")
    code, output = run(args)
    assert code == 0, output
    data = json.loads(out.read_text())
    assert data["images"]["names"] == ["calib_000.png", "calib_005.png", "calib_009.png"]
    assert data["images"]["skipped_unreadable"] == ["zz_broken.png"]
    assert data["method"]["query"] == "last" and data["method"]["exclude_sink"] is True
    assert data["images"]["mean_query_rows"] == 1 and not out.with_suffix(".png").exists()
    refused([*args, "--dataset", str(images)], "choose one image source")


def test_profile_for_merge_writes_what_prior_from_profile_reads(tiny_triple, tmp_path: Path):
    from frankmerge.analysis import profile_for_merge
    from frankmerge.recipe import prior_from_profile

    out = tmp_path / "profile.json"
    profile = profile_for_merge(tiny_triple("internvl").vlm, out, progress=False)
    prior = prior_from_profile(out)
    assert prior.kind == "exponential" and prior.alpha == profile.fit.alpha and prior.profile_layers == 4
    assert profile.source_kind == "bundled" and len(profile.images) == 32


def test_profile_summary_for_the_merge_report(profiled):
    from frankmerge.analysis import profile_summary

    _, path = profiled
    data = json.loads(path.read_text())
    summary = profile_summary(path)
    assert summary["alpha"] == data["fit"]["alpha"] and summary["C"] == data["fit"]["C"]
    assert summary["num_layers"] == 4 and summary["images"]["count"] == 32 and summary["images"]["kind"] == "bundled"
    assert summary["query"] == "after_image" and summary["alpha_ci95"] == data["bootstrap"]["ci95"]

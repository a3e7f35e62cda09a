"""Commands that do not merge start without torch, transformers or numba; the benchmark refuses a
shape the disk cannot hold, in one line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.benchmark_scripts import import_benchmark

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "numba", "pydantic")


@pytest.mark.parametrize("args", [["--help"], ["layouts"], ["benchmarks"], ["merge", "--help"]])
def test_light_commands_import_no_heavy_library(args: list[str]) -> None:
    code = (
        "import sys\n"
        f"sys.argv = ['frankmerge', *{args!r}]\n"
        "import frankmerge.cli as cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_package_names_load_on_first_use() -> None:
    code = (
        "import sys, frankmerge; assert 'torch' not in sys.modules; "
        "print(frankmerge.merge.__name__, frankmerge.MergeRecipe.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["merge", "MergeRecipe"]


def _without_tokenizers(triple: Any, tmp_path: Path) -> dict[str, Path]:
    """The triple's role directories, tokenizer files left out (loading a tokenizer needs transformers)."""
    roles = {}
    for role in ("vlm", "reasoner", "base"):
        roles[role] = tmp_path / role
        roles[role].mkdir()
        for item in getattr(triple, role).iterdir():
            if not item.name.startswith(("tokenizer", "chat_template", "vocab", "merges", "special_tokens")):
                (roles[role] / item.name).symlink_to(item)
    return roles


def test_merge_path_imports_neither_transformers_nor_scipy_linalg(tiny_triple, tmp_path: Path) -> None:
    """A merge whose inputs have no tokenizers (the speed benchmark's) reads configs, runs the pair
    doctor and the kernels without transformers (~1 s to import) or scipy.linalg (numba's BLAS probe)."""
    roles = _without_tokenizers(tiny_triple("qwen2_vl"), tmp_path)
    code = (
        "import sys\n"
        "from frankmerge.merge import merge\n"
        "from frankmerge.recipe import MergeRecipe, Prior\n"
        f"recipe = MergeRecipe(**{ {r: str(p) for r, p in roles.items()}!r}, prior=Prior(kind='none'))\n"
        f"result = merge(recipe, {str(tmp_path / 'out')!r}, progress=False)\n"
        "assert result.report['compatibility']['fields'], 'the doctor compared the configs'\n"
        "print(sorted(m for m in ('transformers', 'scipy.linalg') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _modules_after_cli_merge(roles: dict[str, Path], out: Path, args: list[str], modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a `frankmerge merge` run in a fresh interpreter had imported once it finished."""
    argv = ["frankmerge", "merge", *(f"--{r}={p}" for r, p in roles.items()), f"--out={out}", "--quiet", *args]
    code = (
        "import sys\n"
        f"sys.argv = {argv!r}\n"
        "import frankmerge.cli as cli\n"
        "try:\n    cli.main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print(sorted(m for m in {modules!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert (out / "merge_report.json").is_file()
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("dtype", "args"),
    [
        ("bfloat16", ["--no-prior"]),
        ("bfloat16", ["--alpha", "0.1"]),
        ("bfloat16", ["--method", "task_arithmetic"]),
        ("float16", ["--method", "linear", "--dtype", "float32"]),
        ("float32", ["--method", "layer_swap", "--swap-k", "1", "--dtype", "bfloat16"]),
    ],
)
def test_cli_merge_imports_neither_torch_nor_transformers(tiny_triple, tmp_path: Path, dtype: str, args: list[str]) -> None:
    """`frankmerge merge` of a method the kernels compute, on bfloat16/float16/float32 inputs, never
    imports torch (~1.5 s of start-up) or transformers: numpy arrays carry the tensors."""
    roles = _without_tokenizers(tiny_triple("qwen2_vl", dtype=dtype), tmp_path)
    assert _modules_after_cli_merge(roles, tmp_path / "out", args, ("torch", "transformers")) == []


@pytest.mark.parametrize(("dtype", "args"), [("float64", ["--no-prior"]), ("bfloat16", ["--method", "ties"])])
def test_cli_merge_imports_torch_where_it_computes(tiny_triple, tmp_path: Path, dtype: str, args: list[str]) -> None:
    """float64 inputs (no kernel takes them) and TIES (whole-tensor top-k) still merge, importing torch when needed."""
    roles = _without_tokenizers(tiny_triple("qwen2_vl", dtype=dtype), tmp_path)
    assert _modules_after_cli_merge(roles, tmp_path / "out", args, ("torch",)) == ["torch"]


def test_benchmark_refuses_a_shape_the_disk_cannot_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    merge_speed = import_benchmark("merge_speed")
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 40 * 10**9))
    assert merge_speed.main(["--shape", "7b", "--cache", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "needs 62 GB free" in lines[0] and "has 40 GB" in lines[0]
    assert not any(tmp_path.iterdir())  # nothing built
    merge_speed.use_shape(merge_speed.SHAPES["1.5b"])

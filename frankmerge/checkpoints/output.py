"""The output directory's contents and the checks around it: free, apart from the inputs, big enough.

The merge writes them into a hidden sibling (``staging.py``), renamed into place only when complete,
so a failed merge never leaves a directory that looks like a model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from frankmerge.checkpoints.dtypes import DType, dtype_name
from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.checkpoints.writer import PlannedTensor
from frankmerge.errors import DiskFullError, IncompleteOutputError, OutputExistsError, human_size

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".msgpack", ".h5")
NOT_COPIED = {
    "config.json",
    "README.md",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    ".gitattributes",
}


def check_output_free(out: Path, *, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out}: is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"--out {out}: directory exists and is not empty; pass --overwrite or choose another path")


def check_output_apart(out: Path, inputs: dict[str, Path]) -> None:
    """Refuse an ``--out`` that is, contains or lies inside an input (symlinks resolved): writing it,
    with or without --overwrite, would destroy a model the merge reads."""
    target = out.resolve()
    for role, path in inputs.items():
        source = path.resolve()
        if target == source or source in target.parents or target in source.parents:
            relation = "is" if target == source else ("lies inside" if source in target.parents else "contains")
            raise OutputExistsError(f"--out {out}: {relation} the --{role} model {path}; choose an --out outside every input")


def check_free_space(out: Path, needed_bytes: int) -> None:
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if free < needed_bytes:
        raise DiskFullError(
            f"--out {out}: the merge needs {human_size(needed_bytes)} but {parent} has {human_size(free)} free; "
            "free space or choose another --out"
        )


def copy_side_files(source: Path, destination: Path, *, skip: str | None = None) -> list[str]:
    """Copy everything of the VLM except weights, its index, config.json, README.md (and ``skip``).

    Sub-folders are copied whole, weights included (NVILA's vision tower and projector).
    """
    copied: list[str] = []
    for entry in sorted(source.iterdir()):
        if entry.name in NOT_COPIED or entry.name == skip or entry.name.startswith(".") or entry.name.endswith(WEIGHT_SUFFIXES):
            continue
        target = destination / entry.name
        try:
            if entry.is_dir():
                shutil.copytree(entry, target)
            else:
                shutil.copy2(entry, target)
        except OSError as exc:
            raise DiskFullError(f"cannot copy {entry.name} into {destination}: {exc.strerror}") from exc
        copied.append(entry.name)
    return copied


def write_config(
    raw: dict[str, object], destination: Path, *, tied: bool, dtype: DType, vocab_rows: int | None = None
) -> dict[str, object]:
    """The VLM's config.json, edited only where the merge changes facts: tying and dtype.

    ``tie_word_embeddings`` is written explicitly at the top level (and in ``text_config``), since
    each VLM class has its own default and transformers decides tying from the top level only;
    ``vocab_size`` is set to the written embedding rows.
    """
    config = json.loads(json.dumps(raw))
    config["tie_word_embeddings"] = tied
    sections = [config]
    text = config.get("text_config", config.get("llm_config"))  # llm_config: InternVL chat checkpoints
    if isinstance(text, dict):
        text["tie_word_embeddings"] = tied
        sections.append(text)
    for section in sections:
        for key in ("dtype", "torch_dtype"):
            if key in section:
                section[key] = dtype_name(dtype)
    if "dtype" not in config and "torch_dtype" not in config:
        config["dtype"] = dtype_name(dtype)
    if vocab_rows is not None:  # the text decoder's vocab_size must match the embedding rows
        (text if isinstance(text, dict) else config)["vocab_size"] = vocab_rows
        if isinstance(text, dict) and "vocab_size" in config:  # a top-level copy (legacy configs) too
            config["vocab_size"] = vocab_rows
    (destination / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return config


def verify_output(directory: Path, plan: list[PlannedTensor], vlm_names: list[str]) -> None:
    """Re-read the written headers: exactly the VLM's names, with the planned shapes and dtypes."""
    with Checkpoint(directory) as written:
        expected = {t.name: t for t in plan}
        if set(expected) != set(vlm_names):
            dropped = sorted(set(vlm_names) - set(expected))
            raise IncompleteOutputError(f"merge plan does not cover the VLM's tensors {dropped[:3]}; please report this")
        got = set(written.names())
        missing = sorted(set(expected) - got)
        extra = sorted(got - set(expected))
        if missing or extra:
            raise IncompleteOutputError(
                f"written model differs from the VLM's tensor set: missing {missing[:3]}, unexpected {extra[:3]}"
            )
        for name, planned in expected.items():
            info = written.info(name)
            if info.shape != planned.shape or info.dtype != planned.dtype:
                raise IncompleteOutputError(
                    f"written tensor {name!r} is {info.dtype} {list(info.shape)}, expected {planned.dtype} {list(planned.shape)}"
                )

"""Hand-made safetensors files, valid or not, for the header tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors import safe_open

from frankmerge.checkpoints.header import read_safetensors_header

# name: (dtype, shape, bytes per element); laid out in this order, so the offsets tile the data.
VALID: dict[str, tuple[str, list[int], int]] = {
    "a.weight": ("F32", [3, 2], 4),
    "b.bias": ("BF16", [5], 2),
    "c.scalar": ("I64", [], 8),
    "d.empty": ("F16", [0, 4], 2),
    "e.mask": ("U8", [7], 1),
}


def valid_header() -> tuple[dict[str, object], bytes]:
    """A header dict for ``VALID`` and matching data bytes (deterministic)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape, itemsize) in VALID.items():
        size = itemsize
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    return header, bytes((7 * i + 3) % 251 for i in range(offset))


def encode(header: dict[str, object] | str | bytes, data: bytes, *, declared: int | None = None) -> bytes:
    """A file's bytes: little-endian header length (``declared`` to lie about it), header, data."""
    text = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(text) if declared is None else declared) + text + data


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def frankmerge_verdict(path: Path) -> str | None:
    """None if frankmerge's reader accepts the file, else its error (any other exception propagates)."""
    from frankmerge.errors import CorruptCheckpointError

    try:
        read_safetensors_header(path)
    except CorruptCheckpointError as exc:
        return str(exc)
    return None


def library_verdict(path: Path) -> str | None:
    """None if the safetensors library opens the file and reads every tensor, else why not."""
    try:
        with safe_open(str(path), "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                handle.get_tensor(name)
    except Exception as exc:  # SafetensorError, and whatever torch raises for a dtype it lacks
        return f"{type(exc).__name__}: {exc}"
    return None


def read_both(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Every tensor as frankmerge's Checkpoint reads it, and as the library does (file named model.safetensors)."""
    from frankmerge.checkpoints.reader import Checkpoint

    with Checkpoint(path.parent) as checkpoint:
        ours = {name: checkpoint.load(name) for name in checkpoint.names()}
    with safe_open(str(path), "pt") as handle:
        theirs = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    return ours, theirs

"""The safetensors header, parsed and held to the format's own rules.

The rules are those the ``safetensors`` library enforces (a header it refuses, we refuse), plus
two of our own: duplicate JSON keys and dtypes the merge cannot handle are refused too, where the
library keeps the last duplicate or loads the dtype. A header that breaks a rule is refused with
one line naming the file and the tensor, before any data is mapped: a damaged download must never
turn into wrong weights or a crash half-way through a merge.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from frankmerge.checkpoints.dtypes import SAFETENSORS, DType, element_size
from frankmerge.errors import CorruptCheckpointError

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's limit
USIZE_END = 2**64  # the library reads dims and offsets as 64-bit usize, and refuses an overflowing size
MAX_NESTING = 127  # serde_json's recursion limit, which the library meets first
METADATA = "__metadata__"
REFETCH = "re-download the file"


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it looks like."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    file: Path
    offset: int  # absolute byte offset of the data in ``file`` (safetensors only)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * element_size(self.dtype)


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], bytes]:
    """Parse and validate one safetensors header; return its tensors and the raw header bytes."""
    size, raw = _read_raw(path)
    header = _parse_json(path, raw)
    _check_metadata(path, header.get(METADATA))
    data_start = 8 + len(raw)
    spans = [_entry(path, name, entry) for name, entry in header.items() if name != METADATA]
    _check_tiling(path, spans, size - data_start)
    tensors = {name: TensorInfo(name, dtype, shape, path, data_start + begin) for name, dtype, shape, begin, _ in spans}
    return tensors, raw


def _read_raw(path: Path) -> tuple[int, bytes]:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CorruptCheckpointError(f"{path}: file is too short to be safetensors; {REFETCH}")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise CorruptCheckpointError(
                    f"{path}: corrupt safetensors header (declared length {header_len} bytes, file {size}); {REFETCH}"
                )
            return size, handle.read(header_len)
    except OSError as exc:
        raise CorruptCheckpointError(f"{path}: cannot read ({exc.strerror})") from exc


def _parse_json(path: Path, raw: bytes) -> dict[str, object]:
    """Strict JSON: UTF-8 (no other encoding guessed), no NaN, no duplicate key, an object at the top."""
    try:
        header = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_int=_int, parse_float=_float
        )
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        _check_tree(header)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptCheckpointError(f"{path}: corrupt safetensors header ({reason}); {REFETCH}") from exc
    return header


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:  # the library would keep the last tensor of that name and ignore the other
            raise ValueError(f"key {key!r} appears twice")
        seen[key] = value
    return seen


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _int(text: str) -> int | float:
    """Integers as the library reads them: ``-0`` is a float there (so no size), past float range an error."""
    value = int(text)
    if abs(value) > sys.float_info.max:
        raise ValueError(f"number {text[:20]}... out of range")
    return -0.0 if text == "-0" else value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} out of range")
    return value


def _check_tree(header: dict[str, object]) -> None:
    """What Python's JSON allows and the library refuses, anywhere in the header: lists and objects
    nested deeper than serde_json's limit, strings with lone surrogates (``"\\ud800"``)."""
    stack: list[tuple[object, int]] = [(header, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"string {_short(item)} is not valid Unicode") from exc
            continue
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            if depth > MAX_NESTING:
                raise ValueError(f"nested deeper than {MAX_NESTING} levels")
            stack.extend((child, depth + 1) for child in children)


def _check_metadata(path: Path, metadata: object) -> None:
    if metadata is None:
        return
    try:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError("not a map of strings")
    except ValueError as exc:
        raise CorruptCheckpointError(f"{path}: corrupt safetensors header (__metadata__: {exc}); {REFETCH}") from exc


def _entry(path: Path, name: str, entry: object) -> tuple[str, DType, tuple[int, ...], int, int]:
    """(name, dtype, shape, begin, end) of one tensor entry, each field checked."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CorruptCheckpointError(f"{path}: tensor {name!r}: header entry needs dtype, shape and data_offsets; {REFETCH}")
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(code, str) or code not in SAFETENSORS:
        raise CorruptCheckpointError(
            f"{path}: tensor {name!r} has dtype {_short(code)}, not one of {', '.join(SAFETENSORS)}; {REFETCH} "
            "or convert the tensor"
        )
    if not isinstance(shape, list) or not all(_is_usize(d) for d in shape):
        raise CorruptCheckpointError(
            f"{path}: tensor {name!r} has shape {_short(shape)}, not a list of non-negative integers; {REFETCH}"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_usize(x) for x in offsets):
        raise CorruptCheckpointError(
            f"{path}: tensor {name!r} has data_offsets {_short(offsets)}, not two non-negative integers; {REFETCH}"
        )
    begin, end = offsets
    dtype = SAFETENSORS[code]
    nbytes = 1
    for dim in (*shape, element_size(dtype)):  # in the library's order, so a size it cannot hold is refused
        nbytes *= dim
        if nbytes >= USIZE_END:
            raise CorruptCheckpointError(f"{path}: tensor {name!r} has shape {_short(shape)}, too large for any file; {REFETCH}")
    if end < begin or end - begin != nbytes:
        raise CorruptCheckpointError(
            f"{path}: tensor {name!r} spans {end - begin} bytes (data_offsets {offsets}) but its shape {_short(shape)} needs "
            f"{nbytes}; {REFETCH}"
        )
    return name, dtype, tuple(shape), begin, end


def _check_tiling(path: Path, spans: list[tuple[str, DType, tuple[int, ...], int, int]], data_bytes: int) -> None:
    """The tensors' byte ranges, sorted, must cover the data section exactly: no gap, overlap or tail."""
    expected = 0
    for name, _, _, begin, end in sorted(spans, key=lambda span: (span[3], span[4])):
        if begin != expected:
            what = "overlaps the tensor before it" if begin < expected else f"leaves a gap of {begin - expected} bytes before it"
            raise CorruptCheckpointError(f"{path}: tensor {name!r} {what} (data_offsets [{begin}, {end}]); {REFETCH}")
        expected = end
    if expected > data_bytes:
        last = max(spans, key=lambda span: span[4])[0]
        raise CorruptCheckpointError(f"{path}: tensor {last!r} runs past the end of the file (truncated download?)")
    if expected < data_bytes:
        raise CorruptCheckpointError(
            f"{path}: {data_bytes - expected} bytes after the last tensor that no header entry covers; {REFETCH}"
        )


def _is_usize(value: object) -> bool:
    return type(value) is int and 0 <= value < USIZE_END  # bool is an int subclass; JSON true is not a size


def _short(value: object) -> str:
    """A header value for an error line: its repr, cut short (a fuzzed shape may hold thousands of dims)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

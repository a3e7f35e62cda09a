"""Each rule of the safetensors header is enforced with one line naming the file and the tensor."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from frankmerge.checkpoints.header import read_safetensors_header
from frankmerge.errors import CorruptCheckpointError
from tests.checkpoints.safetensors_files import encode, library_verdict, read_both, valid_header, write

Header = dict[str, dict]  # type: ignore[type-arg]


def _set(name: str, key: str, value: object) -> Callable[[Header], None]:
    def edit(header: Header) -> None:
        header[name][key] = value

    return edit


def _shift(name: str, by: int) -> Callable[[Header], None]:
    def edit(header: Header) -> None:
        begin, end = header[name]["data_offsets"]
        header[name]["data_offsets"] = [begin + by, end + by]

    return edit


def _swap(first: str, second: str) -> Callable[[Header], None]:
    def edit(header: Header) -> None:
        header[first]["data_offsets"], header[second]["data_offsets"] = (
            header[second]["data_offsets"],
            header[first]["data_offsets"],
        )

    return edit


TENSOR_RULES = {
    "negative dim": ("b.bias", _set("b.bias", "shape", [-5]), "non-negative integers"),
    "float dim": ("b.bias", _set("b.bias", "shape", [5.0]), "non-negative integers"),
    "bool dim": ("b.bias", _set("b.bias", "shape", [True, 5]), "non-negative integers"),
    "dim past 64 bits": ("b.bias", _set("b.bias", "shape", [2**64, 0]), "non-negative integers"),
    "size overflows 64 bits": ("a.weight", _set("a.weight", "shape", [2**40, 2**40, 0]), "too large"),
    "negative offset": ("e.mask", _set("e.mask", "data_offsets", [-7, 0]), "two non-negative integers"),
    "three offsets": ("e.mask", _set("e.mask", "data_offsets", [0, 7, 7]), "two non-negative integers"),
    "begin after end": ("c.scalar", _set("c.scalar", "data_offsets", [42, 34]), "spans"),
    "span differs from shape": ("a.weight", _set("a.weight", "shape", [3, 3]), "needs 36"),
    "unknown dtype": ("b.bias", _set("b.bias", "dtype", "F31"), "dtype 'F31'"),
    "missing shape": ("c.scalar", lambda h: h["c.scalar"].pop("shape"), "needs dtype, shape and data_offsets"),
    "overlap": ("c.scalar", _shift("c.scalar", -2), "overlaps"),
    "gap": ("e.mask", _shift("e.mask", 1), "gap of 1 bytes"),
    "swapped offsets": ("a.weight", _swap("a.weight", "e.mask"), "spans"),
}


@pytest.mark.parametrize("rule", list(TENSOR_RULES))
def test_tensor_rule_names_file_and_tensor(tmp_path: Path, rule: str):
    tensor, edit, needle = TENSOR_RULES[rule]
    header, data = valid_header()
    header = copy.deepcopy(header)
    edit(header)
    path = write(tmp_path / "model.safetensors", encode(header, data))
    with pytest.raises(CorruptCheckpointError) as caught:
        read_safetensors_header(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and repr(tensor) in message and needle in message, message
    assert library_verdict(path) is not None, "the library accepts what this test says the format forbids"


HEADER_RULES = {
    "not UTF-8": (lambda text, data: encode(text.encode().replace(b"b.bias", b"b.\xff\xfeias"), data), "utf-8"),
    "UTF-16 (json.loads would guess it)": (lambda text, data: encode(text.encode("utf-16"), data), "utf-8"),
    "not an object": (lambda text, data: encode("[]", data), "not a JSON object"),
    "duplicate tensor name": (
        lambda text, data: encode(text[:-1] + ', "e.mask": {"dtype": "U8", "shape": [7], "data_offsets": [35, 42]}}', data),
        "'e.mask' appears twice",
    ),
    "lone surrogate in a name": (lambda text, data: encode(text.replace("b.bias", "b\\ud800"), data), "not valid Unicode"),
    "NaN": (lambda text, data: encode(text.replace('"pt"', "NaN"), data), "NaN is not JSON"),
    "metadata not strings": (lambda text, data: encode(text.replace('"pt"', "1"), data), "__metadata__"),
    "length past the file": (lambda text, data: encode(text, data, declared=10**6), "declared length"),
    "length past 100 MB": (lambda text, data: encode(text, data, declared=100_000_001), "declared length"),
    "nested 200 deep": (lambda text, data: encode(text.replace('"pt"', "[" * 200 + "]" * 200), data), "nested deeper"),
    "truncated data": (lambda text, data: encode(text, data[:-3]), "'e.mask' runs past the end of the file"),
    "trailing bytes": (lambda text, data: encode(text, data + b"\0\0"), "2 bytes after the last tensor"),
}


@pytest.mark.parametrize("rule", list(HEADER_RULES))
def test_header_rule_is_one_line_naming_the_file(tmp_path: Path, rule: str):
    build, needle = HEADER_RULES[rule]
    header, data = valid_header()
    path = write(tmp_path / "model.safetensors", build(json.dumps(header), data))
    with pytest.raises(CorruptCheckpointError) as caught:
        read_safetensors_header(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and needle in message, message
    if rule != "duplicate tensor name":  # the library keeps the last duplicate: see test_header_fuzz
        assert library_verdict(path) is not None


def test_valid_file_reads_as_the_library_reads_it(tmp_path: Path):
    header, data = valid_header()
    header["x.extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [49, 53], "note": "extra keys are allowed"}
    header["__metadata__"] = None  # allowed by the library too
    path = write(tmp_path / "model.safetensors", encode(" " + json.dumps(header) + "   ", data + bytes(4)))
    ours, theirs = read_both(path)
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)

"""Differential fuzzing: wherever the safetensors library refuses a file, frankmerge's reader does too.

Hundreds of files are derived from one small valid file by seeded mutations (flipped bytes,
swapped offsets, bad dims, overlaps, gaps, unknown dtypes, duplicate names, invalid UTF-8,
truncation...). Each goes to both readers. frankmerge must refuse every file the library refuses,
always with its one-line CorruptCheckpointError, never another exception; where both accept, both
must read the same tensors. frankmerge refuses two things the library accepts, on purpose:

* duplicate JSON keys (a tensor named twice, a metadata key twice): the library silently keeps the
  last entry, so the file says two things about one tensor and we cannot know which was meant;
* dtypes the library knows and the merge does not handle (U16/U32/U64, C64, F8_E8M0, F4, F6...).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path

from tests.checkpoints.safetensors_files import VALID, encode, frankmerge_verdict, library_verdict, read_both, valid_header

CASES = 600
SEED = 16
DELIBERATE = ("appears twice", "has dtype")  # frankmerge refuses, the library accepts; see the module docstring
LIBRARY_ONLY_DTYPES = ["U16", "U32", "U64", "C64", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "F8_E4M3FNUZ"]
KNOWN_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"]
ODD_VALUES: list[object] = [None, "3", 1.5, 2.0, True, [], {}, [[3]], -1, 2**63, 2**64, 10**30, 0, 1, 7]

Header = dict[str, object]
Mutation = Callable[[random.Random, Header, bytes], tuple[Header | str | bytes, bytes]]


def _tensor(rng: random.Random) -> str:
    return rng.choice(list(VALID))


def _entry(header: Header, name: str) -> dict[str, object]:
    entry = header[name]
    assert isinstance(entry, dict)
    return entry


def flip_header_bytes(rng: random.Random, header: Header, data: bytes) -> tuple[bytes, bytes]:
    text = bytearray(json.dumps(header).encode())
    for _ in range(rng.randint(1, 3)):
        text[rng.randrange(len(text))] = rng.randrange(256)
    return bytes(text), data


def swap_offsets(rng: random.Random, header: Header, data: bytes) -> tuple[Header, bytes]:
    first, second = rng.sample(list(VALID), 2)
    a, b = _entry(header, first), _entry(header, second)
    a["data_offsets"], b["data_offsets"] = b["data_offsets"], a["data_offsets"]
    return header, data


def shift_offsets(rng: random.Random, header: Header, data: bytes) -> tuple[Header, bytes]:
    entry = _entry(header, _tensor(rng))
    begin, end = entry["data_offsets"]  # type: ignore[misc]
    entry["data_offsets"] = [begin + rng.randint(-9, 9), end + rng.choice([0, rng.randint(-9, 9)])]
    return header, data


def odd_dim(rng: random.Random, header: Header, data: bytes) -> tuple[Header, bytes]:
    entry = _entry(header, _tensor(rng))
    shape = list(entry["shape"]) or [1]  # type: ignore[call-overload]
    shape[rng.randrange(len(shape))] = rng.choice([*ODD_VALUES, -(2**63), 2**32, 2**64 + 1])
    entry["shape"] = shape if rng.random() < 0.8 else [*shape, 2**40, 2**40, 0]
    return header, data


def odd_field(rng: random.Random, header: Header, data: bytes) -> tuple[Header, bytes]:
    entry = _entry(header, _tensor(rng))
    field = rng.choice(["shape", "data_offsets", "dtype"])
    entry[field] = rng.choice([*ODD_VALUES, [0], [0, 1, 2], [5, 2], [-1, 6], [0.0, 24], [2**64, 2**64]])
    return header, data


SAME_SIZE_LIBRARY_ONLY = {"a.weight": "U32", "b.bias": "U16", "c.scalar": "U64", "e.mask": "F8_E8M0"}


def change_dtype(rng: random.Random, header: Header, data: bytes) -> tuple[Header, bytes]:
    name = _tensor(rng)
    choices = [*KNOWN_DTYPES, *LIBRARY_ONLY_DTYPES, "F31", "", "f32", "float32"]
    if name in SAME_SIZE_LIBRARY_ONLY and rng.random() < 0.3:  # a file the library loads and the merge cannot use
        choices = [SAME_SIZE_LIBRARY_ONLY[name]]
    _entry(header, name)["dtype"] = rng.choice(choices)
    return header, data


def duplicate_name(rng: random.Random, header: Header, data: bytes) -> tuple[str, bytes]:
    name = _tensor(rng)
    entry = dict(_entry(header, name))
    if rng.random() < 0.5:
        entry["shape"] = [9]
    text = json.dumps(header)
    return text[:-1] + f", {json.dumps(name)}: {json.dumps(entry)}}}", data


def invalid_utf8(rng: random.Random, header: Header, data: bytes) -> tuple[bytes, bytes]:
    bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"])
    name = _tensor(rng).encode()
    return json.dumps(header).encode().replace(name, name[:1] + bad + name[1:]), data


def truncate(rng: random.Random, header: Header, data: bytes) -> tuple[bytes, bytes]:
    whole = encode(header, data)
    return whole[: rng.randrange(len(whole))], b""  # raw file bytes: may cut the prefix, header or data


def append(rng: random.Random, header: Header, data: bytes) -> tuple[Header, bytes]:
    return header, data + rng.randbytes(rng.randint(1, 9))


def odd_metadata(rng: random.Random, header: Header, data: bytes) -> tuple[Header, bytes]:
    header["__metadata__"] = rng.choice([1, [], "x", {"a": 1}, {"a": None}, {"a": ["b"]}, {"a": "b"}, None, {"a": "\ud800"}])
    return header, data


def drop_field(rng: random.Random, header: Header, data: bytes) -> tuple[Header, bytes]:
    entry = _entry(header, _tensor(rng))
    del entry[rng.choice(["shape", "data_offsets", "dtype"])]
    return header, data


def extra_key(rng: random.Random, header: Header, data: bytes) -> tuple[str, bytes]:
    depth = rng.choice([1, 60, 125, 126, 127, 200])
    value = rng.choice(["[" * depth + "]" * depth, "NaN", "1e400", "-0", '"\\ud800"', "1" * 400, '"ok"'])
    name = _tensor(rng)
    text = json.dumps(header)
    cut = text.index(json.dumps(name)) + len(json.dumps(name)) + 3  # just inside the entry's "{"
    return text[:cut] + f'"extra": {value}, ' + text[cut:], data


def not_an_object(rng: random.Random, header: Header, data: bytes) -> tuple[str, bytes]:
    return rng.choice(["[]", "1", '"x"', "null", "", "{", "}", "{}", " ", "\ufeff{}"]), rng.choice([data, b""])


def negative_zero(rng: random.Random, header: Header, data: bytes) -> tuple[str, bytes]:
    text = json.dumps(header)
    spots = [i for i in range(len(text) - 1) if text[i] == "0" and not text[i - 1].isdigit() and not text[i + 1].isdigit()]
    spot = rng.choice(spots)
    return text[:spot] + "-" + text[spot:], data


def whitespace(rng: random.Random, header: Header, data: bytes) -> tuple[str, bytes]:
    return rng.choice([" ", "\n", "\t", "  \r\n"]) + json.dumps(header) + " " * rng.randint(0, 9), data


def lying_length(rng: random.Random, header: Header, data: bytes) -> tuple[bytes, bytes]:
    text = json.dumps(header).encode()
    declared = rng.choice([0, 1, len(text) - 1, len(text) + 1, len(text) + len(data), 100_000_001, 2**63, 2**64 - 1])
    return encode(text, data, declared=declared), b""


MUTATIONS: list[Mutation] = [
    flip_header_bytes,
    swap_offsets,
    shift_offsets,
    odd_dim,
    odd_field,
    change_dtype,
    duplicate_name,
    invalid_utf8,
    truncate,
    append,
    odd_metadata,
    drop_field,
    extra_key,
    not_an_object,
    negative_zero,
    whitespace,
    lying_length,
]
RAW = {truncate, lying_length}  # these return the whole file's bytes


def _case(rng: random.Random, index: int) -> tuple[str, bytes]:
    """Case ``index``: every mutation in turn, then random pairs of structured ones."""
    header, data = valid_header()
    header = copy.deepcopy(header)
    mutation = MUTATIONS[index % len(MUTATIONS)]
    if index >= 2 * len(MUTATIONS) and rng.random() < 0.3 and mutation not in RAW:
        first = rng.choice([swap_offsets, shift_offsets, odd_dim, change_dtype, append, odd_metadata])
        header, data = first(rng, header, data)  # type: ignore[assignment]
        label = f"{first.__name__}+{mutation.__name__}"
    else:
        label = mutation.__name__
    produced, data = mutation(rng, header, data)  # type: ignore[arg-type]
    return label, produced if mutation in RAW else encode(produced, data)  # type: ignore[return-value, arg-type]


def test_frankmerge_refuses_whatever_the_library_refuses(tmp_path: Path):
    rng = random.Random(SEED)
    missed, deliberate, both_accept = [], [], 0
    for index in range(CASES):
        label, content = _case(rng, index)
        path = tmp_path / f"case{index}" / "model.safetensors"
        path.parent.mkdir()
        path.write_bytes(content)
        ours = frankmerge_verdict(path)  # raises if frankmerge fails with anything but its one-line error
        theirs = library_verdict(path)
        if ours is not None:
            assert "\n" not in ours and str(path) in ours, (label, ours)
        if theirs is not None and ours is None:
            missed.append((index, label, theirs))
        elif theirs is None and ours is not None:
            reasons = [reason for reason in DELIBERATE if reason in ours]
            assert reasons, (index, label, ours)
            deliberate.extend(reasons)
        elif theirs is None:
            both_accept += 1
            mine, library = read_both(path)
            assert mine.keys() == library.keys(), label
            assert all(mine[k].dtype == library[k].dtype and mine[k].equal(library[k]) for k in mine), label
    assert not missed, f"accepted by frankmerge, refused by safetensors: {missed[:5]}"
    assert both_accept > 20 and set(deliberate) == set(DELIBERATE), (both_accept, deliberate)  # all outcomes were met

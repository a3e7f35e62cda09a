"""The prior file: one safetensors file of Δ tensors under canonical names, plus JSON metadata.

Layout::

    prior.safetensors
      tensors      "layers.{i}.{suffix}", "embed_tokens.weight", "norm.weight", "lm_head.weight"
                   Δ = θ_reasoner − θ_vlm in the VLM's shapes, stored in the chosen dtype
      __metadata__ {"format": "pt", "frankmerge_drift": "<JSON of PriorMetadata>"}

The metadata holds, per tensor, its module group, the VLM's and the reasoner's on-disk names,
‖Δ‖ and ‖θ_V‖ (float64 sums over float32 Δ), and the inputs the prior came from. Norms are
only known once every byte is written, so the writer reserves room for the header, streams the
tensors chunk by chunk (memory: one chunk), and rewrites the header in place at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from frankmerge.checkpoints.dtypes import SAFETENSORS, as_dtype, element_size
from frankmerge.drift.errors import PriorFormatError
from frankmerge.errors import one_line

PRIOR_FORMAT = "frankmerge-drift-prior"
PRIOR_VERSION = 1
META_KEY = "frankmerge_drift"
# The longest repr a float64 can have; placeholder norms use it so the final header always fits.
_LONGEST_FLOAT = -2.2250738585072014e-308


@dataclass(frozen=True)
class PriorEntry:
    """One covered tensor of the VLM's decoder."""

    group: str
    shape: tuple[int, ...]
    vlm_name: str  # on-disk name in the VLM checkpoint
    reasoner_name: str  # on-disk name in the reasoner checkpoint
    norm: float  # ‖Δ‖
    vlm_norm: float  # ‖θ_V‖, to read ‖Δ‖ relative to the weights
    rows_matched: int | None = None  # embed/head: rows both checkpoints hold
    # embed/head: of those, rows whose id names different tokens in the two tokenizers (Δ = 0 there);
    # None when the tokenizers could not be compared (rows then matched by index alone)
    rows_of_other_meaning: int | None = None


@dataclass(frozen=True)
class PriorMetadata:
    modules: tuple[str, ...]
    dtype: str
    num_blocks: int
    entries: dict[str, PriorEntry]  # canonical name -> entry, in file order
    uncovered: tuple[str, ...] = ()  # canonical decoder tensors outside the chosen groups
    inputs: dict[str, object] = field(default_factory=dict)
    tool_version: str = ""
    created: str = ""
    delta: str = "reasoner - vlm"

    @property
    def total_norm(self) -> float:
        return sum(e.norm**2 for e in self.entries.values()) ** 0.5

    def to_json(self) -> str:
        data = asdict(self)
        data = {"format": PRIOR_FORMAT, "version": PRIOR_VERSION, **data}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, source: Path) -> PriorMetadata:
        try:
            data = json.loads(text)
            if data.get("format") != PRIOR_FORMAT or data.get("version") != PRIOR_VERSION:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
            entries = {name: PriorEntry(**{**entry, "shape": tuple(entry["shape"])}) for name, entry in data["entries"].items()}
            return cls(
                modules=tuple(data["modules"]),
                dtype=str(data["dtype"]),
                num_blocks=int(data["num_blocks"]),
                entries=entries,
                uncovered=tuple(data.get("uncovered", ())),
                inputs=dict(data.get("inputs", {})),
                tool_version=str(data.get("tool_version", "")),
                created=str(data.get("created", "")),
                delta=str(data.get("delta", "reasoner - vlm")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise PriorFormatError(
                f"{source}: metadata is not a frankmerge DRIFT prior v{PRIOR_VERSION} ({one_line(exc)}); "
                "rebuild it with `frankmerge drift-prior`"
            ) from exc


def with_placeholder_norms(meta: PriorMetadata) -> PriorMetadata:
    """The same metadata with every number at its longest repr: an upper bound on the header size."""
    entries = {
        k: PriorEntry(
            e.group, e.shape, e.vlm_name, e.reasoner_name, _LONGEST_FLOAT, _LONGEST_FLOAT, e.rows_matched, e.rows_of_other_meaning
        )
        for k, e in meta.entries.items()
    }
    return PriorMetadata(**{**meta.__dict__, "entries": entries})


class PriorWriter:
    """Streams planned tensors into one safetensors file whose header is finalised last.

    Writes go to a hidden sibling that is renamed over ``path`` by ``finish``; ``abort`` removes it.
    """

    def __init__(self, path: Path, plan: dict[str, tuple[torch.dtype, tuple[int, ...]]], header_budget: int) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        self._entries: dict[str, dict[str, object]] = {}
        offset = 0
        for name, (dtype, shape) in plan.items():
            nbytes = element_size(dtype) * _numel(shape)
            self._entries[name] = {
                "dtype": as_dtype(dtype).code,
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        self._order = list(plan)
        self._position = 0
        self._written = 0
        tensors_json = len(json.dumps(self._entries, separators=(",", ":")))
        self._header_len = _round8(tensors_json + header_budget + 256)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.partial.open("wb")
        self._handle.write(self._header_len.to_bytes(8, "little") + b" " * self._header_len)

    def write(self, name: str, chunk: torch.Tensor) -> None:
        """Append a flat chunk of ``name``; tensors arrive whole and in plan order."""
        expected = self._order[self._position]
        if name != expected:
            raise RuntimeError(f"prior writer: expected {expected!r} next, got {name!r}")
        data = chunk.contiguous().reshape(-1).view(torch.uint8).numpy()
        self._handle.write(memoryview(data))
        begin, end = self._entries[name]["data_offsets"]  # type: ignore[misc]
        self._written += data.nbytes
        if self._written > end - begin:
            raise RuntimeError(f"prior writer: {name} overflows its planned {end - begin} bytes")
        if self._written == end - begin:
            self._position += 1
            self._written = 0

    def finish(self, meta: PriorMetadata) -> None:
        if self._position != len(self._order):
            raise RuntimeError(f"prior writer: {self._order[self._position]!r} was never written")
        header = {"__metadata__": {"format": "pt", META_KEY: meta.to_json()}, **self._entries}
        raw = json.dumps(header, separators=(",", ":")).encode()
        if len(raw) > self._header_len:
            raise RuntimeError(f"prior header needs {len(raw)} bytes, {self._header_len} were reserved")
        self._handle.seek(8)
        self._handle.write(raw + b" " * (self._header_len - len(raw)))
        self._handle.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self.partial.unlink(missing_ok=True)


@dataclass
class DriftPrior:
    """An opened prior file; tensors are read one at a time, on demand."""

    path: Path
    meta: PriorMetadata
    bytes_read: int = 0  # by ``rows``: what a rank read of Δ

    def tensor(self, canonical: str) -> torch.Tensor:
        return next(self.tensors([canonical]))[1]

    def tensors(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, Δ)`` one tensor at a time, so only one is in host memory at once."""
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as handle:
            for name in names:
                yield name, handle.get_tensor(name)

    def rows(self, wanted: Iterable[tuple[str, int, int]]) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, Δ[start:stop])`` for each ``(name, start, stop)``, reading exactly those rows' bytes.

        Dim 0 is the outermost in a safetensors tensor, so a row range is one contiguous byte span:
        an FSDP2 rank reads its shard and nothing else of Δ. ``bytes_read`` counts what was read.
        """
        from frankmerge.checkpoints.header import read_safetensors_header

        infos, _ = read_safetensors_header(self.path)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for name, start, stop in wanted:
                info = infos[name]
                row_bytes = info.nbytes // info.shape[0] if info.shape and info.shape[0] else 0
                if not 0 <= start <= stop <= (info.shape[0] if info.shape else 1):
                    raise PriorFormatError(f"{self.path}: rows {start}:{stop} of {name!r} lie outside {list(info.shape)}")
                nbytes = (stop - start) * row_bytes
                data = bytearray(nbytes)
                view, done = memoryview(data), 0
                while done < nbytes:  # pread may return short counts
                    got = os.preadv(fd, [view[done:]], info.offset + start * row_bytes + done)
                    if got <= 0:
                        raise PriorFormatError(f"{self.path}: truncated while reading {name!r}; rebuild the prior")
                    done += got
                self.bytes_read += nbytes
                shape = (stop - start, *info.shape[1:])
                empty = torch.empty(shape, dtype=info.dtype.torch)
                yield name, torch.frombuffer(data, dtype=info.dtype.torch).reshape(shape) if nbytes else empty
        finally:
            os.close(fd)

    @property
    def names(self) -> list[str]:
        return list(self.meta.entries)


def load_prior(path: str | Path) -> DriftPrior:
    """Open and validate a prior file: metadata present and every listed tensor there, shaped as listed."""
    path = Path(path)
    if not path.is_file():
        raise PriorFormatError(f"--prior {path}: no such file; build one with `frankmerge drift-prior`")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            stored = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
            dtypes = {name: handle.get_slice(name).get_dtype() for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise PriorFormatError(f"{path}: not a readable safetensors file ({one_line(exc)})") from exc
    if META_KEY not in metadata:
        raise PriorFormatError(f"{path}: has no DRIFT metadata; is it a prior built by `frankmerge drift-prior`?")
    meta = PriorMetadata.from_json(metadata[META_KEY], path)
    for name, entry in meta.entries.items():
        if stored.get(name) != entry.shape:
            found = "missing" if name not in stored else f"shaped {list(stored[name])}"
            raise PriorFormatError(f"{path}: tensor {name!r} is {found}, metadata says {list(entry.shape)}; rebuild the prior")
        if SAFETENSORS.get(dtypes[name]) is None:
            raise PriorFormatError(f"{path}: tensor {name!r} has unsupported dtype {dtypes[name]}")
    return DriftPrior(path, meta)


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def _round8(n: int) -> int:
    return n + (-n % 8)

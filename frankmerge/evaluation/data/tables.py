"""Read a benchmark's local copy: Hugging Face parquet files or a VLMEvalKit TSV, offline."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frankmerge.errors import one_line
from frankmerge.evaluation.errors import DataFileError, MissingColumnError

Row = dict[str, Any]
# VLMEvalKit stores a repeated image once and writes the first row's index in later rows.
_MAX_IMAGE_REFERENCE_CHARS = 64


@dataclass(frozen=True)
class Table:
    """Rows of one or more files; columns are kept per file so a missing column names its file."""

    rows: list[Row]
    files: tuple[Path, ...]
    columns: Mapping[Path, tuple[str, ...]]
    base_dir: Path  # image paths in the data are resolved against this
    format: str  # "parquet" or "tsv"


def read_table(path: Path, split: str | None = None) -> Table:
    """A parquet file, a directory of parquet files (those whose name contains `split`), or a TSV."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"benchmark data not found: {path} (give a parquet file, a directory of them, or a TSV)")
    if path.is_dir():
        return _read_parquet_files(_parquet_files(path, split), base_dir=path)
    if path.suffix == ".parquet":
        return _read_parquet_files([path], base_dir=path.parent)
    if path.suffix in (".tsv", ".txt"):
        return _read_tsv(path)
    raise DataFileError(f"{path}: unknown data format {path.suffix!r}; expected .parquet, a directory of them, or .tsv")


def _parquet_files(directory: Path, split: str | None) -> list[Path]:
    found = sorted(directory.rglob("*.parquet"))
    if not found:
        raise DataFileError(f"no .parquet files under {directory}")
    if split is None:
        return found
    chosen = [f for f in found if split in f.name]
    if not chosen:
        names = ", ".join(f.name for f in found[:6])
        raise DataFileError(
            f"no parquet file under {directory} has {split!r} in its name (found {names}); pass --split or a file"
        )
    return chosen


def _read_parquet_files(files: Iterable[Path], base_dir: Path) -> Table:
    import pyarrow.parquet as pq

    rows: list[Row] = []
    columns: dict[Path, tuple[str, ...]] = {}
    for file in files:
        try:
            table = pq.read_table(file)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise DataFileError(f"{file}: not a readable parquet file ({one_line(exc)})") from exc
        columns[file] = tuple(table.column_names)
        rows.extend(table.to_pylist())
    return Table(rows=rows, files=tuple(columns), columns=columns, base_dir=base_dir, format="parquet")


def _read_tsv(path: Path) -> Table:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 images exceed the default limit
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        rows = [dict(row) for row in reader]
        header = tuple(reader.fieldnames or ())
    if not header:
        raise DataFileError(f"{path}: empty TSV (no header line)")
    _resolve_image_references(rows)
    return Table(rows=rows, files=(path,), columns={path: header}, base_dir=path.parent, format="tsv")


def _resolve_image_references(rows: list[Row]) -> None:
    if not rows or "image" not in rows[0] or "index" not in rows[0]:
        return
    full = {str(r["index"]): r["image"] for r in rows if r.get("image") and len(r["image"]) > _MAX_IMAGE_REFERENCE_CHARS}
    for row in rows:
        value = row.get("image") or ""
        if 0 < len(value) <= _MAX_IMAGE_REFERENCE_CHARS and value in full:
            row["image"] = full[value]


def require_columns(table: Table, benchmark: str, *columns: str | tuple[str, ...]) -> None:
    """Every file must have each column (a tuple means: any one of these names)."""
    for file in table.files:
        have = table.columns[file]
        for column in columns:
            names = (column,) if isinstance(column, str) else column
            if not any(n in have for n in names):
                wanted = " or ".join(repr(n) for n in names)
                raise MissingColumnError(f"{file}: column {wanted} missing, which {benchmark} needs (columns: {', '.join(have)})")


def is_missing(value: Any) -> bool:
    """None, NaN, or an empty string: absent in parquet, TSV or pandas exports alike."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def cell(row: Row, *names: str, default: Any = None) -> Any:
    """The first present, non-missing value among `names`."""
    for name in names:
        if name in row and not is_missing(row[name]):
            return row[name]
    return default

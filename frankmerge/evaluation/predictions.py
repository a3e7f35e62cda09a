"""Predictions to score: our generations.jsonl, minimal JSONL from elsewhere, or VLMEvalKit's files.

VLMEvalKit writes its predictions as the benchmark's table plus a ``prediction`` column, in
``.xlsx`` or ``.tsv``. The text of ``prediction`` is scored exactly as a reply of ours; token counts
and finish reasons are not in those files, so the report shows them as unknown.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from frankmerge.errors import one_line
from frankmerge.evaluation.errors import PredictionsError
from frankmerge.evaluation.records import GenerationRecord, read_records

TABLE_SUFFIXES = (".xlsx", ".tsv")
# VLMEvalKit keeps the data's own columns; the one that names items as the data does is used.
ID_COLUMNS = ("index", "id", "pid", "question_id", "sample_index")


def read_predictions(path: Path, known_ids: Collection[str] = ()) -> list[GenerationRecord]:
    """Records from a JSONL file, or from a VLMEvalKit ``.xlsx`` / ``.tsv`` (``index`` and ``prediction``
    columns); ``known_ids`` (the data's item ids) picks a table's id column when several are present."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        return read_records(path)
    if not path.is_file():
        raise PredictionsError(f"predictions file not found: {path}")
    header, rows = _read_xlsx(path) if path.suffix.lower() == ".xlsx" else _read_tsv(path)
    missing = [c for c in ("index", "prediction") if c not in header]
    if missing:
        raise PredictionsError(
            f"{path}: column {' and '.join(map(repr, missing))} missing; a VLMEvalKit prediction file has 'index' and "
            f"'prediction' (columns: {', '.join(header) or 'none'})"
        )
    column = _id_column(header, rows, set(known_ids))
    records: dict[str, GenerationRecord] = {}
    for row in rows:
        if _blank(row.get(column)):
            continue
        record = GenerationRecord(id=_id(row[column]), raw_text="" if _blank(row["prediction"]) else str(row["prediction"]))
        records[record.id] = record
    return list(records.values())


def _id(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():  # spreadsheets store whole numbers as floats
        value = int(value)
    return str(value).strip()


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip())


def _id_column(header: Sequence[str], rows: Sequence[dict[str, Any]], known: set[str]) -> str:
    """``index``, unless another id column of the table matches more of the data's item ids."""
    present = [c for c in ID_COLUMNS if c in header]
    if not known:
        return "index"
    return max(present, key=lambda c: (sum(not _blank(r.get(c)) and _id(r[c]) in known for r in rows), c == "index"))


def _read_tsv(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # an image column may hold base64 images
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            rows = [dict(row) for row in reader]
            return list(reader.fieldnames or ()), rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PredictionsError(f"{path}: not a readable TSV ({one_line(exc)})") from exc


def _read_xlsx(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        import openpyxl
    except ImportError as exc:
        raise PredictionsError(
            f"{path}: reading .xlsx needs openpyxl; pip install openpyxl, or pass VLMEvalKit's .tsv instead"
        ) from exc
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        sheet = workbook.worksheets[0]
        cells = [list(row) for row in sheet.iter_rows(values_only=True)]
        workbook.close()
    except Exception as exc:  # zipfile, XML and openpyxl's own errors
        raise PredictionsError(f"{path}: not a readable .xlsx file ({type(exc).__name__}: {one_line(exc)})") from exc
    if not cells:
        return [], []
    header = ["" if c is None else str(c) for c in cells[0]]
    return header, [dict(zip(header, row, strict=False)) for row in cells[1:]]

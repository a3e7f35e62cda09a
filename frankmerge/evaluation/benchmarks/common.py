"""Cell readers shared by the benchmark loaders (options, list-valued golds, images, ids)."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

from frankmerge.evaluation.data.images import image_refs
from frankmerge.evaluation.data.tables import Row, Table, cell, is_missing
from frankmerge.evaluation.items import ImageRef

LETTER_COLUMNS: tuple[str, ...] = tuple("ABCDEFGHIJ")


def literal_list(value: Any) -> list[Any] | None:
    """A list cell, or a string holding a Python list literal ("['a', 'b']"); None otherwise."""
    if isinstance(value, list | tuple):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays from pandas-written parquet
        return list(value.tolist())
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            return None
        return list(parsed) if isinstance(parsed, list | tuple) else None
    return None


def read_options(row: Row, *names: str) -> list[str]:
    """Options from a list-valued column, else from VLMEvalKit's letter columns A, B, C, ..."""
    value = cell(row, *names)
    listed = literal_list(value) if value is not None else None
    if listed is not None:
        return [str(o) for o in listed]
    options = []
    for letter in LETTER_COLUMNS:
        if letter not in row or is_missing(row[letter]):
            break
        options.append(str(row[letter]))
    return options


def read_gold(value: Any) -> str | tuple[str, ...]:
    """A gold answer; list-valued golds (three MMMU questions) become a tuple of strings."""
    listed = literal_list(value)
    if listed is not None:
        return tuple(str(v) for v in listed)
    return str(value).strip()


def row_images(table: Table, row: Row, columns: Sequence[str], item_id: str) -> tuple[ImageRef, ...]:
    """Every image of a row, in column order; a column may hold several (a list cell)."""
    refs: list[ImageRef] = []
    for column in columns:
        if column in row:
            refs.extend(image_refs(row[column], table.base_dir, f"{column} of item {item_id}"))
    return tuple(refs)


def item_id(row: Row, *names: str, position: int) -> str:
    """The row's id from the first present column, else its position."""
    value = cell(row, *names)
    if value is None:
        return str(position)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def as_labels(value: Any) -> tuple[str, ...]:
    """A category cell as labels: a list, a list literal, or one string."""
    if value is None or is_missing(value):
        return ()
    listed = literal_list(value)
    if listed is not None:
        return tuple(str(v) for v in listed)
    return (str(value),)


def format_options(options: Sequence[str], style: str) -> str:
    """Options as "(A) text" lines (style "paren") or "A. text" lines (style "dot")."""
    letters = [chr(ord("A") + i) for i in range(len(options))]
    if style == "paren":
        return "\n".join(f"({letter}) {option}" for letter, option in zip(letters, options, strict=True))
    return "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options, strict=True))

"""One small hierarchy of errors, each carrying the file, tensor or key at fault.

The CLI prints ``str(error)`` as a single line and exits non-zero, so every message says what is
wrong and how to fix it.
"""

from __future__ import annotations


class FrankmergeError(Exception):
    """Base class: anything the user can fix by changing the input or options."""


class CheckpointNotFoundError(FrankmergeError):
    """A path does not exist or a hub id is not in the local cache."""


class CorruptCheckpointError(FrankmergeError):
    """A weights file or index cannot be parsed or is inconsistent."""


class UnsafeCheckpointError(FrankmergeError):
    """A pickled checkpoint was found and pickles were not allowed."""


class LayoutError(FrankmergeError):
    """A checkpoint's tensor names do not match any known family layout."""


class HomologyError(FrankmergeError):
    """The three models are not homologous (blocks, names or shapes differ)."""


class RecipeError(FrankmergeError):
    """A recipe or option combination is invalid."""


class OutputExistsError(FrankmergeError):
    """The output directory exists and is not empty."""


class OutputBusyError(FrankmergeError):
    """Another merge is writing the same output directory (or its lock cannot be taken at all)."""


class NonFiniteError(FrankmergeError):
    """An input tensor holds NaN or Inf."""


class DiskFullError(FrankmergeError):
    """The disk filled up while writing the output."""


class IncompleteOutputError(FrankmergeError):
    """The written model does not hold exactly the VLM's tensor set."""


def human_size(nbytes: float) -> str:
    """A byte count for people, in decimal units as disks and the hub count: "512 B", "3.4 MB", "1.20 GB"."""
    if nbytes < 1000:
        return f"{int(nbytes)} B"
    for unit, scale, digits in (("kB", 1e3, 1), ("MB", 1e6, 1), ("GB", 1e9, 2)):
        if round(nbytes / scale, digits) < 1000:
            return f"{nbytes / scale:.{digits}f} {unit}"
    return f"{nbytes / 1e12:.2f} TB"


def one_line(exc: BaseException | str) -> str:
    """An exception's message on one line, for quoting a library's error inside ours: its lines
    joined with "; " (PyYAML, pydantic and hub errors span several), whitespace collapsed."""
    text = str(exc)
    parts = [" ".join(line.split()) for line in text.splitlines()]
    joined = "; ".join(part for part in parts if part)
    return joined or (type(exc).__name__ if isinstance(exc, BaseException) else "")

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

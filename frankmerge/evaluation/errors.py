"""Typed errors of the benchmark harness; each names the file, column, id or option at fault."""

from __future__ import annotations

from frankmerge.errors import FrankmergeError


class EvaluationError(FrankmergeError):
    """Base class of every benchmark-harness error."""


class UnknownBenchmarkError(EvaluationError):
    """A benchmark name that is not registered; the message lists the known names."""


class DataFileError(EvaluationError):
    """A benchmark data file or directory is missing, empty or unreadable."""


class MissingColumnError(EvaluationError):
    """A data file lacks a column the benchmark needs."""


class PredictionsError(EvaluationError):
    """A predictions file is malformed or holds ids that are not in the data."""


class ResumeConflictError(EvaluationError):
    """An output directory holds generations made with another model or other settings."""


class BackendUnavailableError(EvaluationError):
    """The requested generation backend is not installed or cannot run here."""


class ReportError(EvaluationError):
    """A report file needed for a comparison is missing or malformed."""


class ImageDecodeError(EvaluationError):
    """An item's image cannot be decoded; the item is reported with this message, never dropped."""

"""Errors of the analysis commands; like every FrankmergeError, each names the input at fault and the fix."""

from __future__ import annotations

from frankmerge.errors import FrankmergeError


class CalibrationError(FrankmergeError):
    """No usable calibration images (empty directory, unreadable files, bad dataset file)."""


class ProfileError(FrankmergeError):
    """The VLM cannot be profiled (no processor, no image-token id, no query positions)."""

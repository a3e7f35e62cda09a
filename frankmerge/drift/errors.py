"""DRIFT's errors: each names the tensor, option, file or line at fault and how to fix it."""

from __future__ import annotations

from frankmerge.errors import FrankmergeError


class DriftError(FrankmergeError):
    """Base class of every DRIFT error."""


class DriftOptionError(DriftError):
    """An unknown variant, module group, placement or timing; the message lists the valid ones."""


class PriorMismatchError(DriftError):
    """The prior does not fit the models or the model it is attached to (names or shapes differ)."""


class PriorFormatError(DriftError):
    """A prior file is not a frankmerge DRIFT prior or is damaged."""


class DriftSetupError(DriftError):
    """A training setup DRIFT cannot guide correctly (frozen decoder, ZeRO-3, FSDP, ...)."""


class DriftDataError(DriftError):
    """Training data is malformed or refers to files that do not exist."""

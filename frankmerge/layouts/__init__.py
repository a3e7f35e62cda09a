"""Per-family tensor naming tables and the detection that maps a checkpoint onto them."""

from frankmerge.layouts.detect import DecoderLayout, ModelConfig, detect_layout, family_for, read_config
from frankmerge.layouts.families import BY_NAME, FAMILIES, Family

__all__ = [
    "BY_NAME",
    "FAMILIES",
    "DecoderLayout",
    "Family",
    "ModelConfig",
    "detect_layout",
    "family_for",
    "read_config",
]

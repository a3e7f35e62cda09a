"""frankmerge: give a vision-language model the reasoning of a reasoning LLM by merging decoders."""

from __future__ import annotations

__version__ = "0.1.0"

from frankmerge.errors import FrankmergeError  # noqa: E402
from frankmerge.merge import MergeResult, merge  # noqa: E402
from frankmerge.recipe import Layouts, MergeRecipe, Parameters, Prior, load_recipe, prior_from_profile  # noqa: E402

__all__ = [
    "FrankmergeError",
    "Layouts",
    "MergeRecipe",
    "MergeResult",
    "Parameters",
    "Prior",
    "__version__",
    "load_recipe",
    "merge",
    "prior_from_profile",
]

"""frankmerge: give a vision-language model the reasoning of a reasoning LLM by merging decoders.

The public names are loaded on first use (PEP 562), so that ``import frankmerge`` and commands
that never merge (``frankmerge --help``, ``layouts``, ``benchmarks``) do not import torch,
transformers or numba.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "FrankmergeError": "frankmerge.errors",
    "MergeResult": "frankmerge.merge",
    "merge": "frankmerge.merge",
    "Layouts": "frankmerge.recipe",
    "MergeRecipe": "frankmerge.recipe",
    "Parameters": "frankmerge.recipe",
    "Prior": "frankmerge.recipe",
    "load_recipe": "frankmerge.recipe",
    "prior_from_profile": "frankmerge.recipe",
}

if TYPE_CHECKING:
    from frankmerge.errors import FrankmergeError
    from frankmerge.merge import MergeResult, merge
    from frankmerge.recipe import Layouts, MergeRecipe, Parameters, Prior, load_recipe, prior_from_profile


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'frankmerge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """``frankmerge.merge`` names the function, as it did when this file imported it eagerly: the
    import system's binding of the submodule of that name to the package is ignored."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "merge" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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

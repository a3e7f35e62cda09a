"""The merge recipe: every choice that determines a merge, validated by pydantic.

A recipe is what ``frankmerge merge RECIPE.yaml`` reads, what the CLI flags build, and what the
merge writes back next to the model so that the merge can be reproduced exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from frankmerge.errors import RecipeError
from frankmerge.methods.frank import PriorKind


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prior(_Strict):
    """The modality prior of Eq. 15: which w_V(l) schedule, and its decay rate α.

    ``profile`` records where α came from when it was read from a profile JSON, and
    ``profile_layers`` how many layers the profiled model had (checked against the VLM).
    """

    kind: PriorKind
    alpha: float | None = None
    profile: str | None = None
    profile_layers: int | None = None

    @model_validator(mode="after")
    def _alpha_matches_kind(self) -> Prior:
        if self.kind == "exponential" and self.alpha is None:
            raise ValueError("prior kind 'exponential' needs alpha (pass --alpha A or --profile FILE)")
        if self.kind != "exponential" and self.alpha is not None:
            raise ValueError(f"prior kind {self.kind!r} takes no alpha")
        return self


class Layouts(_Strict):
    """Optional per-role overrides of the detected layout table (see ``frankmerge layouts``)."""

    vlm: str | None = None
    reasoner: str | None = None
    base: str | None = None


class MergeRecipe(_Strict):
    vlm: str
    reasoner: str
    base: str
    method: Literal["frank"] = "frank"
    prior: Prior
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    embeddings: Literal["keep_vlm", "merge_shared"] = "keep_vlm"
    max_shard_size: str = "5GB"
    layouts: Layouts = Layouts()
    allow_pickle: bool = False
    allow_nonfinite: bool = False
    allow_family_mismatch: bool = False
    allow_download: bool = False

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json(exclude_defaults=False)), sort_keys=False)


def prior_from_profile(path: Path) -> Prior:
    """An exponential prior with the α̂ fitted in a profile JSON (written by ``frankmerge profile``)."""
    try:
        data = json.loads(path.read_text())
        alpha = float(data["fit"]["alpha"] if "fit" in data else data["alpha"])
    except FileNotFoundError as exc:
        raise RecipeError(f"--profile {path}: no such file") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"--profile {path}: not a profile JSON (needs a fitted 'alpha')") from exc
    layers = data.get("num_layers")
    return Prior(kind="exponential", alpha=alpha, profile=str(path), profile_layers=None if layers is None else int(layers))


def load_recipe(path: Path) -> MergeRecipe:
    """Read and validate a YAML recipe; unknown keys are rejected by name."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise RecipeError(f"recipe {path}: no such file") from exc
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path}: expected a mapping of keys to values")
    return build_recipe(data, source=str(path))


def build_recipe(data: dict[str, object], *, source: str = "recipe") -> MergeRecipe:
    try:
        return MergeRecipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{source}: {describe_validation_error(exc)}") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error, on one line, naming the key."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "recipe"
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    if error["type"] == "missing":
        return f"missing key {where!r}"
    return f"{where}: {error['msg']}"

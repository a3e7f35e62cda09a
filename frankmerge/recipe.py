"""The merge recipe: every choice that determines a merge, validated by pydantic.

A recipe is what ``frankmerge merge RECIPE.yaml`` reads, what the CLI flags build, and what the
merge writes back next to the model so that the merge can be reproduced exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from frankmerge.errors import RecipeError, one_line
from frankmerge.methods.frank import PRIOR_PARAMETERS, PriorKind
from frankmerge.methods.parameters import METHOD_PARAMETERS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prior(_Strict):
    """The modality prior of Eq. 15: which w_V(l) schedule and its parameters (docs/profiling.md).

    ``alpha`` is the decay rate α, ``scale`` the fitted Ĉ (``fitted`` prior), ``bounds`` the
    [w_min, w_max] of the ``minmax`` prior. ``profile`` records where α came from when it was read
    from a profile JSON, and ``profile_layers`` how many layers the profiled model had.
    """

    kind: PriorKind
    alpha: float | None = None
    scale: float | None = None
    bounds: tuple[float, float] | None = None
    profile: str | None = None
    profile_layers: int | None = None

    @model_validator(mode="after")
    def _parameters_match_kind(self) -> Prior:
        need = PRIOR_PARAMETERS[self.kind]
        for name in ("alpha", "scale"):
            if name in need and getattr(self, name) is None:
                raise ValueError(f"prior kind {self.kind!r} needs {name} (pass --alpha A or --profile FILE)")
            if name not in need and getattr(self, name) is not None:
                raise ValueError(f"prior kind {self.kind!r} takes no {name}")
        if self.bounds is not None and self.kind != "minmax":
            raise ValueError("only the minmax prior takes bounds")
        return self


class Layouts(_Strict):
    """Optional per-role overrides of the detected layout table (see ``frankmerge layouts``)."""

    vlm: str | None = None
    reasoner: str | None = None
    base: str | None = None
    reasoner_base: str | None = None


MethodName = Literal["frank", "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "layer_swap", "metagpt"]
PerLayer = float | list[float]


# Which parameters each method takes; anything else is rejected by name.
class Parameters(_Strict):
    """Method parameters; unset ones take the method's published default (see README)."""

    beta: PerLayer | None = None
    lambda_v: PerLayer | None = None
    lambda_r: PerLayer | None = None
    weights: tuple[float, float] | None = None
    density: float | None = None
    drop_rate: float | None = None
    scale: float | None = None
    seed: int | None = None
    k: int | None = None
    mergekit_compat: bool | None = None

    @model_validator(mode="after")
    def _ranges(self) -> Parameters:
        if self.density is not None and not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        if self.drop_rate is not None and not 0.0 < self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in (0, 1) (1 would drop every entry), got {self.drop_rate}")
        if self.k is not None and self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        return self


class MergeRecipe(_Strict):
    vlm: str
    reasoner: str
    base: str
    reasoner_base: str | None = None  # the reasoner's own base when it is not the VLM's: τ_R = θ_R − θ_0R
    method: MethodName = "frank"
    prior: Prior | None = None  # frank without a prior: profile the VLM on the bundled images first
    parameters: Parameters = Parameters()
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    embeddings: Literal["keep_vlm", "merge_shared"] = "keep_vlm"
    max_shard_size: str = "5GB"
    layouts: Layouts = Layouts()
    reasoning_tokens: tuple[str, ...] = ("<think>", "</think>")
    carry_reasoning_tokens: bool = True
    think_template: bool = False
    generation_config: Literal["reasoning", "vlm"] = "reasoning"
    allow_pickle: bool = False
    allow_nonfinite: bool = False
    allow_family_mismatch: bool = False
    allow_download: bool = False
    strict: bool = False  # config fields that change the decoder's function refuse the merge

    @model_validator(mode="after")
    def _method_options(self) -> MergeRecipe:
        if self.method != "frank" and self.prior is not None:
            raise ValueError(f"method {self.method!r} takes no prior (only frank does)")
        if self.reasoner_base is not None and self.method in ("linear", "layer_swap"):
            raise ValueError(
                f"method {self.method!r} averages θ_R itself, not a task vector, so reasoner_base does not apply; "
                "use frank, task_arithmetic, ties, dare_linear, dare_ties or metagpt"
            )
        if self.reasoner_base is not None and self.embeddings == "merge_shared":
            raise ValueError("embeddings=merge_shared with reasoner_base is not supported; use keep_vlm")
        allowed = METHOD_PARAMETERS[self.method]
        for key in self.parameters.model_fields_set:
            if getattr(self.parameters, key) is not None and key not in allowed:
                raise ValueError(
                    f"parameter {key!r} does not apply to method {self.method!r} (it takes {', '.join(allowed) or 'none'})"
                )
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json(exclude_defaults=False)), sort_keys=False)


def prior_from_profile(path: Path, kind: PriorKind = "exponential") -> Prior:
    """A prior with the α̂ (and Ĉ, for ``fitted``) of a profile JSON written by ``frankmerge profile``."""
    try:
        data = json.loads(path.read_text())
        fit = data.get("fit", data)
        alpha = float(fit["alpha"])
        scale = float(fit["C"]) if kind == "fitted" else None
    except FileNotFoundError as exc:
        raise RecipeError(f"--profile {path}: no such file") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"--profile {path}: not a profile JSON (needs a fitted 'alpha', and 'C' for --prior fitted)") from exc
    if "alpha" not in PRIOR_PARAMETERS[kind]:
        raise RecipeError(f"--prior {kind} takes no alpha, so --profile does not apply to it")
    layers = data.get("num_layers")
    layers = None if layers is None else int(layers)
    return make_prior(kind=kind, alpha=alpha, scale=scale, profile=str(path), profile_layers=layers)


def load_recipe(path: Path) -> MergeRecipe:
    """Read and validate a YAML recipe; unknown keys are rejected by name."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise RecipeError(f"recipe {path}: no such file") from exc
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path}: not valid YAML {describe_yaml_error(exc)}; fix the syntax there") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path}: expected a mapping of keys to values")
    return build_recipe(data, source=str(path))


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """Where and what, on one line: PyYAML's own message spans several lines with a caret drawing."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None or mark is None:
        return f"({one_line(exc)})"
    where = f"at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and (context_mark.line, context_mark.column) != (mark.line, mark.column):
        return f"{where} ({context} from line {context_mark.line + 1}, column {context_mark.column + 1})"
    return f"{where} ({context})" if context else where


def make_prior(**values: Any) -> Prior:
    """A Prior from option values; an invalid combination is a one-line RecipeError naming it."""
    try:
        return Prior(**values)
    except ValidationError as exc:
        raise RecipeError(describe_validation_error(exc)) from exc


def build_recipe(data: dict[str, object], *, source: str = "recipe") -> MergeRecipe:
    try:
        return MergeRecipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{source}: {describe_validation_error(exc)}") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error, on one line, naming the key."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    if error["type"] == "missing":
        return f"missing key {where!r}"
    return f"{where}: {message}" if where else message

"""What the user gets besides weights: ``merge_report.json`` and a model card.

The report records everything needed to audit a merge: inputs (with fingerprints), options,
per-block statistics and coefficients, and what the run cost.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frankmerge import __version__
from frankmerge.checkpoints.dtypes import DType, dtype_name
from frankmerge.methods.frank import MINMAX_BOUNDS, BlockCoefficients, BlockStats
from frankmerge.recipe import MergeRecipe

if TYPE_CHECKING:
    from frankmerge.inputs import RoleInput

REPORT_NAME = "merge_report.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


SAMPLE_WINDOWS = 64
SAMPLE_BYTES = 1 << 16


def _sample_sha256(path: Path, header: bytes) -> str:
    """SHA-256 of the header and evenly spaced windows of the tensor bytes that follow it."""
    digest = hashlib.sha256(header)
    start, size = 8 + len(header), path.stat().st_size
    span = max(size - start - SAMPLE_BYTES, 0)
    with path.open("rb") as handle:
        for i in range(SAMPLE_WINDOWS):
            handle.seek(start + span * i // max(SAMPLE_WINDOWS - 1, 1))
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def describe_input(item: RoleInput) -> dict[str, object]:
    """Paths, sizes and content fingerprints of each weights file.

    Hashing 70 GB of weights would cost more than the merge, so a safetensors file gets the SHA-256
    of its header (names, dtypes, shapes, offsets) and ``sample_sha256``: the header plus
    ``SAMPLE_WINDOWS`` evenly spaced windows of its tensor bytes (4 MiB read), which tells apart
    checkpoints of one architecture. A file in the Hugging Face cache is a link to a blob named by
    the SHA-256 of its whole content: that exact hash is recorded too. Small files are hashed whole.
    """
    files = []
    for path in item.checkpoint.files:
        entry: dict[str, object] = {"name": path.name, "bytes": path.stat().st_size}
        header = item.checkpoint.header_bytes.get(path.name)
        if header is not None:
            entry["header_sha256"] = _sha256(header)
            entry["sample_sha256"] = _sample_sha256(path, header)
        elif path.suffix == ".json" or path.stat().st_size < (64 << 20):
            entry["sha256"] = _sha256(path.read_bytes())
        blob = path.resolve().name
        if path.is_symlink() and len(blob) == 64 and all(c in "0123456789abcdef" for c in blob):
            entry["sha256"] = blob  # the hub cache names LFS blobs by their SHA-256
        files.append(entry)
    layout = item.layout
    return {
        "reference": item.reference,
        "path": str(item.path),
        "format": item.checkpoint.format,
        "model_type": item.config.model_type,
        "layout": layout.family.name,
        "decoder": layout.decoder,
        "decoder_prefix": layout.prefix,
        "num_blocks": layout.num_blocks,
        "embedding_rows": item.checkpoint.info(layout.embed).shape[0],
        "tied_lm_head": layout.lm_head is None,
        "tensor_bytes": item.checkpoint.total_bytes(),
        "files": files,
    }


def block_records(stats: list[BlockStats], coefficients: list[BlockCoefficients]) -> list[dict[str, float | int]]:
    records: list[dict[str, float | int]] = []
    for s, c in zip(stats, coefficients, strict=True):
        norm_0 = math.sqrt(s.norm_0_sq)
        records.append(
            {
                "index": s.index,
                "norm_v_sq": s.norm_v_sq,
                "norm_r_sq": s.norm_r_sq,
                "dot_vr": s.dot_vr,
                "cos": s.cos,
                "rel_norm_v": math.sqrt(s.norm_v_sq) / norm_0 if norm_0 else math.nan,
                "rel_norm_r": math.sqrt(s.norm_r_sq) / norm_0 if norm_0 else math.nan,
                "w_v": c.w_v,
                "lambda_v": c.lambda_v,
                "lambda_r": c.lambda_r,
            }
        )
    return records


def write_report(
    directory: Path,
    *,
    recipe: MergeRecipe,
    inputs: dict[str, RoleInput],
    result_stats: list[BlockStats],
    coefficients: list[BlockCoefficients],
    shared: list[dict[str, object]],
    method_settings: dict[str, object],
    tokens: dict[str, object],
    out_dtype: DType,
    weight_files: list[str],
    wall_time_s: float,
    peak_rss_bytes: int,
    profile_made_here: bool = False,
    compatibility: dict[str, object] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, object]:
    report: dict[str, object] = {
        "tool": "frankmerge",
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": recipe.method,
        "method_settings": method_settings,
        "recipe": json.loads(recipe.model_dump_json()),
        "inputs": {role: describe_input(item) for role, item in inputs.items()},
        "output": {
            "dtype": dtype_name(out_dtype),
            "files": weight_files,
            "tied_lm_head": inputs["vlm"].layout.lm_head is None,
        },
        "shared_tensors": shared,
        "tokens": tokens,
        "blocks": block_records(result_stats, coefficients),
        "wall_time_s": round(wall_time_s, 3),
        "peak_rss_bytes": peak_rss_bytes,
    }
    if compatibility is not None:
        report["compatibility"] = compatibility
    if timings:
        report["timings_s"] = timings  # phases, summed over threads (they overlap): see frankmerge.timing
    if recipe.prior is not None and recipe.prior.profile is not None:
        report["profile"] = _profile_record(recipe.prior.profile, directory, profile_made_here)
    (directory / REPORT_NAME).write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    return report


METHOD_TEXT = {
    "linear": "BR2V linear merging (θ = β θ_V + (1 − β) θ_R)",
    "task_arithmetic": "task arithmetic (θ = θ_0 + λ_V τ_V + λ_R τ_R)",
    "ties": "TIES merging",
    "dare_linear": "DARE-linear merging",
    "dare_ties": "DARE-TIES merging",
    "layer_swap": "BR2V layer swap (first k blocks from the VLM, the rest linear)",
    "metagpt": "MetaGPT (Eq. 13 over the whole decoder)",
}


def _method_text(recipe: MergeRecipe, settings: dict[str, object]) -> str:
    if recipe.method != "frank":
        options = ", ".join(f"{k} = {v}" for k, v in settings.items())
        return f"{METHOD_TEXT[recipe.method]}{f' ({options})' if options else ''}"
    return f"FRANK's layer-wise closed-form fusion with {_prior_text(recipe)}"


def _profile_record(profile: str, directory: Path, made_here: bool) -> dict[str, Any]:
    """What the profile that gave α says about itself.

    A profile made by this merge was copied into ``directory`` (the staging directory): read that
    copy, since with ``--overwrite`` the file at its final path is still the previous merge's.
    """
    from frankmerge.analysis import profile_summary

    path = Path(profile)
    return {**profile_summary(directory / path.name if made_here else path), "path": profile}


def _prior_text(recipe: MergeRecipe) -> str:
    prior = recipe.prior
    assert prior is not None
    if prior.kind == "none":
        return "no prior (Eq. 13)"
    if prior.kind == "linear":
        return "linear layer-indexed decay prior (ablation)"
    if prior.kind in ("relative", "minmax", "fitted"):
        if prior.kind == "relative":
            described = "w_V(l) = e^{−α(l−1)}"
        elif prior.kind == "minmax":
            described = f"min-max rescaled decay into {list(prior.bounds or MINMAX_BOUNDS)}"
        else:
            described = f"w_V(l) = min(1, Ĉ e^{{−α l}}), Ĉ = {prior.scale:g}"
        source = f", from profile `{prior.profile}`" if prior.profile else ""
        return f"the {prior.kind} prior ({described}, α = {prior.alpha:g}{source})"
    source = f", from profile `{prior.profile}`" if prior.profile else ""
    return f"exponential prior, Eq. 16 with α = {prior.alpha:g}{source}"


def _number(value: object) -> str:
    return "–" if value is None else f"{value:.4f}"


def _compatibility_text(compatibility: object) -> str:
    """The pair doctor's findings for the card; the merged config is always the VLM's."""
    if not isinstance(compatibility, dict):
        return "Not checked."
    changing = compatibility.get("function_changing") or []
    head = (
        f"Config fields that change what the decoder computes differ between the inputs: {', '.join(changing)}. "
        if changing
        else "No config field that changes what the decoder computes differs between the inputs. "
    )
    head += "The merged model's config is the VLM's."
    findings = compatibility.get("findings") or []
    return head + "\n\n" + "\n".join(f"- {line}" for line in findings) if findings else head


def write_model_card(directory: Path, title: str, recipe: MergeRecipe, report: dict[str, object]) -> None:
    """README.md with hub front matter, the recipe and a per-block coefficient table."""
    references = (recipe.vlm, recipe.reasoner, recipe.base) + ((recipe.reasoner_base,) if recipe.reasoner_base else ())
    bases = "\n".join(f"- {ref}" for ref in references)
    lineage = (
        f"fine-tuned from **{recipe.base}** and **{recipe.reasoner_base}** respectively (τ_V = θ_V − θ_0 over the first, "
        "τ_R = θ_R − θ_0R over the second)"
        if recipe.reasoner_base
        else f"both fine-tuned from **{recipe.base}**"
    )
    rows = "\n".join(
        f"| {b['index']} | {b['norm_v_sq']:.4g} | {b['norm_r_sq']:.4g} | {b['cos']:+.3f} | {_number(b['w_v'])} | "
        f"{b['lambda_v']:.4f} | {b['lambda_r']:.4f} |"
        for b in report["blocks"]  # type: ignore[union-attr]
    )
    settings = report["method_settings"]
    method_text = _method_text(recipe, settings)  # type: ignore[arg-type]
    block_rule = (
        "Each tensor of a decoder block is θ₀ plus the method's element-wise merge of τ_V and τ_R."
        if recipe.method in ("ties", "dare_linear", "dare_ties")
        else "Each decoder block l is θ₀ + λ_V(l) τ_V + λ_R(l) τ_R."
    )
    card = f"""---
base_model:
{bases}
library_name: transformers
pipeline_tag: image-text-to-text
tags:
- merge
- frankmerge
- frank
- reasoning
- vision-language
---

# {title}

A training-free merge of the language decoder of **{recipe.vlm}** (vision-language model) with
**{recipe.reasoner}** (reasoning LLM), {lineage}, made with
frankmerge {report["version"]} using {method_text}.
{block_rule} The vision tower and projector are the VLM's, unchanged; embeddings, final norm
and lm_head follow the `{recipe.embeddings}` policy.

## Recipe

```yaml
{recipe.to_yaml().rstrip()}
```

Reproduce with `frankmerge merge frankmerge_recipe.yaml --out DIR`.

## Compatibility

{_compatibility_text(report.get("compatibility"))}

## Per-block coefficients

| block | ‖τ_V‖² | ‖τ_R‖² | cos(τ_V, τ_R) | w_V | λ_V | λ_R |
|---|---|---|---|---|---|---|
{rows}

Full statistics and input fingerprints are in `merge_report.json`. The merged model has not
been evaluated by this tool; measure it before relying on it.
"""
    (directory / "README.md").write_text(card)

"""Writing ``frankmerge analyze`` results: analysis.json, analysis.csv and the two plots.

All four files are rendered in memory first and renamed into place together, so a failure leaves
no partial output.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from frankmerge import __version__
from frankmerge.analysis import diagnostics
from frankmerge.analysis.files import commit_files, json_safe
from frankmerge.analysis.taskvectors import BLOCK, GROUPS, GroupStats, TaskVectorAnalysis

ANALYSIS_FORMAT = "frankmerge-analysis"
STAT_FIELDS = (
    "numel",
    "norm_v",
    "norm_r",
    "norm_0",
    "rel_norm_v",
    "rel_norm_r",
    "cos_vr",
    "sign_conflict",
    "dist_vr",
    "rel_dist_vr",
    "cos_theta_vr",
)
CSV_COLUMNS = ("block", "layer", "group", *STAT_FIELDS, "lambda_v_eq13", "lambda_v_eq16")
OUTPUT_FILES = ("analysis.json", "analysis.csv", "fig3_cosine.png", "norms.png")


def analysis_json(analysis: TaskVectorAnalysis) -> dict[str, Any]:
    blocks = []
    for block in analysis.blocks:
        groups = {r.group: _stats(r) for r in analysis.rows if r.index == block.index and r.group != BLOCK}
        blocks.append(
            {
                "index": block.index,
                "layer": block.layer,
                **_stats(block),
                "lambda_v_eq13": analysis.lambda_v_eq13[block.index],
                "lambda_v_eq16": analysis.lambda_v_eq16[block.index],
                "groups": groups,
            }
        )
    data = {
        "format": ANALYSIS_FORMAT,
        "tool": f"frankmerge {__version__}",
        "models": {
            "vlm": analysis.vlm,
            "reasoner": analysis.reasoner,
            "base": analysis.base,
            "reasoner_base": analysis.reasoner_base,
        },
        "num_blocks": analysis.num_blocks,
        "definitions": {
            "tau": "τ_V = θ_V − θ_0, τ_R = θ_R − θ_0 over all tensors of the block (or of one module type in it); "
            "with a reasoner_base, τ_R = θ_R − θ_reasoner_base and θ_R stands for θ_0 + τ_R",
            "groups": "attention = self_attn.* except norms; mlp = mlp.*; norms = every *norm* tensor (incl. q_norm/k_norm)",
            "sign_conflict": "fraction of entries where τ_V and τ_R are both nonzero and have opposite signs",
            "rel_dist_vr": "‖θ_V − θ_R‖ / ‖θ_0‖ (DRIFT's parameter-space distance, relative to the base)",
            "lambda_v_eq13": "λ_V of FRANK without prior (Eq. 13)",
            "lambda_v_eq16": f"λ_V of FRANK with the Eq. 16 prior at α = {analysis.alpha:g} ({analysis.alpha_source})",
            "precision": "chunked float32 reads, float64 sums",
        },
        "thresholds": {
            "cos_warn": diagnostics.COS_WARN,
            "lambda_v_warn": diagnostics.LAMBDA_V_WARN,
            "distance_warn": diagnostics.DISTANCE_WARN,
            "cos_theta_warn": diagnostics.COS_THETA_WARN,
            "rel_norm_warn": diagnostics.REL_NORM_WARN,
        },
        "alpha_eq16": analysis.alpha,
        "alpha_source": analysis.alpha_source,
        "blocks": blocks,
        "warnings": [{"code": code, "message": message} for code, message in analysis.warnings],
        "compatibility": analysis.compatibility,
        "wall_time_s": round(analysis.seconds, 3),
    }
    return json_safe(data)


def analysis_csv(analysis: TaskVectorAnalysis) -> str:
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    order = {g: i for i, g in enumerate((*GROUPS, BLOCK))}
    for row in sorted(analysis.rows, key=lambda r: (r.index, order[r.group])):
        stats = _stats(row)
        lambdas = (analysis.lambda_v_eq13[row.index], analysis.lambda_v_eq16[row.index]) if row.group == BLOCK else ("", "")
        writer.writerow([row.index, row.layer, row.group, *(_cell(stats[f]) for f in STAT_FIELDS), *lambdas])
    return stream.getvalue()


def write_analysis(analysis: TaskVectorAnalysis, out: Path) -> list[Path]:
    """analysis.json, analysis.csv, fig3_cosine.png, norms.png under ``out`` (created if missing)."""
    from frankmerge.analysis.plots import cosine_png, norms_png

    rendered = {
        "analysis.json": (json.dumps(analysis_json(analysis), indent=2, ensure_ascii=False) + "\n").encode(),
        "analysis.csv": analysis_csv(analysis).encode(),
        "fig3_cosine.png": cosine_png(analysis),
        "norms.png": norms_png(analysis),
    }
    out.mkdir(parents=True, exist_ok=True)
    files = {out / name: data for name, data in rendered.items()}
    commit_files(files)
    return list(files)


def _stats(row: GroupStats) -> dict[str, Any]:
    data = asdict(row)
    return {k: data[k] for k in STAT_FIELDS}


def _cell(value: float | int) -> str:
    return repr(value) if isinstance(value, float) else str(value)

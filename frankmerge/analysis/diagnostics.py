"""Plain-language warnings when the task-vector statistics contradict FRANK's assumptions.

The thresholds are heuristics, stated here and in docs/profiling.md, and every warning quotes
the numbers behind it so that a user can judge the margin for their own pair of models.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from frankmerge.analysis.taskvectors import TaskVectorAnalysis

# |cos(τ_V, τ_R)| above this in a block: the near-orthogonality of the paper's Fig. 3 fails there.
COS_WARN = 0.2
# λ_V under Eq. 16 below this in every block: the merge is the reasoner's decoder in all but name.
LAMBDA_V_WARN = 0.1
# ‖θ_V − θ_R‖ / ‖θ_0‖ above this in the median block, or cos(θ_V, θ_R) below COS_THETA_WARN in any
# block: the two fine-tunes sit far apart, as DRIFT found for Qwen-family pairs.
DISTANCE_WARN = 0.1
COS_THETA_WARN = 0.95
# ‖τ‖ / ‖θ_0‖ above this in the median block: the first-order (Taylor/NTK) argument behind Eq. 13–15
# is stretched.
REL_NORM_WARN = 0.1
MAX_LISTED = 6


@dataclass(frozen=True)
class Diagnosis:
    code: str
    message: str


def diagnose(analysis: TaskVectorAnalysis) -> list[Diagnosis]:
    return [w for w in (_correlated(analysis), _reasoner_dominates(analysis), _far_apart(analysis)) if w is not None]


def _blocks_text(layers: list[int]) -> str:
    shown = ", ".join(str(l) for l in layers[:MAX_LISTED])
    return shown + (f" and {len(layers) - MAX_LISTED} more" if len(layers) > MAX_LISTED else "")


def _correlated(analysis: TaskVectorAnalysis) -> Diagnosis | None:
    bad = [b for b in analysis.blocks if abs(b.cos_vr) > COS_WARN]
    if not bad:
        return None
    worst = max(bad, key=lambda b: abs(b.cos_vr))
    return Diagnosis(
        "correlated_task_vectors",
        f"In {len(bad)} of {analysis.num_blocks} blocks (layers {_blocks_text([b.layer for b in bad])}) the VLM's and the "
        f"reasoner's changes to the base model point in related directions (|cos(τ_V, τ_R)| > {COS_WARN}; "
        f"up to {worst.cos_vr:+.2f} in layer {worst.layer}). FRANK derives its coefficients assuming they are nearly "
        "orthogonal (cosine ≈ 0, the paper's Fig. 3): the coefficients are still the same, but in these blocks they "
        "may predict the merged model's loss poorly, so check the merge on your tasks.",
    )


def _reasoner_dominates(analysis: TaskVectorAnalysis) -> Diagnosis | None:
    if not analysis.lambda_v_eq16 or max(analysis.lambda_v_eq16) >= LAMBDA_V_WARN:
        return None
    ratios = [b.norm_v**2 / b.norm_r**2 for b in analysis.blocks if b.norm_r > 0]
    median = statistics.median(ratios) if ratios else float("nan")
    return Diagnosis(
        "reasoner_dominates_eq16",
        f"With the paper's Eq. 16 prior (α = {analysis.alpha:g}, {analysis.alpha_source}) the VLM would get at most "
        f"λ_V = {max(analysis.lambda_v_eq16):.3f} in any block: Eq. 16 normalises w_V over all "
        f"{analysis.num_blocks} layers, so each w_V is about 1/{analysis.num_blocks}, and the VLM's changes are "
        f"{median:.3g}× the size of the reasoner's (median ‖τ_V‖²/‖τ_R‖²). The merged decoder would be almost "
        "exactly the reasoner's and lose what the VLM learnt about images. Consider --no-prior (Eq. 13) or a prior "
        "on the scale of the attention ratio (--prior fitted / relative / minmax, see docs/profiling.md).",
    )


def _far_apart(analysis: TaskVectorAnalysis) -> Diagnosis | None:
    blocks = analysis.blocks
    median_dist = statistics.median(b.rel_dist_vr for b in blocks)
    min_cos = min(b.cos_theta_vr for b in blocks)
    median_rel = statistics.median(max(b.rel_norm_v, b.rel_norm_r) for b in blocks)
    if median_dist <= DISTANCE_WARN and min_cos >= COS_THETA_WARN and median_rel <= REL_NORM_WARN:
        return None
    return Diagnosis(
        "far_apart_in_parameter_space",
        f"The VLM's and the reasoner's decoders are far apart in parameter space: in the median block "
        f"‖θ_V − θ_R‖ is {median_dist:.1%} of ‖θ_0‖ and the larger task vector {median_rel:.1%} of it; "
        f"cos(θ_V, θ_R) goes down to {min_cos:.3f}. DRIFT (arXiv 2510.15050) found this for Qwen-family pairs, where "
        "every weight-space merge scored below the VLM itself. FRANK's derivation is a first-order expansion around "
        "the base model and assumes small task vectors; expect interference, evaluate the merge before using it, "
        "or transfer the reasoning in gradient space instead (DRIFT).",
    )

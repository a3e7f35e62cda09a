"""PNG plots of the profile (a_l with its fitted decay) and of the task-vector analysis.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas, never pyplot, so plotting
touches no global backend state and works headless; each function returns the PNG bytes.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from frankmerge.analysis.profile_report import Profile
    from frankmerge.analysis.taskvectors import TaskVectorAnalysis

GROUP_STYLE = {"attention": "tab:blue", "mlp": "tab:orange", "norms": "tab:green", "other": "tab:gray"}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def profile_png(profile: Profile) -> bytes:
    """a_l per layer (mean, 5–95 % band over images) with Ĉ e^{−α̂ l}; and ln a_l with the fitted line."""
    layers = np.arange(1, profile.num_layers + 1)
    per_image = profile.per_image
    mean = per_image.mean(axis=0)
    low, high = np.percentile(per_image, [5, 95], axis=0)
    fine = np.linspace(1, profile.num_layers, 200)
    fit = profile.fit
    r2 = "n/a" if fit.r2 is None else f"{fit.r2:.3f}"
    figure = Figure(figsize=(11, 4.2))
    figure.subplots_adjust(wspace=0.3)
    ratio, logs = figure.subplots(1, 2)
    ratio.fill_between(layers, low, high, color="tab:blue", alpha=0.2, label="5–95 % over images")
    ratio.plot(layers, mean, "o-", color="tab:blue", ms=3, label="mean a_l")
    ratio.plot(fine, fit.curve(fine), "--", color="tab:red", label=f"Ĉ e^(−α̂ l): α̂ = {fit.alpha:.4g}, Ĉ = {fit.C:.3g}")
    ratio.set_ylim(bottom=0)
    ratio.set_ylabel("visual-attention ratio a_l")
    ratio.set_title(f"{profile.model.model_type}: {len(profile.images)} images, query = {profile.options.query}")
    ratio.legend(fontsize=8)
    logs.plot(layers, np.log(mean), "o", color="tab:blue", ms=4, label="ln(mean a_l)")
    logs.plot(fine, np.log(fit.C) - fit.alpha * fine, "--", color="tab:red", label=f"ln Ĉ − α̂ l (R² = {r2})")
    logs.set_ylabel("ln a_l")
    logs.set_title("the least-squares fit (Eq. 41–44)")
    logs.legend(fontsize=8)
    for axis in (ratio, logs):
        axis.set_xlabel("decoder layer l")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    return _png(figure)


def cosine_png(analysis: TaskVectorAnalysis) -> bytes:
    """The paper's Fig. 3: cos(τ_V, τ_R) per block, whole block and per module type."""
    figure = Figure(figsize=(9, 4))
    axis = figure.subplots()
    blocks = analysis.blocks
    layers = np.array([b.layer for b in blocks])
    axis.bar(layers, [b.cos_vr for b in blocks], color="lightgray", label="whole block")
    for group, color in GROUP_STYLE.items():
        rows = analysis.group_rows(group)
        if rows:
            axis.plot([r.layer for r in rows], [r.cos_vr for r in rows], ".-", color=color, label=group)
    values = [abs(r.cos_vr) for r in analysis.rows if np.isfinite(r.cos_vr)]
    limit = max(0.1, 1.15 * max(values, default=0.0))
    axis.set_ylim(-min(limit, 1.0), min(limit, 1.0))
    axis.axhline(0, color="black", lw=0.8)
    axis.set_xlabel("decoder block l")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("cos(τ_V, τ_R)")
    axis.set_title("Cosine similarity of the VLM's and the reasoner's task vectors per block")
    axis.legend(fontsize=8, ncol=5)
    axis.grid(alpha=0.3)
    return _png(figure)


def norms_png(analysis: TaskVectorAnalysis) -> bytes:
    """‖τ_V‖, ‖τ_R‖ and ‖θ_V − θ_R‖ per block, absolute and relative to ‖θ_0‖."""
    blocks = analysis.blocks
    layers = [b.layer for b in blocks]
    figure = Figure(figsize=(11, 4.2))
    absolute, relative = figure.subplots(1, 2)
    for axis, attrs, title in (
        (absolute, ("norm_v", "norm_r", "dist_vr"), "norms"),
        (relative, ("rel_norm_v", "rel_norm_r", "rel_dist_vr"), "relative to ‖θ_0‖"),
    ):
        for attr, label, color in zip(attrs, ("‖τ_V‖", "‖τ_R‖", "‖θ_V − θ_R‖"), ("tab:blue", "tab:red", "tab:gray"), strict=True):
            axis.plot(layers, [getattr(b, attr) for b in blocks], "o-", ms=3, color=color, label=label)
        axis.set_xlabel("decoder block l")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    lam = figure.axes[1].twinx()
    lam.plot(layers, analysis.lambda_v_eq13, ":", color="tab:purple", label="λ_V Eq. 13")
    lam.plot(layers, analysis.lambda_v_eq16, "--", color="tab:purple", label=f"λ_V Eq. 16 (α={analysis.alpha:g})")
    lam.set_ylim(0, 1)
    lam.set_ylabel("λ_V")
    lam.legend(fontsize=8, loc="lower right")
    return _png(figure)

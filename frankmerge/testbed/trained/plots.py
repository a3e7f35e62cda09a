"""The demo's own figures: per-block coefficients of every merge and the λ_V × λ_R accuracy maps.

(The attention profile and the task-vector cosines / norms are drawn by ``frankmerge.analysis``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from frankmerge.testbed.trained.study import GridCell, MergeOutcome  # noqa: E402

TASK_TITLES = {"perception": "perception", "text_reasoning": "text reasoning", "visual_reasoning": "visual reasoning"}


def coefficients_png(outcomes: Sequence[MergeOutcome], out: Path) -> Path:
    """λ_V per block for every merge with per-block coefficients (λ_R = 1 − λ_V for FRANK)."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for outcome in outcomes:
        if not outcome.lambda_v:
            continue
        style = "-o" if outcome.spec.group == "frank" else "--."
        layers = np.arange(1, len(outcome.lambda_v) + 1)
        ax.plot(layers, outcome.lambda_v, style, label=outcome.spec.name, markersize=4, linewidth=1.2)
    ax.set_xlabel("block l")
    ax.set_ylabel("λ_V (weight of the VLM's task vector)")
    ax.set_title("Per-block merge coefficients")
    ax.set_ylim(-0.05, 1.65)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def lambda_map_png(cells: Sequence[GridCell], tasks: Sequence[str], out: Path, chance: dict[str, float] | None = None) -> Path:
    """One heat map per task: free-generation accuracy of task arithmetic at each (λ_V, λ_R)."""
    values_v = sorted({c.lambda_v for c in cells})
    values_r = sorted({c.lambda_r for c in cells})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), dpi=110, squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        grid = np.full((len(values_r), len(values_v)), np.nan)
        for cell in cells:
            accuracy = cell.evaluation.accuracy(task)
            if accuracy is not None:
                grid[values_r.index(cell.lambda_r), values_v.index(cell.lambda_v)] = accuracy
        image = ax.imshow(grid, origin="lower", vmin=0, vmax=1, cmap="viridis")
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w" if value < 0.6 else "k")
        ax.set_xticks(range(len(values_v)), [f"{v:g}" for v in values_v])
        ax.set_yticks(range(len(values_r)), [f"{v:g}" for v in values_r])
        ax.set_xlabel("λ_V")
        ax.set_ylabel("λ_R")
        title = TASK_TITLES.get(task, task)
        if chance and task in chance:
            title += f" (chance {chance[task]:.2f})"
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle("Task arithmetic θ_0 + λ_V τ_V + λ_R τ_R: accuracy")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out

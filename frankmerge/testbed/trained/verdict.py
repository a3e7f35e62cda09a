"""The testbed's criteria (docs/testbed.md, "Testbed v2"), applied to one run's evaluations.

Kept apart from the demo so that the three-seed summary (``benchmarks/testbed_summary.py``) and the
demo's closing lines apply the same definitions: the necessary condition, which merges transfer,
and how the fine-tunes compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PERCEPTION_TOLERANCE = 0.10
VISUAL = ("visual_reasoning", "visual_reasoning_think")
MERGE_GROUPS = ("frank", "baseline")
FINE_TUNE_GROUPS = ("sft", "drift")


@dataclass(frozen=True)
class Score:
    """Free-generation accuracy of one model on one task, with its 95 % interval."""

    accuracy: float
    low: float
    high: float


Scores = Mapping[str, Mapping[str, Score]]  # model name -> task -> score


@dataclass(frozen=True)
class Model:
    name: str
    group: str
    scores: Mapping[str, Score]

    def visual(self) -> tuple[str, Score] | None:
        """The better of the model's two visual-reasoning prompts (plain, and answer opened by <think>)."""
        present = [(task, self.scores[task]) for task in VISUAL if task in self.scores]
        return max(present, key=lambda item: item[1].accuracy) if present else None


def transfers(model: Model, vlm: Model, chance: Mapping[str, float]) -> bool:
    """The transfer criterion: visual reasoning's interval above chance on the prompt where it is
    best, perception within 0.10 of the VLM's, and better than the VLM's own best prompt."""
    mine, theirs = model.visual(), vlm.visual()
    if mine is None or theirs is None or "perception" not in model.scores:
        return False
    task, score = mine
    kept = model.scores["perception"].accuracy >= vlm.scores["perception"].accuracy - PERCEPTION_TOLERANCE
    return score.low > chance[task] and kept and score.accuracy > theirs[1].accuracy


def necessary_condition(unmerged: Model, chance: Mapping[str, float]) -> bool:
    """The reasoner's decoder under the VLM's tower reads the scene: its visual reasoning is above chance."""
    best = unmerged.visual()
    return best is not None and best[1].low > chance[best[0]]


def verdict_lines(models: Sequence[Model], chance: Mapping[str, float], regime: str, train_items: int = 300) -> list[str]:
    """Three lines a newcomer can read without the table: can the reasoner see, does merging
    transfer, do the fine-tunes (SFT, DRIFT) beat it. One run's evidence; three seeds decide."""
    by_name = {m.name: m for m in models}
    vlm = by_name["vlm"]
    vlm_best = vlm.visual()
    assert vlm_best is not None
    lines = []
    unmerged = by_name.get("reasoner_in_vlm")
    if unmerged is not None and unmerged.visual() is not None:
        task, score = unmerged.visual()  # type: ignore[misc]
        ok = necessary_condition(unmerged, chance)
        lines.append(
            f"1. [{regime}] The reasoner's decoder under the VLM's vision tower "
            + ("can" if ok else "cannot")
            + f" reason about images: {score.accuracy:.2f} on visual reasoning"
            + f" (95% CI {score.low:.2f}-{score.high:.2f}, chance {chance[task]:.2f})"
            + ("." if ok else ", so no merge of this pair can be expected to transfer.")
        )
    merges = [m for m in models if m.group in MERGE_GROUPS and m.visual() is not None]
    winners = sorted((m for m in merges if transfers(m, vlm, chance)), key=lambda m: -m.visual()[1].accuracy)  # type: ignore[index]
    vlm_text = f"the VLM itself {vlm_best[1].accuracy:.2f}"
    if winners:
        best = winners[0]
        lines.append(
            f"2. Merging transfers reasoning: {len(winners)} of {len(merges)} merges pass the criterion; best "
            f"{best.name} {best.visual()[1].accuracy:.2f} on visual reasoning ({vlm_text}, chance "  # type: ignore[index]
            f"{chance['visual_reasoning']:.2f}), perception {best.scores['perception'].accuracy:.2f}."
        )
    elif merges:
        top = max(merges, key=lambda m: m.visual()[1].accuracy)  # type: ignore[index]
        lines.append(
            f"2. No merge transfers reasoning: the best, {top.name}, scores {top.visual()[1].accuracy:.2f} on visual "  # type: ignore[index]
            f"reasoning ({vlm_text}, chance {chance['visual_reasoning']:.2f})."
        )
    tunes = [m for m in models if m.group in FINE_TUNE_GROUPS and m.visual() is not None]
    if tunes:
        sft = by_name.get("sft")
        drifts = [m for m in tunes if m.group == "drift"]
        parts = [f"{m.name} {m.visual()[1].accuracy:.2f}" for m in tunes]  # type: ignore[index]
        best_drift = max(drifts, key=lambda m: m.visual()[1].accuracy) if drifts else None  # type: ignore[index]
        best_merge = max(merges, key=lambda m: m.visual()[1].accuracy) if merges else None  # type: ignore[index]
        summary = f"3. Fine-tuning on {train_items} visual chains of thought: " + ", ".join(parts) + "."
        if sft is not None and best_drift is not None:
            gap = best_drift.visual()[1].accuracy - sft.visual()[1].accuracy  # type: ignore[index]
            summary += f" Best DRIFT minus SFT: {gap:+.2f}"
            if best_merge is not None:
                summary += f"; minus the best merge: {best_drift.visual()[1].accuracy - best_merge.visual()[1].accuracy:+.2f}"  # type: ignore[index]
            summary += " (one seed; docs/testbed.md has three)."
        lines.append(summary)
    return lines

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


def best_visual(model: Model) -> float:
    """Accuracy on the better of the two visual-reasoning prompts (NaN for a model without them)."""
    best = model.visual()
    return best[1].accuracy if best else float("nan")


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
    winners = sorted((m for m in merges if transfers(m, vlm, chance)), key=lambda m: -best_visual(m))
    vlm_text = f"the VLM itself {vlm_best[1].accuracy:.2f}"
    if winners:
        best = winners[0]
        lines.append(
            f"2. Merging transfers reasoning: {len(winners)} of {len(merges)} merges pass the criterion; best "
            f"{best.name} {best_visual(best):.2f} on visual reasoning ({vlm_text}, chance "
            f"{chance['visual_reasoning']:.2f}), perception {best.scores['perception'].accuracy:.2f}."
        )
    elif merges:
        top = max(merges, key=best_visual)
        lines.append(
            f"2. No merge transfers reasoning: the best, {top.name}, scores {best_visual(top):.2f} on visual "
            f"reasoning ({vlm_text}, chance {chance['visual_reasoning']:.2f})."
        )
    tunes = [m for m in models if m.group in FINE_TUNE_GROUPS and m.visual() is not None]
    if tunes:
        sft = by_name.get("sft")
        drifts = [m for m in tunes if m.group == "drift"]
        parts = [f"{m.name} {best_visual(m):.2f}" for m in tunes]
        best_drift = max(drifts, key=best_visual) if drifts else None
        best_merge = max(merges, key=best_visual) if merges else None
        summary = f"3. Fine-tuning on {train_items} visual chains of thought: " + ", ".join(parts) + "."
        if sft is not None and best_drift is not None:
            gap = best_visual(best_drift) - best_visual(sft)
            summary += f" Best DRIFT minus SFT: {gap:+.2f}"
            if best_merge is not None:
                summary += f"; minus the best merge: {best_visual(best_drift) - best_visual(best_merge):+.2f}"
            summary += " (one seed; docs/testbed.md has three)."
        lines.append(summary)
    return lines


def models_from_json(evaluations: Sequence[Mapping[str, object]]) -> list[Model]:
    """``Model``s from the ``evaluations`` list of a ``demo_results.json``."""
    models = []
    for entry in evaluations:
        tasks: Mapping[str, Mapping[str, object]] = entry["tasks"]  # type: ignore[assignment]
        scores = {task: Score(float(r["accuracy"]), *map(float, r["ci95"])) for task, r in tasks.items()}  # type: ignore[arg-type]
        models.append(Model(str(entry["name"]), str(entry["group"]), scores))
    return models


# Two-sided 95 % Student t quantiles by degrees of freedom (n seeds - 1).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class Paired:
    """Mean of per-seed differences with its 95 % t interval (None with fewer than two seeds)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def text(self) -> str:
        interval = "" if self.low is None else f" [{self.low:+.2f}, {self.high:+.2f}]"
        return f"{self.mean:+.2f}{interval}"


def paired(differences: Sequence[float]) -> Paired:
    n = len(differences)
    mean = sum(differences) / n
    if n < 2:
        return Paired(mean, None, None, n)
    sd = (sum((d - mean) ** 2 for d in differences) / (n - 1)) ** 0.5
    half = T95.get(n - 1, 1.96) * sd / n**0.5
    return Paired(mean, mean - half, mean + half, n)


def across_seeds(runs: Sequence[Sequence[Model]], chance: Mapping[str, float], regime: str) -> list[str]:
    """The regime's verdict over seeds, by the criteria fixed in docs/testbed.md: how often the
    necessary condition holds, which merges transfer in at least 2 of 3 seeds (the winner is the best
    mean among them), and DRIFT against SFT and against the best merge (paired t intervals)."""
    n = len(runs)
    by_seed = [{m.name: m for m in models} for models in runs]
    held = sum(necessary_condition(s["reasoner_in_vlm"], chance) for s in by_seed if "reasoner_in_vlm" in s)
    lines = [f"[{regime}] necessary condition (reasoner under the VLM's tower above chance): {held} of {n} seeds"]
    merge_names = [m.name for m in runs[0] if m.group in MERGE_GROUPS]
    counts = {name: sum(transfers(s[name], s["vlm"], chance) for s in by_seed if name in s) for name in merge_names}
    needed = 2 if n >= 3 else n
    passing = [name for name, count in counts.items() if count >= needed]
    mean_visual = {name: sum(best_visual(s[name]) for s in by_seed) / n for name in merge_names}
    if passing:
        winner = max(passing, key=lambda name: mean_visual[name])
        lines.append(
            f"[{regime}] merging transfers: {', '.join(f'{p} ({counts[p]}/{n})' for p in passing)}; "
            f"winner {winner} (mean visual reasoning {mean_visual[winner]:.2f})"
        )
    else:
        top = max(merge_names, key=lambda name: mean_visual[name]) if merge_names else None
        best = f"; best mean {top} {mean_visual[top]:.2f}" if top else ""
        lines.append(f"[{regime}] merging does not transfer (no merge passes in {needed} of {n} seeds){best}")
    if all("sft" in s for s in by_seed):
        for name in [m.name for m in runs[0] if m.group == "drift"]:
            vs_sft = paired([best_visual(s[name]) - best_visual(s["sft"]) for s in by_seed])
            vs_merge = paired(
                [best_visual(s[name]) - max(best_visual(s[m]) for m in merge_names) for s in by_seed] if merge_names else [0.0]
            )
            sft_verdict = "beats SFT" if vs_sft.excludes_zero and vs_sft.mean > 0 else "does not beat SFT"
            merge_verdict = "beats" if vs_merge.excludes_zero and vs_merge.mean > 0 else "does not beat"
            lines.append(
                f"[{regime}] {name} − sft: {vs_sft.text()} ({sft_verdict}); "
                f"− best merge: {vs_merge.text()} ({merge_verdict} merging)"
            )
    return lines

"""The demo's results table and chance levels, as plain text for the terminal and the docs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from frankmerge.testbed.trained.evaluate import ModelEvaluation
from frankmerge.testbed.trained.tasks import EVAL_TASKS, THINK_OPENED_TASKS, eval_set

TF_KINDS: tuple[str, ...] = ("count", "operand", "arithmetic", "format", "answer")


@dataclass(frozen=True)
class Row:
    name: str
    group: str  # parent | control | frank | baseline | sft | drift
    evaluation: ModelEvaluation


def chance_levels(n_items: int, image_scale: int = 1) -> dict[str, float]:
    """Accuracy of always giving the most frequent number of each evaluation set (for perception,
    after echoing the asked colour correctly: "red" + the most frequent count), with the visual
    tasks' items as drawn at ``image_scale``."""
    levels = {}
    for task in (*EVAL_TASKS, *THINK_OPENED_TASKS):
        answers = Counter(e.answer.split()[-1] for e in eval_set(task, n_items, image_scale=image_scale))
        levels[task] = answers.most_common(1)[0][1] / n_items
    return levels


def _cell(evaluation: ModelEvaluation, task: str, with_ci: bool = True) -> str:
    result = evaluation.tasks.get(task)
    if result is None:
        return "–"
    g = result.generation
    return f"{g.accuracy:.2f} [{g.ci95[0]:.2f},{g.ci95[1]:.2f}]" if with_ci else f"{g.accuracy:.2f}"


def results_table(rows: Sequence[Row], chance: dict[str, float]) -> str:
    """Free-generation accuracy (95% Wilson interval) on each task, think-block shape and teacher-forced
    accuracy by token kind on visual reasoning (text reasoning for text-only models)."""
    header = (
        f"{'model':22} {'group':9} {'perception':17} {'text reasoning':17} {'visual reasoning':17} {'visual, <think>':17} "
        f"{'think ok':>8} {'tokens':>6} | teacher-forced " + " ".join(f"{k[:5]:>5}" for k in TF_KINDS)
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        e = row.evaluation
        task = "visual_reasoning" if "visual_reasoning" in e.tasks else "text_reasoning"
        result = e.tasks.get(task)
        think = f"{result.generation.well_formed_think:.2f}" if result else "–"
        tokens = f"{result.generation.mean_tokens:.1f}" if result else "–"
        forced = " ".join(f"{result.teacher_forced.get(k, float('nan')):5.2f}" for k in TF_KINDS) if result else ""
        marker = "" if task == "visual_reasoning" else " (text)"
        lines.append(
            f"{row.name:22} {row.group:9} {_cell(e, 'perception'):17} {_cell(e, 'text_reasoning'):17} "
            f"{_cell(e, 'visual_reasoning'):17} {_cell(e, 'visual_reasoning_think'):17} "
            f"{think:>8} {tokens:>6} | {'':14} {forced}{marker}"
        )
    lines.append(
        "chance (most frequent count / result): "
        + ", ".join(f"{task.replace('_', ' ')} {level:.2f}" for task, level in chance.items())
        + ".  think ok / tokens / teacher-forced: on visual reasoning, or text reasoning (text) for text-only models."
    )
    return "\n".join(lines)

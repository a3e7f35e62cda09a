"""Which skills does a testbed base lack when its pretraining loss ends high? Per-task loss, no training.

    python benchmarks/testbed_base_skills.py --runs v2:0 v2:1 v2:2 v2:3 v2:4 prefix:1 prefix:2

For each cached base (case and seed as in testbed_align_probe.py), the LM loss on fresh examples of
each pretraining task (the BASE_TASKS mixture and the 5 % of text problems with their chain of
thought), the same examples for every base, and its pretraining loss curve from the cache. A
diagnosis for docs/testbed.md ("Alignment probe 3": the bases set the floor), not a criterion.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from testbed_align_probe import CASES, _case_seed

from frankmerge.testbed.trained.build import default_cache_dir, stage_paths
from frankmerge.testbed.trained.encode import Encoder
from frankmerge.testbed.trained.models import load_model
from frankmerge.testbed.trained.tasks import BASE_TASKS, Example, reasoning

TASKS = {**{name: sampler for name, (_, sampler) in BASE_TASKS.items()}, "cot": lambda rng: reasoning(rng, visual=False)}


def examples(task: str, n: int, seed: int = 777) -> list[Example]:
    """``n`` examples of ``task`` from a seed no training stage uses."""
    rng = np.random.default_rng([seed, list(TASKS).index(task)])
    return [TASKS[task](rng) for _ in range(n)]


def skills(case: str, seed: int, cache_dir: Path, n: int) -> dict[str, object]:
    config = CASES[case].with_seed(seed)
    path = stage_paths(config, cache_dir)["base"]
    if not (path / "config.json").is_file():
        raise SystemExit(f"error: no cached base for {case}:{seed} at {path}; train it with testbed_align_probe.py")
    model = load_model(path).eval()
    encoder = Encoder.with_system(config.system_prompt)
    losses, accuracies, copy_by_length = {}, {}, {}
    with torch.no_grad():
        for task in TASKS:
            drawn = examples(task, n)
            batch = encoder.batch(drawn)
            out = model(**batch.model_inputs(), labels=batch.labels)
            losses[task] = round(float(out.loss), 4)
            correct = _answers_correct(out.logits, batch.labels)
            accuracies[task] = round(float(np.mean(correct)), 4)
            if task == "copy":  # exact copies by the number of words to copy
                for length in sorted({len(e.target) for e in drawn}):
                    hits = [c for e, c in zip(drawn, correct, strict=True) if len(e.target) == length]
                    copy_by_length[length] = round(float(np.mean(hits)), 3)
    log = json.loads((path / "testbed_stage.json").read_text())["log"]
    return {
        "case": case,
        "seed": seed,
        "task_losses": losses,
        "answer_exact": accuracies,  # teacher-forced: every answer token predicted
        "copy_exact_by_length": copy_by_length,
        "pretraining_losses": log["losses"],
    }


def _answers_correct(logits: torch.Tensor, labels: torch.Tensor) -> list[bool]:
    """Per example: every supervised token is the greedy prediction (teacher forcing)."""
    predicted, gold = logits[:, :-1].argmax(-1), labels[:, 1:]
    supervised = gold != -100
    return [bool(((predicted[i] == gold[i]) | ~supervised[i]).all()) for i in range(len(gold))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=_case_seed, default=[("v2", s) for s in range(5)], metavar="CASE:SEED")
    parser.add_argument("--examples", type=int, default=256, help="examples per task")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [skills(case, seed, args.cache_dir, args.examples) for case, seed in args.runs]
    print("loss / answers exactly right (teacher-forced) per pretraining task")
    print(f"{'base':10} {'pretrain@1200':>13} " + " ".join(f"{t:>13}" for t in TASKS))
    for row in rows:
        final = row["pretraining_losses"][-1][1]  # type: ignore[index]
        cells = " ".join(f"{row['task_losses'][t]:>6.3f}/{row['answer_exact'][t]:<6.2f}" for t in TASKS)  # type: ignore[index]
        print(f"{row['case']}:{row['seed']:<7} {final:>13.3f} {cells}")
    print("copy: answers exactly right by the number of words to copy")
    for row in rows:
        cells = " ".join(f"{k}: {v:.2f}" for k, v in row["copy_exact_by_length"].items())  # type: ignore[union-attr]
        print(f"{row['case']}:{row['seed']:<7} {cells}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

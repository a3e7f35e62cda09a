"""Markdown tables of `frankmerge demo` results across seeds (the tables in docs/testbed.md).

    python benchmarks/testbed_summary.py demo-s0/demo_results.json demo-s1/demo_results.json ...
    python benchmarks/testbed_summary.py --regimes benchmarks/results/testbed_regimes_*.json

For each model: free-generation accuracy per task as the mean over seeds with each seed's value, and
the teacher-forced next-token accuracy on visual reasoning by token kind (mean over seeds); then the
attention profile, the task-vector statistics, the best cell of the λ grid per seed and the regime's
verdict by the criteria of docs/testbed.md ("Testbed v2"; ``frankmerge.testbed.trained.verdict``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from frankmerge.testbed.trained.verdict import across_seeds, models_from_json

TASKS = ("perception", "text_reasoning", "visual_reasoning", "visual_reasoning_think")
KINDS = ("count", "operand", "arithmetic", "format", "answer")


def _cell(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    seeds = "/".join(f"{v:.2f}" for v in present)
    return f"{statistics.fmean(present):.2f} ({seeds})" if len(present) > 1 else seeds


def model_table(runs: list[dict]) -> str:
    names = [e["name"] for e in runs[0]["evaluations"]]
    groups = {e["name"]: e["group"] for e in runs[0]["evaluations"]}
    lines = [
        "| model | group | perception | text reasoning | visual reasoning | visual, `<think>` | "
        + " | ".join(f"tf {k}" for k in KINDS)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(KINDS),
    ]
    for name in names:
        per_seed = [next((e for e in r["evaluations"] if e["name"] == name), None) for r in runs]
        accuracy = [[(e["tasks"].get(t) or {}).get("accuracy") if e else None for e in per_seed] for t in TASKS]
        forced_task = "visual_reasoning" if "visual_reasoning" in per_seed[0]["tasks"] else "text_reasoning"
        forced = [
            [(e["tasks"].get(forced_task) or {}).get("teacher_forced", {}).get(k) if e else None for e in per_seed] for k in KINDS
        ]
        means = [_cell(a) for a in accuracy]
        kinds = [
            f"{statistics.fmean([v for v in f if v is not None]):.2f}" if any(v is not None for v in f) else "–" for f in forced
        ]
        label = name + (" (tf: text)" if forced_task == "text_reasoning" else "")
        lines.append(f"| {label} | {groups[name]} | " + " | ".join(means) + " | " + " | ".join(kinds) + " |")
    return "\n".join(lines)


def profile_lines(runs: list[dict]) -> str:
    lines = ["| seed | a_l, l = 1..L | uniform attention | α̂ | R² | α̂ 95% CI |", "|---|---|---|---|---|---|"]
    for r in runs:
        p = r["profile"]
        ci = p.get("alpha_ci95") or [None, None]
        lines.append(
            f"| {r['testbed']['config']['seed']} | {' '.join(f'{a:.2f}' for a in p['a_l'])} | {p['uniform_attention_a']:.2f} "
            f"| {p['alpha']:+.3f} | {(p['r2'] or 0):.2f} | [{ci[0]:+.3f}, {ci[1]:+.3f}] |"
        )
    return "\n".join(lines)


def task_vector_lines(runs: list[dict]) -> str:
    lines = ["| seed | cos(τ_V, τ_R) per block | ‖τ_V‖/‖θ_0‖ | ‖τ_R‖/‖θ_0‖ |", "|---|---|---|---|"]
    for r in runs:
        tv = r["task_vectors"]
        cos = " ".join(f"{b['cos']:+.2f}" for b in tv)
        rel_v = " ".join(f"{b['rel_norm_v']:.2f}" for b in tv)
        rel_r = " ".join(f"{b['rel_norm_r']:.2f}" for b in tv)
        lines.append(f"| {r['testbed']['config']['seed']} | {cos} | {rel_v} | {rel_r} |")
    return "\n".join(lines)


def grid_lines(runs: list[dict]) -> str:
    lines = ["| seed | best visual reasoning in the λ_V × λ_R grid (λ_V, λ_R) | chance |", "|---|---|---|"]
    for r in runs:
        cells = r["lambda_grid"]
        best = max(cells, key=lambda c: c["tasks"]["visual_reasoning"]["accuracy"])
        accuracy = best["tasks"]["visual_reasoning"]["accuracy"]
        lines.append(
            f"| {r['testbed']['config']['seed']} | {accuracy:.2f} at ({best['lambda_v']}, {best['lambda_r']}) "
            f"| {r['chance']['visual_reasoning']:.2f} |"
        )
    return "\n".join(lines)


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


def regime_lines(sweeps: list[dict]) -> str:
    """One row per swept value: task-vector sizes, parents, the best merge and what merges keep."""
    lines = [
        "| setting | ‖τ_V‖/‖θ_0‖ | ‖τ_R‖/‖θ_0‖ | cos | reasoner text | VLM perception "
        "| best merge, visual reasoning | merges' text reasoning (max) | merges' perception |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for sweep in sweeps:
        for run in sweep["runs"]:
            tv, models = run["task_vectors"], run["models"]
            merges = {k: v for k, v in models.items() if k not in ("reasoner", "vlm") and "skipped" not in v}
            best = max(merges, key=lambda k: merges[k]["visual_reasoning"]["accuracy"])
            setting = ", ".join(f"{k} = {v}" for k, v in run["setting"].items())
            lines.append(
                f"| {setting} | {_span([b['rel_norm_v'] for b in tv])} | {_span([b['rel_norm_r'] for b in tv])} "
                f"| {_span([b['cos'] for b in tv])} | {models['reasoner']['text_reasoning']['accuracy']:.2f} "
                f"| {models['vlm']['perception']['accuracy']:.2f} "
                f"| {merges[best]['visual_reasoning']['accuracy']:.2f} ({best}) "
                f"| {max(m['text_reasoning']['accuracy'] for m in merges.values()):.2f} "
                f"| {_span([m['perception']['accuracy'] for m in merges.values()])} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="demo_results.json files, one per seed (or sweep JSONs)")
    parser.add_argument("--regimes", action="store_true", help="the files are benchmarks/testbed_regimes.py results")
    args = parser.parse_args()
    data = [json.loads(p.read_text()) for p in args.results]
    if args.regimes:
        print(regime_lines(data))
        return
    print(model_table(data), profile_lines(data), task_vector_lines(data), grid_lines(data), sep="\n\n")
    print()
    print("\n".join(verdict_lines(data)))


def verdict_lines(runs: list[dict]) -> list[str]:
    regime = runs[0].get("options", {}).get("regime", "v1")
    return across_seeds([models_from_json(r["evaluations"]) for r in runs], runs[0]["chance"], regime)


if __name__ == "__main__":
    main()

"""FRANK's premise on the trained testbed: does a variant make the visual-attention profile decay,
and does FRANK's prior then beat `--no-prior`? (issue #14, item 8)

    python benchmarks/testbed_premise.py --variant prefix --seeds 0 1 2 --workdir premise
    python benchmarks/testbed_premise.py --variant prefix --seeds 0 1 2 --workdir premise --summary-only
    python benchmarks/testbed_premise.py --variant patches-v3 --seeds 0 1 2 --workdir premise

Design and criteria: docs/testbed.md, "FRANK's premise". Per seed: the llava regime's testbed with
the variant (every stage retrained; models cached like the demo's), then the demo's pipeline without
the fine-tunes and with a 2×2 λ grid on 50 items. Each seed's results stay in
WORKDIR/VARIANT_sN/demo_results.json; the summary (per-seed profile and FRANK with/without prior,
the verdict lines by the criteria) is printed and written to WORKDIR/VARIANT_summary.json.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from frankmerge.testbed.trained.config import DEFAULT, DEFAULT_V3, TestbedConfig, with_alignment_term

# The default system turn of variant 1 (11 tokens with its <|im_start|> system … <|im_end|>).
SYSTEM_PROMPT: tuple[str, ...] = ("the", "assistant", "describe", "a", "image", "the", "a", "cat")
PREFIX = replace(DEFAULT, name="premise-prefix", system_prompt=SYSTEM_PROMPT)
VARIANTS: dict[str, TestbedConfig] = {
    "prefix": PREFIX,
    # docs/testbed.md, "FRANK's premise on v3": the prefix with the stage-1 embedding term
    "prefix-v3": replace(with_alignment_term(PREFIX), name="premise-prefix-v3"),
    # docs/testbed.md, "FRANK's premise, variant 2": 64 visual tokens, most of them background, on v3
    "patches-v3": replace(DEFAULT_V3, name="premise-patches-v3", image_scale=2),
}
MIN_R2 = 0.5  # the fit must explain the profile for a decay to count


def run_seed(variant: str, seed: int, workdir: Path) -> Path:
    """Build (or reuse) the variant's testbed for ``seed`` and run the demo's pipeline on it."""
    import torch

    from frankmerge.demo import DemoOptions, run_demo

    torch.set_num_threads(1)
    config = VARIANTS[variant].with_seed(seed)
    out = workdir / f"{variant}_s{seed}"
    options = DemoOptions(config=config, drift=None, grid=(0.0, 1.0), grid_items=50, progress=False)
    result = run_demo(out, options)
    print(result.table, *result.summary, *result.verdict, sep="\n", flush=True)
    return out / "demo_results.json"


def decays(profile: Mapping[str, object]) -> bool:
    """The design's criterion: α̂ > 0 with its 95 % interval above zero, and R² ≥ 0.5."""
    low = float(profile["alpha_ci95"][0])  # type: ignore[index]
    return float(profile["alpha"]) > 0 and low > 0 and float(profile["r2"] or 0.0) >= MIN_R2  # type: ignore[arg-type]


def summarize(results: Sequence[Path]) -> dict[str, object]:
    """Per-seed profile, FRANK with and without prior, and the verdict lines."""
    from frankmerge.testbed.trained.verdict import best_visual, models_from_json, necessary_condition, paired, transfers

    seeds, differences = [], []
    for path in results:
        data = json.loads(path.read_text())
        profile, chance = data["profile"], data["chance"]
        models = {m.name: m for m in models_from_json(data["evaluations"])}
        vlm = models["vlm"]
        names = ("vlm", "frank", "frank_no_prior", "reasoner_in_vlm")
        visual = {name: models[name].scores["visual_reasoning"].accuracy for name in names}
        differences.append(visual["frank"] - visual["frank_no_prior"])
        seeds.append(
            {
                "results": str(path),
                "a_l": [round(a, 3) for a in profile["a_l"]],
                "uniform": round(profile["uniform_attention_a"], 3),
                "alpha": round(profile["alpha"], 4),
                "alpha_ci95": [round(x, 4) for x in profile["alpha_ci95"]],
                "r2": round(profile["r2"] or 0.0, 3),
                "decays": decays(profile),
                "perception": {n: models[n].scores["perception"].accuracy for n in ("vlm", "frank", "frank_no_prior")},
                "visual_reasoning": visual,
                "best_visual": {n: round(best_visual(models[n]), 3) for n in ("vlm", "frank", "frank_no_prior")},
                "necessary_condition": necessary_condition(models["reasoner_in_vlm"], chance),
                "transfers": {n: transfers(models[n], vlm, chance) for n in ("frank", "frank_no_prior")},
                "base_text_reasoning": models["base"].scores["text_reasoning"].accuracy,
                "reasoner_text_reasoning": models["reasoner"].scores["text_reasoning"].accuracy,
            }
        )
    decaying = sum(s["decays"] for s in seeds)
    prior = paired(differences)
    necessary = sum(bool(s["necessary_condition"]) for s in seeds)
    lines = [
        f"profile decays in {decaying} of {len(seeds)} seeds "
        f"({'the variant makes it decay' if decaying >= 2 else 'the variant does not make it decay'}; needs 2 of 3)",
        f"frank - frank_no_prior on visual reasoning: {prior.text()} "
        f"({'the prior beats --no-prior' if prior.excludes_zero and prior.mean > 0 else 'the prior does not beat --no-prior'})",
        f"necessary condition (reasoner under the VLM's tower above chance): {necessary} of {len(seeds)} seeds",
    ]
    return {"seeds": seeds, "verdict": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="prefix")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=Path("testbed-premise"))
    parser.add_argument("--summary-only", action="store_true", help="summarize runs already in WORKDIR")
    args = parser.parse_args()
    paths = [args.workdir / f"{args.variant}_s{s}" / "demo_results.json" for s in args.seeds]
    if not args.summary_only:
        paths = [run_seed(args.variant, seed, args.workdir) for seed in args.seeds]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no results at {', '.join(missing)}; run without --summary-only first")
    summary = summarize(paths)
    for seed in summary["seeds"]:  # type: ignore[union-attr]
        print(json.dumps(seed))
    print(*summary["verdict"], sep="\n")  # type: ignore[arg-type]
    (args.workdir / f"{args.variant}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

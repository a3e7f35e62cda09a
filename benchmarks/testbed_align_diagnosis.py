"""The llava regime's testbed with a different alignment (stage-1) length: the diagnosis of seed 1 in
docs/testbed.md ("Diagnosis of seed 1's alignment").

    python benchmarks/testbed_align_diagnosis.py --seed 1 --align-steps 1500 --workdir diag-s1

Runs the demo's pipeline (profile, merges, controls, evaluation, a 2×2 λ grid) without the fine-tunes,
and prints the table and the verdict lines; the models are cached like the demo's.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from frankmerge.demo import DemoOptions, run_demo
from frankmerge.testbed.trained.config import DEFAULT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--align-steps", type=int, default=1500, help="stage-1 steps (the design's: 700)")
    parser.add_argument("--workdir", type=Path, default=Path("testbed-align-diagnosis"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    assert DEFAULT.vlm_align is not None
    config = replace(
        DEFAULT.with_seed(args.seed),
        name=f"align{args.align_steps}",
        vlm_align=replace(DEFAULT.vlm_align, steps=args.align_steps),
    )
    result = run_demo(args.workdir, DemoOptions(config=config, drift=None, grid=(0.0, 1.0), grid_items=50, progress=False))
    print(result.table, *result.summary, *result.verdict, sep="\n")


if __name__ == "__main__":
    main()

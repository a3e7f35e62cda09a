"""Can a testbed base read a scene as long as a 64-token image? Its loss on stage-1 data as text, 16 vs 64 words.

    python benchmarks/testbed_scene_length.py --seeds 0 1 2

A diagnosis of FRANK's premise, variant 2 (docs/testbed.md): each stage-1 example (captions and
perception dialogues) with its image replaced by the words the alignment term aims the image tokens
at, in patch order — the 16 scene words at ``image_scale`` 1, the 64 patch words (mostly ``_``) at
``image_scale`` 2 — scored by the frozen cached v3 base of each seed. No training; the bases must be
cached (``frankmerge demo --seed N`` builds them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from testbed_align_probe import text_form_loss

from frankmerge.testbed.trained.build import default_cache_dir, stage_paths
from frankmerge.testbed.trained.config import DEFAULT_V3
from frankmerge.testbed.trained.encode import Encoder
from frankmerge.testbed.trained.models import load_model

SCALES = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        path = stage_paths(DEFAULT_V3.with_seed(seed), args.cache_dir)["base"]
        if not (path / "config.json").is_file():
            raise SystemExit(f"error: no cached base for seed {seed} at {path}; run `frankmerge demo --seed {seed}` first")
        base = load_model(path)
        losses = {f"{16 * scale * scale} words": round(text_form_loss(base, Encoder(), scale), 4) for scale in SCALES}
        rows.append({"seed": seed, "text_form_loss": losses})
        print(f"seed {seed}: base's loss on stage-1 data as text, " + ", ".join(f"{k} {v}" for k, v in losses.items()))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Run under ``torchrun --nproc_per_node 2``: ``drift-train --fsdp --timing step`` once per variant.

One launch for the three variants (interpreter start-up and imports dominate on a small CPU
machine); each run goes through the command line exactly as ``torchrun -m frankmerge.cli`` would.
argv: OUT_ROOT followed by the common drift-train arguments.
"""

from __future__ import annotations

import sys

from frankmerge.cli import main
from frankmerge.drift.guidance import VARIANTS

if __name__ == "__main__":
    root, common = sys.argv[1], sys.argv[2:]
    for variant in VARIANTS:
        main(["drift-train", *common, "--fsdp", "--variant", variant, "--out", f"{root}/{variant}"], standalone_mode=False)

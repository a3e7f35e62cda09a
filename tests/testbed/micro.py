"""A testbed of a few steps per stage: what the build, cache and worker tests need, in seconds."""

from __future__ import annotations

from dataclasses import replace

from frankmerge.testbed.trained.config import QUICK, Stage

MICRO = replace(
    QUICK,
    name="micro",
    base=Stage(steps=6, lr=3e-3, warmup=2, batch=8, cot_mix=0.05),
    reasoner=Stage(steps=4, lr=1e-3, warmup=2, batch=8, text_mix=0.2),
    vlm_align=Stage(steps=4, lr=3e-3, warmup=2, batch=8, freeze_language_model=True),
    vlm=Stage(steps=4, lr=3e-4, warmup=2, batch=8, text_mix=0.2),
)

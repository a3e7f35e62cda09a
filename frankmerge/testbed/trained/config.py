"""What determines a trained testbed: model sizes and the three training stages, hashed into cache keys.

Everything that changes the weights is in ``TestbedConfig``; evaluation sizes are not, so a
different evaluation reuses the cached models. Keys are per stage: the base's covers the sizes, the
seed and the base stage; a fine-tune's adds its own stage, so a sweep over fine-tuning settings
trains the base once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

# Bump when the data, tokenizer or training code changes in a way that changes the weights.
FORMAT_VERSION = 4


@dataclass(frozen=True)
class ModelSize:
    """Text decoder (shared by all three roles) and the VLM's vision tower."""

    hidden: int = 128
    layers: int = 6
    intermediate: int = 256
    heads: int = 4
    kv_heads: int = 4
    vision_hidden: int = 64
    vision_layers: int = 1
    vision_intermediate: int = 128
    vision_heads: int = 2


@dataclass(frozen=True)
class Stage:
    """One training run: AdamW with linear warm-up and cosine decay; ``text_mix`` = share of base text tasks."""

    steps: int
    lr: float
    batch: int = 32
    warmup: int = 30
    weight_decay: float = 0.01
    text_mix: float = 0.0
    freeze_embeddings: bool = False


@dataclass(frozen=True)
class TestbedConfig:
    """A testbed: sizes, the base/reasoner/VLM stages and the seed every random draw derives from."""

    name: str
    size: ModelSize = field(default_factory=ModelSize)
    base: Stage = Stage(steps=1200, lr=3e-3)
    reasoner: Stage = Stage(steps=500, lr=2e-3, text_mix=0.2)
    vlm: Stage = Stage(steps=700, lr=2e-3, text_mix=0.2)
    seed: int = 0

    def stage_key(self, stage: str) -> str:
        """Short hash of what determines ``stage``'s weights (the name is only a label)."""
        size = asdict(self.size)
        text_size = {k: v for k, v in size.items() if not k.startswith("vision_")}
        payload: dict[str, object] = {"format": FORMAT_VERSION, "size": text_size, "seed": self.seed}
        payload["base"] = asdict(self.base)
        if stage != "base":
            payload[stage] = asdict(getattr(self, stage))
        if stage == "vlm":
            payload["vision"] = {k: v for k, v in size.items() if k.startswith("vision_")}
        return _digest(payload)

    def key(self) -> str:
        """Hash of the whole testbed (all three stages)."""
        return _digest({s: self.stage_key(s) for s in ("base", "reasoner", "vlm")})

    def with_seed(self, seed: int) -> TestbedConfig:
        return replace(self, seed=seed)

    def to_json(self) -> dict[str, object]:
        keys = {s: self.stage_key(s) for s in ("base", "reasoner", "vlm")}
        return {**asdict(self), "key": self.key(), "stage_keys": keys, "format": FORMAT_VERSION}


def _digest(payload: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# The demo's default; the numbers in docs/testbed.md come from it.
DEFAULT = TestbedConfig(name="default")

# CI / `frankmerge demo --quick`: a few hundred steps of a 3-block, 64-wide model.
QUICK = TestbedConfig(
    name="quick",
    size=ModelSize(hidden=64, layers=3, intermediate=128, heads=4, kv_heads=4, vision_hidden=32, vision_intermediate=64),
    base=Stage(steps=500, lr=3e-3, warmup=20),
    reasoner=Stage(steps=300, lr=3e-3, warmup=20, text_mix=0.2),
    vlm=Stage(steps=500, lr=3e-3, warmup=20, text_mix=0.2),
)

PRESETS: dict[str, TestbedConfig] = {"default": DEFAULT, "quick": QUICK}

"""What determines a trained testbed: model sizes and the three training stages, hashed into cache keys.

Everything that changes the weights is in ``TestbedConfig``; evaluation sizes are not, so a
different evaluation reuses the cached models. Keys are per stage: the base's covers the sizes, the
seed and the base stage; a fine-tune's adds its own stage, so a sweep over fine-tuning settings
trains the base once, and the two regimes (``llava``, ``qwen``) share their base and reasoner.

The regimes differ only in how the VLM is trained (docs/testbed.md, "Testbed v2"): ``llava`` aligns
a new vision tower and projector against the *frozen* language model (``vlm_align``), then
fine-tunes everything briefly at a low rate; ``qwen`` trains the language model hard together with
the new tower, so its task vector is large.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

# Bump when the data, tokenizer or training code changes in a way that changes the weights.
FORMAT_VERSION = 5


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
    """One training run: AdamW with linear warm-up and cosine decay.

    ``text_mix``: share of base text tasks in a fine-tune's batches; ``cot_mix``: share of text
    problems with their chain of thought in the base's pretraining; ``freeze_language_model``: train
    only the VLM's vision tower and projector (LLaVA's stage 1), embeddings and head frozen too;
    ``align_embeddings``: weight β of a term pulling each projected patch toward the base's
    embedding of its cell's word (docs/testbed.md, "Alignment probe 2"; 0: none).
    """

    steps: int
    lr: float
    batch: int = 32
    warmup: int = 30
    weight_decay: float = 0.01
    text_mix: float = 0.0
    cot_mix: float = 0.0
    freeze_embeddings: bool = False
    freeze_language_model: bool = False
    align_embeddings: float = 0.0


def _stage_payload(stage: Stage) -> dict[str, object]:
    """A stage's fields for its key; ``align_embeddings`` only when set, so older keys stay as they were."""
    payload = asdict(stage)
    if not stage.align_embeddings:
        del payload["align_embeddings"]
    return payload


@dataclass(frozen=True)
class TestbedConfig:
    """A testbed: sizes, the base/reasoner/VLM stages and the seed every random draw derives from.

    ``vlm_align`` (None in the ``qwen`` regime) is the VLM's first stage; ``vlm`` continues from it.
    ``system_prompt``: words of a default system turn that opens every conversation in every stage
    and in the saved chat template (none by default; docs/testbed.md, "FRANK's premise").
    ``image_scale``: image side in units of 32 px; each scene cell spans ``image_scale``² patches and
    its shape one of them (1: 16 visual tokens; 2: 64, most of them background — "variant 2").
    """

    name: str
    size: ModelSize = field(default_factory=ModelSize)
    base: Stage = Stage(steps=1200, lr=3e-3, cot_mix=0.05)
    reasoner: Stage = Stage(steps=300, lr=3e-4, text_mix=0.2)
    vlm_align: Stage | None = Stage(steps=700, lr=2e-3, freeze_language_model=True)
    vlm: Stage = Stage(steps=300, lr=2e-4, text_mix=0.2)
    regime: str = "llava"
    seed: int = 0
    system_prompt: tuple[str, ...] = ()
    image_scale: int = 1

    def __post_init__(self) -> None:
        if self.image_scale < 1:
            raise ValueError(f"image_scale must be a positive integer, got {self.image_scale}")

    def stages(self) -> tuple[str, ...]:
        """The stages this testbed trains, in order."""
        return ("base", "reasoner", "vlm_align", "vlm") if self.vlm_align else ("base", "reasoner", "vlm")

    def stage_key(self, stage: str) -> str:
        """Short hash of what determines ``stage``'s weights (the names are only labels)."""
        size = asdict(self.size)
        text_size = {k: v for k, v in size.items() if not k.startswith("vision_")}
        payload: dict[str, object] = {"format": FORMAT_VERSION, "size": text_size, "seed": self.seed}
        if self.system_prompt:  # only when set, so the keys of testbeds without one stay as they were
            payload["system"] = list(self.system_prompt)
        payload["base"] = _stage_payload(self.base)
        if stage == "reasoner":
            payload["reasoner"] = _stage_payload(self.reasoner)
        if stage in ("vlm_align", "vlm"):
            payload["vision"] = {k: v for k, v in size.items() if k.startswith("vision_")}
            if self.image_scale != 1:  # only when set, so the keys of 32-px testbeds stay as they were
                payload["vision"]["image_scale"] = self.image_scale
            payload["vlm_align"] = _stage_payload(self.vlm_align) if self.vlm_align else None
        if stage == "vlm":
            payload["vlm"] = _stage_payload(self.vlm)
        return _digest(payload)

    def key(self) -> str:
        """Hash of the whole testbed (all of its stages)."""
        return _digest({s: self.stage_key(s) for s in self.stages()})

    def with_seed(self, seed: int) -> TestbedConfig:
        return replace(self, seed=seed)

    def to_json(self) -> dict[str, object]:
        keys = {s: self.stage_key(s) for s in self.stages()}
        return {**asdict(self), "key": self.key(), "stage_keys": keys, "format": FORMAT_VERSION}


def _digest(payload: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


REGIMES: tuple[str, ...] = ("llava", "qwen")

# Testbed v2's llava regime (docs/testbed.md, "Results: testbed v2"); the demo runs v3 (below) by default.
DEFAULT = TestbedConfig(name="default")
# The qwen regime: no alignment stage, the language model trained hard with the new tower (v1's VLM recipe).
DEFAULT_QWEN = replace(DEFAULT, name="default-qwen", vlm_align=None, vlm=Stage(steps=700, lr=2e-3, text_mix=0.2), regime="qwen")

# CI / `frankmerge demo --quick`: a few hundred steps of a 3-block, 64-wide model.
QUICK = TestbedConfig(
    name="quick",
    size=ModelSize(hidden=64, layers=3, intermediate=128, heads=4, kv_heads=4, vision_hidden=32, vision_intermediate=64),
    base=Stage(steps=500, lr=3e-3, warmup=20, cot_mix=0.05),
    reasoner=Stage(steps=250, lr=1e-3, warmup=20, text_mix=0.2),
    vlm_align=Stage(steps=400, lr=3e-3, warmup=20, freeze_language_model=True),
    vlm=Stage(steps=150, lr=3e-4, warmup=20, text_mix=0.2),
)
QUICK_QWEN = replace(
    QUICK, name="quick-qwen", vlm_align=None, vlm=Stage(steps=500, lr=3e-3, warmup=20, text_mix=0.2), regime="qwen"
)


def with_alignment_term(config: TestbedConfig, beta: float = 1.0) -> TestbedConfig:
    """Testbed v3's llava regime: ``config`` with the stage-1 embedding term (docs/testbed.md, "Testbed v3")."""
    if config.vlm_align is None:
        raise ValueError(f"testbed {config.name!r} has no alignment stage to add the embedding term to")
    name = config.name.replace("default", "default-v3") if config.name.startswith("default") else f"{config.name}-v3"
    return replace(config, name=name, vlm_align=replace(config.vlm_align, align_embeddings=beta))


# The demo's default since v3 was measured (docs/testbed.md, "Results: testbed v3"), and its quick form.
DEFAULT_V3 = with_alignment_term(DEFAULT)
QUICK_V3 = with_alignment_term(QUICK)

PRESETS: dict[str, TestbedConfig] = {
    "default": DEFAULT,
    "default-qwen": DEFAULT_QWEN,
    "default-v3": DEFAULT_V3,
    "quick": QUICK,
    "quick-qwen": QUICK_QWEN,
    "quick-v3": QUICK_V3,
}

# Testbed versions the demo offers: v2 (issue #14's two regimes) and v3 (v2 + the stage-1 embedding term).
TESTBEDS: tuple[str, ...] = ("v2", "v3")


def preset(regime: str, quick: bool, testbed: str = "v3") -> TestbedConfig:
    """The built-in testbed of ``regime`` (``llava`` or ``qwen``) and version, full-size or quick.

    v3 differs from v2 only in the llava regime's alignment stage, so ``qwen`` is the same in both.
    """
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    if testbed not in TESTBEDS:
        raise ValueError(f"unknown testbed {testbed!r}; choose one of {', '.join(TESTBEDS)}")
    if regime == "qwen":
        return QUICK_QWEN if quick else DEFAULT_QWEN
    if testbed == "v3":
        return QUICK_V3 if quick else DEFAULT_V3
    return QUICK if quick else DEFAULT

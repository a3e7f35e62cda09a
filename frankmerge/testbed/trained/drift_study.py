"""DRIFT in the testbed: a multimodal chain-of-thought set, and SFT vs DRIFT runs as a user runs them.

The training set is visual-reasoning items with the gold chain of thought, drawn from a seed of
their own; an item whose problem (question and every colour's count) equals an evaluation item's is
left out, so no evaluated problem is trained on. It is written as the JSONL + PNG files that
``frankmerge drift-train --data`` reads, and every run goes through ``build_prior`` and
``drift_train`` — the functions behind ``frankmerge drift-prior`` and ``drift-train``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from frankmerge.testbed.trained.tasks import Example, eval_set, reasoning

log = logging.getLogger(__name__)

TRAIN_SEED = 27_182_818  # the training set's own seed, never the evaluation seed
DRIFT_VARIANTS: tuple[str, ...] = ("absolute", "grad_norm", "adaptive")
SFT = "none"  # drift-train's --variant for plain SFT


@dataclass(frozen=True)
class DriftSettings:
    """The DRIFT/SFT runs of the testbed (docs/testbed.md, "Testbed v2"): the paper's schedule
    (3 epochs, cosine, 5 % warm-up, α = −1) at a learning rate scaled to the testbed."""

    n_items: int = 300
    epochs: float = 3.0
    batch_size: int = 8
    learning_rate: float = 1e-4
    alpha: float = -1.0
    variants: tuple[str, ...] = DRIFT_VARIANTS
    seed: int = 42


@dataclass(frozen=True)
class TrainingSet:
    path: Path  # the JSONL file
    n_items: int
    n_dropped: int  # drawn items left out because an evaluation item poses the same problem


def problem_key(example: Example) -> tuple[str, tuple[str, ...]]:
    """What makes two items the same problem: the question and the gold chain (every colour's count)."""
    return example.prompt, example.target


def write_training_set(
    out_dir: Path, n_items: int, eval_items: int = 200, seed: int = TRAIN_SEED, image_scale: int = 1
) -> TrainingSet:
    """``n_items`` visual-reasoning items with their chain of thought as ``train.jsonl`` + ``images/``
    (images in the VLM's layout, ``image_scale``)."""
    out_dir = Path(out_dir)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    evaluated = {problem_key(e) for e in eval_set("visual_reasoning", eval_items, image_scale=image_scale)}
    rng = np.random.default_rng([seed])
    records, dropped = [], 0
    while len(records) < n_items:
        example = reasoning(rng, visual=True, image_scale=image_scale)
        if problem_key(example) in evaluated:
            dropped += 1
            continue
        name = f"images/{len(records):05d}.png"
        Image.fromarray(example.image).save(out_dir / name)
        records.append(
            {
                "messages": [
                    {"role": "user", "content": f"<image>{example.prompt}"},
                    {"role": "assistant", "content": " ".join(example.target)},
                ],
                "images": [name],
            }
        )
    path = out_dir / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return TrainingSet(path, len(records), dropped)


@dataclass
class DriftRun:
    """One fine-tune of a VLM on the training set: plain SFT or a DRIFT variant."""

    name: str
    variant: str
    start: str  # the checkpoint it started from ("vlm", or a merge's name)
    path: Path
    seconds: float
    final_loss: float | None
    report: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        movement = self.report.get("movement_along_prior")
        return {
            "name": self.name,
            "variant": self.variant,
            "start": self.start,
            "path": str(self.path),
            "seconds": round(self.seconds, 2),
            "final_loss": self.final_loss,
            "movement_along_prior": movement.get("all") if isinstance(movement, dict) else None,
        }


def build_testbed_prior(vlm: Path, reasoner: Path, out: Path) -> Path:
    """Δ = θ_R − θ_V for the decoder's attention and MLP tensors, in float32 (tiny models, no need to round)."""
    from frankmerge.drift.prior import PriorOptions, build_prior

    build_prior(vlm, reasoner, out, PriorOptions(dtype=torch.float32, overwrite=True))
    return out


def run_fine_tunes(
    vlm: Path,
    prior: Path,
    data: Path,
    out_root: Path,
    settings: DriftSettings,
    *,
    starts: Sequence[tuple[str, Path]] = (),
    progress: bool = False,
) -> list[DriftRun]:
    """Plain SFT and each DRIFT variant from ``vlm``; plain SFT from each of ``starts`` (merge-then-SFT)."""
    jobs = [("sft", SFT, "vlm", vlm, prior)]
    jobs += [(f"drift_{v}", v, "vlm", vlm, prior) for v in settings.variants]
    jobs += [(f"{name}_then_sft", SFT, name, path, None) for name, path in starts]
    return [_fine_tune(*job, data, out_root, settings, progress) for job in jobs]


def _fine_tune(
    name: str,
    variant: str,
    start: str,
    vlm: Path,
    prior: Path | None,
    data: Path,
    out_root: Path,
    settings: DriftSettings,
    progress: bool,
) -> DriftRun:
    from frankmerge.drift.train import TrainOptions, drift_train

    options = TrainOptions(
        variant=variant,
        alpha=settings.alpha,
        prior=prior,
        prior_dtype="float32",
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        seed=settings.seed,
        precision="fp32",
        logging_steps=5,
        overwrite=True,
        progress=progress,
    )
    started = time.perf_counter()
    result = drift_train(vlm, data, out_root / name, options=options)
    losses = [point for point in result.report.get("losses", []) if isinstance(point, dict)]
    final = losses[-1].get("loss") if losses else None
    seconds = time.perf_counter() - started
    log.info("%s (%s from %s): %.1fs", name, variant, start, seconds)
    return DriftRun(name, variant, start, out_root / name, seconds, final, result.report)

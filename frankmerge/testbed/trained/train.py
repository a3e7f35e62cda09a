"""The training loop shared by the three stages: AdamW, warm-up + cosine, fresh examples every step.

Examples are drawn on the fly from a seeded generator, so a stage is reproducible from its seed
and never sees the same batch twice. Training runs in float32 on the CPU; callers set the thread
count (``torch.set_num_threads``) because oversubscribed OpenMP makes tiny models far slower.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from frankmerge.progress import progress_bar
from frankmerge.testbed.trained.config import Stage
from frankmerge.testbed.trained.encode import Batch, Encoder
from frankmerge.testbed.trained.tasks import Example

log = logging.getLogger(__name__)

LOSS_WINDOW = 25  # steps averaged for each logged loss


@dataclass
class StageLog:
    """What a training stage did: loss curve (mean over windows), final loss, wall time."""

    stage: str
    steps: int
    seconds: float
    trainable_parameters: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    frozen_unchanged: bool | None = None  # a frozen language model came out bit-identical (None: nothing frozen)
    align_losses: list[tuple[int, float]] = field(default_factory=list)  # the alignment term's windows, when used

    @property
    def final_loss(self) -> float:
        return self.losses[-1][1] if self.losses else math.nan

    def to_json(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "trainable_parameters": self.trainable_parameters,
            "final_loss": self.final_loss,
            "losses": self.losses,
            "frozen_unchanged": self.frozen_unchanged,
            **({"align_losses": self.align_losses} if self.align_losses else {}),
        }


def lr_factor(step: int, stage: Stage) -> float:
    """Linear warm-up to 1, then cosine decay to 0.1."""
    if step < stage.warmup:
        return (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_stage(
    name: str,
    model: torch.nn.Module,
    stage: Stage,
    sample: Callable[[np.random.Generator], Example],
    seed: int,
    *,
    loss_on_prompt: bool = False,
    progress: bool = False,
    system: tuple[str, ...] = (),
    image_scale: int = 1,
) -> StageLog:
    """Train ``model`` in place for ``stage.steps`` steps on examples from ``sample``
    (``system``: the default system turn every conversation opens with; ``image_scale``: the
    image layout ``sample`` draws)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    encoder = Encoder.with_system(system, image_scale)
    if stage.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    frozen_before = _freeze_language_model(model) if stage.freeze_language_model else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, stage))
    record = StageLog(name, stage.steps, 0.0, sum(p.numel() for p in params))
    align = _EmbeddingAlignment(model) if stage.align_embeddings else None
    model.train()
    started, window, align_window = time.perf_counter(), [], []
    bar = progress_bar(range(stage.steps), desc=f"training {name}", unit="step", disable=not progress)
    for step in bar:
        batch = encoder.batch([sample(rng) for _ in range(stage.batch)], loss_on_prompt=loss_on_prompt)
        loss = model(**batch.model_inputs(), labels=batch.labels).loss
        if align is not None:
            term = align.loss(batch)
            (loss + stage.align_embeddings * term).backward()
            align_window.append(term.item())
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(loss.item())
        if len(window) == LOSS_WINDOW or step == stage.steps - 1:
            record.losses.append((step + 1, round(sum(window) / len(window), 4)))
            if align_window:
                record.align_losses.append((step + 1, round(sum(align_window) / len(align_window), 4)))
            bar.set_postfix(loss=f"{record.losses[-1][1]:.3f}")
            window, align_window = [], []
    if align is not None:
        align.remove()
    if frozen_before is not None:
        record.frozen_unchanged = all(torch.equal(frozen_before[n], p) for n, p in model.named_parameters() if n in frozen_before)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    record.seconds = time.perf_counter() - started
    log.info("%s: %d steps in %.1fs, final loss %.4f", name, stage.steps, record.seconds, record.final_loss)
    return record


class _EmbeddingAlignment:
    """The stage-1 term of docs/testbed.md's "Alignment probe 2": the mean squared distance of each
    projected patch from the input embedding of its cell's word, over the mean squared norm of the
    embedding rows, so its weight does not depend on the embedding scale. The targets are detached:
    the term moves the tower and projector, never the embeddings."""

    def __init__(self, model: torch.nn.Module) -> None:
        projectors = [m for n, m in model.named_modules() if n.split(".")[-1] == "multi_modal_projector"]
        if not projectors:
            raise ValueError("align_embeddings needs a VLM with a multi_modal_projector")
        self._model = model
        self._projected: torch.Tensor | None = None
        self._hook = projectors[0].register_forward_hook(self._keep)

    def _keep(self, module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        self._projected = output

    def loss(self, batch: Batch) -> torch.Tensor:
        if self._projected is None or batch.cell_ids is None:
            raise ValueError("align_embeddings needs every training image to carry its cell words")
        embeddings = self._model.get_input_embeddings().weight.detach()
        projected = self._projected.reshape(*batch.cell_ids.shape, -1)
        self._projected = None
        distance = (projected - embeddings[batch.cell_ids]).pow(2).sum(-1).mean()
        return distance / embeddings.pow(2).sum(-1).mean()

    def remove(self) -> None:
        self._hook.remove()


def _freeze_language_model(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """LLaVA's stage 1: only the vision tower and projector train; returns copies of the frozen weights."""
    trainable = ("vision_tower", "multi_modal_projector")

    def trains(name: str) -> bool:
        return any(part in name.split(".") for part in trainable)

    if not any(trains(n) for n, _ in model.named_parameters()):
        raise ValueError("freeze_language_model needs a VLM with a vision tower and projector")
    frozen = {}
    for name, param in model.named_parameters():
        keep = trains(name)
        param.requires_grad_(keep)
        if not keep:
            frozen[name] = param.detach().clone()
    return frozen

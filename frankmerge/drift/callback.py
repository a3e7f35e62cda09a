"""Hugging Face Trainer integration: a callback that attaches DRIFT when training begins.

``on_train_begin`` runs after the Trainer has wrapped the model and built the optimizer (DDP,
DeepSpeed, accelerate), so the hooks land on the parameters that are actually trained and a
partitioned or sharded setup is seen, and refused, before the first step. See docs/drift.md for
how each distributed setup and precision interacts with the hooks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from frankmerge.drift.attach import DriftHandle, attach_drift
from frankmerge.drift.errors import DriftSetupError
from frankmerge.drift.guidance import Guide, parse_placement, parse_timing
from frankmerge.drift.prior_file import DriftPrior

log = logging.getLogger(__name__)


class DriftCallback(TrainerCallback):
    """Guide the Trainer's gradients with a reasoning prior (``attach_drift`` at train begin).

    Example::

        trainer = Trainer(model=vlm, args=args, train_dataset=data, callbacks=[DriftCallback("prior.safetensors")])
    """

    def __init__(
        self,
        prior: DriftPrior | str | Path,
        *,
        variant: str = "adaptive",
        alpha: float = -1.0,
        placement: str = "device",
        delta_dtype: torch.dtype | None = None,
        timing: str = "backward",
        modules: tuple[str, ...] | str | None = None,
    ) -> None:
        self.prior = prior
        self.variant = Guide(variant).variant  # validate now, not at the first step
        self.alpha = alpha
        self.placement = parse_placement(placement)
        self.delta_dtype = delta_dtype
        self.timing = parse_timing(timing)
        self.modules = modules
        self.handle: DriftHandle | None = None
        self.summary: dict[str, Any] = {}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        check_training_setup(args, self.variant, self.timing)
        if self.handle is not None:  # a second train() call on the same trainer
            self.handle.remove()
        self.handle = attach_drift(
            kwargs["model"],
            self.prior,
            variant=self.variant,
            alpha=self.alpha,
            placement=self.placement,
            delta_dtype=self.delta_dtype,
            timing=self.timing,
            modules=self.modules,
            optimizer=kwargs.get("optimizer"),
        )

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Detach and free Δ; the run's guidance statistics stay in ``summary``."""
        if self.handle is not None:
            self.summary = self.handle.summary()
            self.handle.remove()
            self.handle = None


def check_training_setup(args: TrainingArguments, variant: str, timing: str) -> None:
    """Refuse the setups where the hooks would not compute the method's g̃ (see docs/drift.md)."""
    if getattr(args, "fsdp", None) or _env_flag("ACCELERATE_USE_FSDP"):
        raise DriftSetupError(
            "FSDP shards parameters and gradients, so no hook sees a whole tensor's gradient; "
            "train DRIFT with DDP or DeepSpeed ZeRO-1/2"
        )
    stage = _deepspeed_stage(args)
    if stage is not None and stage >= 3:
        raise DriftSetupError("DeepSpeed ZeRO-3 partitions parameters; DRIFT needs whole tensors: use ZeRO-1/2")
    if stage is not None and timing == "step":
        raise DriftSetupError(
            "timing 'step' cannot run under DeepSpeed: the engine reduces gradients into flat partitions and steps "
            "inside backward; use the default timing 'backward'"
        )
    if args.fp16 and variant == "absolute" and timing == "backward":
        raise DriftSetupError(
            "fp16 loss scaling multiplies g but not Δ, so 'absolute' would shrink the prior by the loss scale; "
            "use bf16, a norm-based variant (scale-invariant), or timing 'step' (after unscaling)"
        )


def _deepspeed_stage(args: TrainingArguments) -> int | None:
    """The ZeRO stage of the run, or None without DeepSpeed.

    DeepSpeed reaches the Trainer two ways: ``--deepspeed ds.json`` (``args.deepspeed``) or an
    ``accelerate launch`` config, which leaves ``args.deepspeed`` empty and sets
    ``args.deepspeed_plugin`` (from ``ACCELERATE_USE_DEEPSPEED``); both must be recognised.
    """
    plugin = getattr(args, "deepspeed_plugin", None)
    stage: object = None
    if plugin is not None:
        stage = getattr(plugin, "zero_stage", None)
        if stage is None:
            stage = (getattr(plugin, "deepspeed_config", None) or {}).get("zero_optimization", {}).get("stage")
    elif getattr(args, "deepspeed", None):
        config = getattr(getattr(args, "hf_deepspeed_config", None), "config", None) or {}
        stage = config.get("zero_optimization", {}).get("stage")
    elif _env_flag("ACCELERATE_USE_DEEPSPEED"):
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", 2)
    else:
        return None
    try:
        return int(stage)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        log.warning("DeepSpeed ZeRO stage %r is not a number; assuming stage 0", stage)
        return 0


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes", "on")

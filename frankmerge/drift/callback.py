"""Hugging Face Trainer integration: a callback that attaches DRIFT when training begins.

``on_train_begin`` runs after the Trainer has wrapped the model and built the optimizer (DDP,
DeepSpeed, accelerate), so the hooks land on the parameters that are actually trained and a
partitioned or flattened setup is seen, and refused, before the first step, and FSDP2's DTensor
parameters get the sharded guidance (``frankmerge/drift/sharded.py``). See docs/drift.md for
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
    fsdp = fsdp_version(args)
    if fsdp == 1:
        raise DriftSetupError(
            "FSDP1 flattens each wrapped module's parameters into one FlatParameter, so per-tensor norms and dot "
            "products do not exist; use FSDP2 (fsdp_version: 2 in the accelerate config, or drift-train --fsdp) "
            "with timing 'step', or DDP / DeepSpeed ZeRO-1/2"
        )
    if fsdp == 2 and timing != "step":
        raise DriftSetupError(
            "under FSDP2 each rank holds only a shard of every gradient, reduced and accumulated at the optimizer "
            "step: DRIFT guides it there; use timing 'step' (--timing step)"
        )
    stage = _deepspeed_stage(args)
    if stage is not None and stage >= 3:
        raise DriftSetupError(
            "DeepSpeed ZeRO-3 partitions parameters into flat buffers outside the modules, so no per-tensor gradient "
            "reaches a hook; use FSDP2 with timing 'step' (sharded guidance), or ZeRO-1/2"
        )
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


def fsdp_version(args: TrainingArguments) -> int | None:
    """1 or 2 when the Trainer or accelerate shards with FSDP, None otherwise.

    ``TrainingArguments.fsdp`` defaults to version 2 (transformers 5); an ``accelerate launch``
    config sets ``ACCELERATE_USE_FSDP`` and ``FSDP_VERSION``, which accelerate reads as 1 when absent.
    """
    if getattr(args, "fsdp", None):
        config = getattr(args, "fsdp_config", None)
        version = config.get("version", config.get("fsdp_version", 2)) if isinstance(config, dict) else 2
    elif _env_flag("ACCELERATE_USE_FSDP"):
        version = os.environ.get("FSDP_VERSION", "1")
    else:
        return None
    try:
        return int(version)
    except (TypeError, ValueError):
        raise DriftSetupError(f"FSDP version {version!r} is not a number") from None


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

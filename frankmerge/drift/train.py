"""The DRIFT runner: multimodal chat SFT on the Hugging Face Trainer, guided by the prior.

Order of work, so that bad input fails before anything expensive: options, the training data
(every record and image file), the output directory, the prior (built on the main process
first under ``accelerate launch``), the model and processor, then training. The output is a
normal VLM checkpoint (same tensor layout as the input) plus ``drift_report.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frankmerge import __version__
from frankmerge.checkpoints.output import check_output_free
from frankmerge.checkpoints.resolve import resolve_checkpoint
from frankmerge.drift.attach import check_prior_fits, decoder_parameters, find_decoder
from frankmerge.drift.callback import DriftCallback
from frankmerge.drift.coverage import DEFAULT_MODULES, parse_modules
from frankmerge.drift.data import ChatCollator, ChatDataset, ChatSample, load_chat_jsonl
from frankmerge.drift.errors import DriftOptionError
from frankmerge.drift.guidance import VARIANTS, parse_placement, parse_timing, parse_variant
from frankmerge.drift.prior import PriorOptions, build_prior, prior_dtype
from frankmerge.drift.prior_file import DriftPrior, load_prior
from frankmerge.drift.report import InitialWeights, fingerprint, loss_curve, peak_memory, prior_movement, write_report
from frankmerge.drift.sharding import is_dtensor
from frankmerge.errors import OutputExistsError
from frankmerge.progress import ProgressLines, interactive

log = logging.getLogger(__name__)

# In a sub-folder, so that tools globbing the checkpoint's top-level *.safetensors never pick it up.
PRIOR_NAME = "drift/prior.safetensors"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PLAIN_SFT = "none"
RUNNER_PLACEMENTS = ("device", "pinned")


@dataclass(frozen=True)
class TrainOptions:
    """Runner options; the defaults are the paper's (3 epochs, lr 1e-6, cosine, 5% warm-up, batch 1)."""

    variant: str = "adaptive"  # or "none": plain SFT with the same pipeline (the baseline)
    alpha: float = -1.0
    modules: tuple[str, ...] | None = None  # None: attn,mlp for a new prior; every group of a given --prior
    prior: Path | None = None  # reuse a prior file instead of building one into the output
    prior_dtype: str = "bfloat16"
    placement: str = "device"
    delta_dtype: str | None = None
    timing: str = "backward"
    epochs: float = 3.0
    learning_rate: float = 1e-6
    scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    batch_size: int = 1
    grad_accum: int = 1
    max_steps: int = -1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    precision: str = "auto"  # auto: bf16 mixed precision on a bf16-capable GPU, else fp32
    seed: int = 42
    image_root: Path | None = None
    train_vision: bool = False  # the vision tower and projector are frozen unless set
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    optim: str = "adamw_torch"
    vlm_layout: str | None = None
    reasoner_layout: str | None = None
    overwrite: bool = False
    dataloader_workers: int = 0
    progress: bool = True  # the Trainer's progress bar and per-step log lines
    fsdp: bool = False  # shard the model with FSDP2 over all processes (torchrun / accelerate launch); needs timing step


@dataclass
class TrainResult:
    out: Path
    report: dict[str, Any]


def drift_train(
    vlm: str | Path, data: str | Path, out: str | Path, *, reasoner: str | Path | None = None, options: TrainOptions | None = None
) -> TrainResult:
    """SFT ``vlm`` on ``data`` with DRIFT guidance (Δ = ``reasoner`` − ``vlm``); write the model and report to ``out``."""
    options = _validated(options or TrainOptions(), reasoner)
    started = time.time()
    out = Path(out)
    samples = load_chat_jsonl(data, options.image_root)
    vlm_dir = resolve_checkpoint(str(vlm), role="vlm")
    args = _training_arguments(out, options)
    prior = _prepare_output_and_prior(vlm_dir, reasoner, out, options, args)

    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer

    processor = AutoProcessor.from_pretrained(vlm_dir)
    model = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.float32, **fsdp_loading(options.fsdp))
    sharded = any(is_dtensor(p) for p in model.parameters())
    frozen = [] if options.train_vision else freeze_outside_language_model(model)
    frozen_before = fingerprint(frozen)
    callback = None
    if prior is not None and options.variant != PLAIN_SFT:
        check_prior_fits(model, prior, options.modules)  # fail before training, not at its first step
        callback = DriftCallback(
            prior,
            variant=options.variant,
            alpha=options.alpha,
            placement=options.placement,
            delta_dtype=prior_dtype(options.delta_dtype) if options.delta_dtype else None,
            timing=options.timing,
            modules=options.modules,
        )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ChatDataset(samples),
        data_collator=ChatCollator(processor),
        processing_class=processor,
        callbacks=[callback] if callback else None,
    )
    if not options.progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # what the Trainer prints in place of the bar
    elif not interactive():  # a log file or pipe: a plain line every few seconds instead of bar redraws
        trainer.add_callback(_step_lines())
    train_output = trainer.train()
    trainer.save_model(str(out))
    report: dict[str, Any] = {}
    unchanged = fingerprint(frozen) == frozen_before  # under FSDP2: this rank's shards, then agreed by all
    movement = _movement(vlm_dir, options, prior, model) if sharded else None  # a collective: every rank
    if sharded:
        unchanged = all_ranks_agree(unchanged)
    if trainer.is_world_process_zero():
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; the report records the options
        if not sharded:
            movement = _movement(vlm_dir, options, prior, model)
        report = _report(vlm_dir, reasoner, data, samples, options, trainer, train_output, callback, prior, movement)
        report["fsdp"] = sharded
        report["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        report["frozen_parameters"] = sum(p.numel() for p in frozen)
        report["frozen_unchanged"] = unchanged
        report["wall_time_s"] = round(time.time() - started, 2)
        write_report(out, report)
    return TrainResult(out, report)


def _validated(options: TrainOptions, reasoner: str | Path | None) -> TrainOptions:
    variant = options.variant.strip().lower()
    if variant != PLAIN_SFT:
        try:
            variant = parse_variant(variant)
        except DriftOptionError as exc:
            raise DriftOptionError(f"{exc} (or {PLAIN_SFT!r} for plain SFT)") from None
        if reasoner is None and options.prior is None:
            raise DriftOptionError("DRIFT needs --reasoner (to build the prior) or --prior (a prior file)")
    if options.placement.strip().lower() not in RUNNER_PLACEMENTS:
        raise DriftOptionError(
            f"--placement {options.placement!r}: valid ones are {', '.join(RUNNER_PLACEMENTS)} (the public code's per-step "
            "host copy, attach_drift(placement='host_copy'), is kept only as a comparison in benchmarks/drift_overhead.py)"
        )
    if not 0.0 <= options.warmup_ratio < 1.0:  # the Trainer reads warmup_steps >= 1 as a step count
        raise DriftOptionError(f"--warmup-ratio {options.warmup_ratio}: a fraction of the training steps in [0, 1)")
    if options.precision not in PRECISIONS:
        raise DriftOptionError(f"--precision {options.precision!r}: valid ones are {', '.join(PRECISIONS)}")
    if options.delta_dtype is not None:
        prior_dtype(options.delta_dtype)
    if options.fsdp and variant != PLAIN_SFT and parse_timing(options.timing) != "step":
        raise DriftOptionError(
            "--fsdp: each rank holds a shard of every gradient, reduced at the optimizer step, where DRIFT guides it; "
            "add --timing step"
        )
    prior_dtype(options.prior_dtype)
    return TrainOptions(
        **{
            **asdict(options),
            "variant": variant,
            "modules": None if options.modules is None and options.prior is not None else parse_modules(options.modules),
            "placement": parse_placement(options.placement),
            "timing": parse_timing(options.timing),
        }
    )


def _training_arguments(out: Path, options: TrainOptions) -> Any:
    from transformers import TrainingArguments

    accelerator = getattr(torch, "accelerator", None)
    accelerated = torch.cuda.is_available() or bool(accelerator is not None and accelerator.is_available())
    precision = options.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return TrainingArguments(
        output_dir=str(out),
        num_train_epochs=options.epochs,
        max_steps=options.max_steps,
        learning_rate=options.learning_rate,
        lr_scheduler_type=options.scheduler,
        warmup_steps=options.warmup_ratio,  # a float below 1 is a fraction of the steps
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        max_grad_norm=options.max_grad_norm,
        weight_decay=options.weight_decay,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=options.seed,
        optim=options.optim,
        logging_steps=options.logging_steps,
        logging_first_step=True,
        disable_tqdm=not options.progress or not interactive(),
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=options.dataloader_workers,
        activation_checkpointing=options.gradient_checkpointing,
        dataloader_pin_memory=accelerated,
        use_cpu=not accelerated,  # without it, CPU processes under torchrun/accelerate would not form a DDP group
    )


def _step_lines() -> Any:
    """A Trainer callback reporting the main process's optimiser steps through ProgressLines."""
    from transformers import TrainerCallback

    class StepLines(TrainerCallback):  # type: ignore[misc]
        lines: ProgressLines[int] | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.lines = ProgressLines(desc="training", unit="step", total=state.max_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.lines is not None:
                self.lines.update(state.global_step - self.lines.n)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.lines is not None:
                self.lines.close()

    return StepLines()


def _prepare_output_and_prior(
    vlm_dir: Path, reasoner: str | Path | None, out: Path, options: TrainOptions, args: Any
) -> DriftPrior | None:
    """On the main process first: check (or clear) ``out`` and build the prior; the others then open it."""
    wanted = options.variant != PLAIN_SFT or options.prior is not None or reasoner is not None
    path = options.prior or out / PRIOR_NAME
    with args.main_process_first(local=False, desc="DRIFT prior"):
        if args.process_index == 0:
            _clear_output(out, options)
            if wanted and options.prior is None:
                prior_options = PriorOptions(
                    modules=options.modules or DEFAULT_MODULES,
                    dtype=prior_dtype(options.prior_dtype),
                    vlm_layout=options.vlm_layout,
                    reasoner_layout=options.reasoner_layout,
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                build_prior(vlm_dir, str(reasoner), path, prior_options)
        return load_prior(path) if wanted else None


def _clear_output(out: Path, options: TrainOptions) -> None:
    if options.prior is not None and out.resolve() in options.prior.resolve().parents and options.overwrite:
        raise OutputExistsError(f"--prior {options.prior} lies inside --out {out}, which --overwrite would delete; move it")
    check_output_free(out, overwrite=options.overwrite)
    if options.overwrite and out.is_dir():
        shutil.rmtree(out)


def fsdp_loading(fsdp: bool) -> dict[str, Any]:
    """``from_pretrained`` arguments that shard the model with FSDP2 over every process at load time.

    Transformers' own load-time FSDP2 (``DistributedConfig``) works on CPU (gloo) as on GPUs, and
    the Trainer then trains the DTensor model as it is; accelerate's FSDP plugin (an ``accelerate
    launch`` FSDP2 config) shards on GPUs only, and is recognised by the callback all the same.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not fsdp or world == 1:
        return {}
    from transformers import DistributedConfig

    return {"distributed_config": DistributedConfig(fsdp_size=world)}


def _movement(vlm_dir: Path, options: TrainOptions, prior: DriftPrior | None, model: nn.Module) -> dict[str, Any] | None:
    if prior is None:
        return None
    with InitialWeights(vlm_dir, options.vlm_layout) as theta0:
        return prior_movement(model, prior, theta0)


def all_ranks_agree(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on every rank (one all-reduce)."""
    import torch.distributed as dist

    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def freeze_outside_language_model(model: nn.Module) -> list[nn.Parameter]:
    """Freeze everything but the text decoder and its output head (vision tower, projector, ...)."""
    decoder = find_decoder(model)
    keep = {id(p) for p in decoder.parameters()} | {id(p) for _, p in decoder_parameters(model).values()}
    frozen = []
    for param in model.parameters():
        if id(param) not in keep:
            param.requires_grad_(False)
            frozen.append(param)
    log.info("froze %d tensors outside the language model (%d parameters)", len(frozen), sum(p.numel() for p in frozen))
    return frozen


def _report(
    vlm_dir: Path,
    reasoner: str | Path | None,
    data: str | Path,
    samples: list[ChatSample],
    options: TrainOptions,
    trainer: Any,
    train_output: Any,
    callback: DriftCallback | None,
    prior: DriftPrior | None,
    movement: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "tool": f"frankmerge {__version__}",
        "command": "drift-train",
        "method": "sft" if options.variant == PLAIN_SFT else f"drift-{options.variant}",
        "inputs": {
            "vlm": str(vlm_dir),
            "reasoner": None if reasoner is None else str(reasoner),
            "data": str(data),
            "samples": len(samples),
            "images": sum(len(s.images) for s in samples),
        },
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "drift": callback.summary if callback else None,
        "prior": None
        if prior is None
        else {
            "path": str(prior.path),
            "modules": list(prior.meta.modules),
            "tensors": len(prior.meta.entries),
            "delta_norm": prior.meta.total_norm,
        },
        "world_size": trainer.args.world_size,
        "steps": trainer.state.global_step,
        "train_loss": train_output.training_loss,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "losses": loss_curve(trainer.state.log_history),
        "movement_along_prior": movement,
        "memory": peak_memory(),
        "variants_available": list(VARIANTS),
    }

"""Attach a prior to a loaded VLM: find its decoder parameters, check them, register the guide.

The loaded model's parameter names (v5 in-memory names) need not equal the prior's on-disk
source names, so parameters are found structurally — the text decoder's ``layers[i]`` modules,
its embeddings, final norm and output head — and keyed by the same canonical names the prior
uses. Both checkpoint layouts of a family therefore attach identically, and anything that does
not line up stops with an error naming the first few tensors: a silent zero-hook run (plain SFT
under another name) cannot happen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frankmerge.checkpoints.dtypes import dtype_name
from frankmerge.drift.coverage import EMBED, HEAD, NORM, block_name, group_of, parse_modules
from frankmerge.drift.errors import DriftOptionError, DriftSetupError, PriorMismatchError
from frankmerge.drift.guidance import EPS, GuidanceHooks, Guide, PriorTerm, Target, parse_placement, parse_timing
from frankmerge.drift.prior_file import DriftPrior, load_prior
from frankmerge.drift.sharded import ShardedGuidanceHooks, shard_targets
from frankmerge.drift.sharding import is_dtensor, unsupported_sharding
from frankmerge.errors import human_size

log = logging.getLogger(__name__)

MAX_LISTED = 5


@dataclass(frozen=True)
class DriftConfig:
    """How the prior guides the gradients; the defaults are the paper's."""

    variant: str = "adaptive"
    alpha: float = -1.0
    placement: str = "device"
    delta_dtype: torch.dtype | None = None  # None: float32 beside float32 CPU parameters, else bf16
    timing: str = "backward"
    modules: tuple[str, ...] | None = None  # None: every group the prior covers
    eps: float = EPS


@dataclass
class DriftHandle:
    """What ``attach_drift`` did; ``remove()`` detaches every hook."""

    config: DriftConfig
    hooks: GuidanceHooks | ShardedGuidanceHooks
    guided: tuple[str, ...]  # model parameter names with a hook
    frozen: tuple[str, ...]  # covered parameters skipped because they do not require grad
    prior_path: Path
    delta_bytes: int  # resident Δ on this rank (its shards only under FSDP2)
    delta_dtypes: tuple[str, ...] = field(default=())
    sharded: bool = False  # FSDP2: DTensor parameters, guided shard by shard
    delta_bytes_read: int | None = None  # bytes of the prior file this rank read (sharded only)

    @property
    def num_hooks(self) -> int:
        return self.hooks.num_hooks

    @property
    def guide(self) -> Guide:
        return self.hooks.guide

    def remove(self) -> None:
        self.hooks.remove()

    def summary(self) -> dict[str, Any]:
        return {
            "variant": self.config.variant,
            "alpha": self.config.alpha,
            "timing": self.config.timing,
            "placement": self.config.placement,
            "delta_dtypes": list(self.delta_dtypes),
            "delta_bytes": self.delta_bytes,
            "sharded": self.sharded,
            "delta_bytes_read": self.delta_bytes_read,
            "collectives": getattr(self.hooks, "collectives", None),
            "hooks_attached": self.num_hooks,
            "covered_frozen_skipped": len(self.frozen),
            "guided_gradients": self.guide.calls,
            "mean_cos_g_delta": self.guide.mean_cos(),
            "prior": str(self.prior_path),
        }


def attach_drift(
    model: nn.Module,
    prior: DriftPrior | str | Path,
    *,
    variant: str = "adaptive",
    alpha: float = -1.0,
    placement: str = "device",
    delta_dtype: torch.dtype | None = None,
    timing: str = "backward",
    modules: tuple[str, ...] | str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    eps: float = EPS,
) -> DriftHandle:
    """Guide the gradients of ``model``'s covered decoder parameters with ``prior``; return the handle.

    ``timing="step"`` needs ``optimizer``. Raises ``PriorMismatchError`` naming the first few
    tensors when a covered parameter has no prior tensor, the prior holds tensors the model
    lacks, or shapes differ; ``DriftSetupError`` when no covered parameter is trainable.
    """
    prior = prior if isinstance(prior, DriftPrior) else load_prior(prior)
    config = DriftConfig(
        variant=Guide(variant).variant,
        alpha=float(alpha),
        placement=parse_placement(placement),
        delta_dtype=delta_dtype,
        timing=parse_timing(timing),
        modules=None if modules is None else parse_modules(modules),
        eps=eps,
    )
    if config.timing == "step" and optimizer is None:
        raise DriftOptionError("timing 'step' needs the optimizer whose step applies the guidance (optimizer=...)")
    covered = check_prior_fits(model, prior, config.modules)
    if not covered:
        raise DriftSetupError(f"{type(model).__name__}: no decoder parameter falls in groups {','.join(prior.meta.modules)}")
    trainable = {k: (name, p) for k, (name, p) in covered.items() if p.requires_grad}
    frozen = tuple(name for name, p in covered.values() if not p.requires_grad)
    if not trainable:
        raise DriftSetupError(
            f"none of the {len(covered)} covered decoder parameters requires grad (e.g. {next(iter(covered.values()))[0]}); "
            "DRIFT guides full fine-tuning of the covered tensors — unfreeze them (adapters such as LoRA are not supported)"
        )
    if frozen:
        log.warning("DRIFT: %d covered parameters are frozen and get no hook, e.g. %s", len(frozen), frozen[0])
    guide = Guide(config.variant, config.alpha, config.eps)
    sharded = any(is_dtensor(p) for _, p in trainable.values())
    hooks: GuidanceHooks | ShardedGuidanceHooks
    if sharded:
        if config.timing != "step" or optimizer is None:
            raise DriftSetupError(
                f"{next(iter(trainable.values()))[0]} is an FSDP2-sharded parameter: guidance runs on the reduced, "
                "sharded gradient at the optimizer step; use timing 'step' (--timing step) and pass the optimizer"
            )
        read_before = prior.bytes_read
        shard_list = shard_targets(
            trainable,
            prior,
            config.variant,
            dtype_of=lambda p: config.delta_dtype or _auto_dtype(p),
            placement=config.placement,
            eps=config.eps,
        )
        hooks = ShardedGuidanceHooks(guide, shard_list, optimizer)
        terms = [t.term for t in shard_list]
        names = tuple(t.name for t in shard_list)
    else:
        targets = _targets(trainable, prior, config)
        hooks = GuidanceHooks(guide, targets, config.timing, optimizer)
        terms = [t.term for t in targets]
        names = tuple(t.name for t in targets)
    handle = DriftHandle(
        config=config,
        hooks=hooks,
        guided=names,
        frozen=frozen,
        prior_path=prior.path,
        delta_bytes=sum(t.nbytes for t in terms),
        delta_dtypes=tuple(sorted({dtype_name(t.tensor.dtype) for t in terms})),
        sharded=sharded,
        delta_bytes_read=prior.bytes_read - read_before if sharded else None,
    )
    log.info(
        "DRIFT: attached %d hooks%s (%s, alpha=%g, %s timing, Δ %s in %s, %s)",
        handle.num_hooks,
        " on FSDP2 shards" if sharded else "",
        config.variant,
        config.alpha,
        config.timing,
        config.placement,
        "/".join(handle.delta_dtypes),
        human_size(handle.delta_bytes),
    )
    return handle


def check_prior_fits(
    model: nn.Module, prior: DriftPrior, modules: tuple[str, ...] | None = None
) -> dict[str, tuple[str, nn.Parameter]]:
    """The covered parameters (canonical name -> (model name, parameter)); raise if the prior does not fit.

    Cheap (shapes only), so a runner can call it before training starts.
    """
    groups = prior.meta.modules if modules is None else modules
    missing = [g for g in groups if g not in prior.meta.modules]
    if missing:
        raise PriorMismatchError(
            f"--modules {','.join(groups)}: the prior {prior.path} covers only {','.join(prior.meta.modules)}; "
            f"rebuild it with `frankmerge drift-prior --modules {','.join(groups)}`"
        )
    covered = {k: v for k, v in decoder_parameters(model).items() if group_of(k) in groups}
    _check_fit(covered, {k for k in prior.meta.entries if group_of(k) in groups}, prior)
    return covered


def decoder_parameters(model: nn.Module) -> dict[str, tuple[str, nn.Parameter]]:
    """Canonical name -> (the model's own parameter name, parameter) for its text decoder."""
    model = _unwrap(model)
    decoder = find_decoder(model)
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    found: dict[str, tuple[str, nn.Parameter]] = {}
    for index, layer in enumerate(decoder.layers):
        for suffix, param in layer.named_parameters():
            found[block_name(index, suffix)] = (names.get(id(param), suffix), param)
    embed = model.get_input_embeddings()
    if embed is not None and isinstance(getattr(embed, "weight", None), nn.Parameter):
        found[EMBED] = (names.get(id(embed.weight), EMBED), embed.weight)
    norm = getattr(decoder, "norm", None)
    if isinstance(getattr(norm, "weight", None), nn.Parameter):
        found[NORM] = (names.get(id(norm.weight), NORM), norm.weight)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if isinstance(weight, nn.Parameter) and (embed is None or weight is not embed.weight):
        found[HEAD] = (names.get(id(weight), HEAD), weight)
    return found


def _unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP/DeepSpeed (``.module``) or PEFT (``get_base_model``) wrappers."""
    for _ in range(8):
        inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else getattr(model, "module", None)
        if not isinstance(inner, nn.Module) or inner is model:
            return model
        model = inner
    return model


def find_decoder(model: nn.Module) -> nn.Module:
    """The text decoder: ``get_decoder()`` when it has ``layers``, else a ``language_model``/``text_model``."""
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            decoder = get_decoder()
        except (AttributeError, NotImplementedError, TypeError):
            decoder = None
        if isinstance(getattr(decoder, "layers", None), nn.ModuleList):
            return decoder
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("language_model", "text_model", "model") and isinstance(
            getattr(module, "layers", None), nn.ModuleList
        ):
            return module
    raise DriftSetupError(f"{type(model).__name__}: no text decoder with `layers` found; is this a transformers VLM?")


def _check_fit(covered: dict[str, tuple[str, nn.Parameter]], wanted: set[str], prior: DriftPrior) -> None:
    for name, param in covered.values():
        reason = unsupported_sharding(param)
        if reason is not None:
            raise DriftSetupError(f"{name} is {reason} (see docs/drift.md)")
    missing = [f"{name} ({k})" for k, (name, _) in covered.items() if k not in wanted]
    extra = sorted(k for k in wanted if k not in covered)
    shapes = [
        f"{name} {list(p.shape)} vs prior {list(prior.meta.entries[k].shape)}"
        for k, (name, p) in covered.items()
        if k in wanted and tuple(p.shape) != prior.meta.entries[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} covered parameters have no prior tensor: {_listed(missing)}")
    if extra:
        problems.append(f"{len(extra)} prior tensors match no parameter of this model: {_listed(extra)}")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ: {_listed(shapes)}")
    if problems:
        source = prior.meta.inputs.get("vlm", {})
        reference = source.get("reference", "?") if isinstance(source, dict) else "?"
        raise PriorMismatchError(
            f"prior {prior.path} (built from VLM {reference}, modules {','.join(prior.meta.modules)}) does not fit this "
            f"model: {'; '.join(problems)}. Build the prior from this model with `frankmerge drift-prior`"
        )


def _listed(items: list[str]) -> str:
    more = f", … (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def _targets(trainable: dict[str, tuple[str, nn.Parameter]], prior: DriftPrior, config: DriftConfig) -> list[Target]:
    targets = []
    for canonical, delta in prior.tensors(trainable):
        name, param = trainable[canonical]
        dtype = config.delta_dtype or _auto_dtype(param)
        term = PriorTerm.build(
            delta, config.variant, device=param.device, dtype=dtype, placement=config.placement, eps=config.eps
        )
        targets.append(Target(name, param, term))
    return targets


def _auto_dtype(param: nn.Parameter) -> torch.dtype:
    """float32 beside float32 CPU parameters, bf16 everywhere else.

    CPUs without native bf16 arithmetic convert every element, which costs more than the
    bandwidth bf16 saves (measured in benchmarks/drift_overhead.py). Never fp16: the components
    of a unit Δ̂ over tens of millions of elements fall into fp16's subnormal range.
    """
    if param.device.type == "cpu" and param.dtype == torch.float32:
        return torch.float32
    return torch.bfloat16

"""What a DRIFT run reports: how far the decoder moved along Δ, and the run's record.

Movement compares the trained weights θ_T with the VLM's weights θ_0 read back from its
checkpoint (one tensor at a time, so no copy of the model is kept during training) and with
Δ from the prior: cos(θ_T − θ_0, Δ), the distance travelled along Δ̂, and the fraction of the
way to the reasoner, ⟨θ_T − θ_0, Δ⟩ / ‖Δ‖².
"""

from __future__ import annotations

import json
import math
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frankmerge.drift.attach import decoder_parameters
from frankmerge.drift.coverage import canonical_names, group_of
from frankmerge.drift.prior_file import DriftPrior
from frankmerge.drift.sharded import reduce_by_group
from frankmerge.drift.sharding import is_dtensor, row_shard

REPORT_NAME = "drift_report.json"


@dataclass
class Movement:
    """Sums over a set of tensors of θ_T − θ_0 against Δ (float64)."""

    tensors: int = 0
    dot: float = 0.0  # ⟨θ_T − θ_0, Δ⟩
    moved_sq: float = 0.0  # ‖θ_T − θ_0‖²
    delta_sq: float = 0.0  # ‖Δ‖²

    def add(self, moved: torch.Tensor, delta: torch.Tensor) -> None:
        moved, delta = moved.double().reshape(-1), delta.double().reshape(-1)
        self.tensors += 1
        self.dot += float(moved @ delta)
        self.moved_sq += float(moved @ moved)
        self.delta_sq += float(delta @ delta)

    @property
    def cos(self) -> float:
        denominator = math.sqrt(self.moved_sq) * math.sqrt(self.delta_sq)
        return self.dot / denominator if denominator else 0.0

    def to_dict(self) -> dict[str, float | int]:
        delta_norm = math.sqrt(self.delta_sq)
        return {
            "tensors": self.tensors,
            "cos_moved_delta": self.cos,
            "moved_norm": math.sqrt(self.moved_sq),
            "delta_norm": delta_norm,
            "distance_along_delta": self.dot / delta_norm if delta_norm else 0.0,
            "fraction_of_delta": self.dot / self.delta_sq if self.delta_sq else 0.0,
        }


class InitialWeights:
    """canonical name -> θ_0 of that tensor, read from the VLM checkpoint on demand."""

    def __init__(self, vlm_dir: Path, layout: str | None = None) -> None:
        from frankmerge.drift.prior import open_input

        opened = open_input("vlm", str(vlm_dir), layout)
        self.checkpoint = opened.checkpoint
        self.names = canonical_names(opened.layout)

    def __call__(self, canonical: str) -> torch.Tensor:
        return self.checkpoint.load(self.names[canonical])

    def rows(self, canonical: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of θ_0 (an FSDP2 rank's shard), read alone."""
        name = self.names[canonical]
        shape = self.checkpoint.info(name).shape
        per_row = math.prod(shape[1:])
        values = self.checkpoint.read_chunk(name, start * per_row, (stop - start) * per_row).clone()
        self.checkpoint.release(name, start * per_row, (stop - start) * per_row)
        return values.reshape(stop - start, *shape[1:])

    def __enter__(self) -> InitialWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.checkpoint.close()


def prior_movement(model: nn.Module, prior: DriftPrior, theta0: Callable[[str], torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Movement along Δ over all covered tensors (``"all"``) and per module group."""
    params = decoder_parameters(model)
    if any(is_dtensor(p) for _, p in params.values()):
        return sharded_prior_movement(params, prior, theta0)  # type: ignore[arg-type]
    totals: dict[str, Movement] = {"all": Movement()}
    for canonical, delta in prior.tensors(prior.names):
        if canonical not in params:
            continue
        trained = params[canonical][1].detach().to("cpu", torch.float64)
        moved = trained - theta0(canonical).to(torch.float64)
        for key in ("all", group_of(canonical) or "other"):
            totals.setdefault(key, Movement()).add(moved, delta)
    return {key: value.to_dict() for key, value in totals.items()}


def sharded_prior_movement(
    params: dict[str, tuple[str, nn.Parameter]], prior: DriftPrior, theta0: InitialWeights
) -> dict[str, dict[str, Any]]:
    """``prior_movement`` on FSDP2 shards: every rank sums over its rows (of θ_T, θ_0 and Δ), one all-reduce.

    A collective: every rank must call it.
    """
    names = [c for c in prior.names if c in params]
    shards = {c: row_shard(params[c][1]) for c in names}
    totals: dict[str, Movement] = {"all": Movement()}
    for canonical, delta in prior.rows((c, shards[c].start, shards[c].stop) for c in names):
        shard = shards[canonical]
        param = params[canonical][1]
        trained = (param.to_local() if is_dtensor(param) else param[shard.start : shard.stop]).detach()  # type: ignore[attr-defined]
        moved = trained.to("cpu", torch.float64) - theta0.rows(canonical, shard.start, shard.stop).to(torch.float64)
        for key in ("all", group_of(canonical) or "other"):
            totals.setdefault(key, Movement()).add(moved, delta)
    sums = torch.tensor([[m.dot, m.moved_sq, m.delta_sq] for m in totals.values()], dtype=torch.float64)
    group = next((s.group for s in shards.values() if s.group is not None), None)
    reduce_by_group(sums, [group] * len(totals))
    for movement, (dot, moved_sq, delta_sq) in zip(totals.values(), sums.tolist(), strict=True):
        movement.dot, movement.moved_sq, movement.delta_sq = dot, moved_sq, delta_sq
    return {key: value.to_dict() for key, value in totals.items()}


def fingerprint(params: list[nn.Parameter]) -> list[tuple[float, float]]:
    """(sum, sum of squares) per tensor in float64: a cheap check that frozen weights did not move.

    Of this rank's shard for an FSDP2 parameter (no collective).
    """
    with torch.no_grad():
        local = [p.to_local() if is_dtensor(p) else p for p in params]  # type: ignore[attr-defined]
        return [(float(p.double().sum()), float(p.double().square().sum())) for p in local]


def peak_memory() -> dict[str, float]:
    """Peak host RSS of this process and, on CUDA, peak allocated device memory, in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = {"host_peak_rss_mb": rss / (1 << 20) if sys.platform == "darwin" else rss / 1024}
    if torch.cuda.is_available():
        peak["device_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / (1 << 20)
    return peak


def loss_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    keys = ("step", "epoch", "loss", "grad_norm", "learning_rate")
    return [{k: entry[k] for k in keys if k in entry} for entry in log_history if "loss" in entry]


def write_report(out: Path, report: dict[str, Any]) -> Path:
    path = out / REPORT_NAME
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path

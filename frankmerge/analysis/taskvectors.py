"""``frankmerge analyze``: task-vector statistics per decoder block and module type, streamed.

For each block l and each module type (attention, MLP, norms) it accumulates, over chunked
reads with float64 sums (the merge's fused kernels, ``frankmerge.kernels``): ‖τ_V‖, ‖τ_R‖, ‖θ_0‖, cos(τ_V, τ_R), the
sign-conflict rate, and DRIFT's parameter-space view ‖θ_V − θ_R‖ and cos(θ_V, θ_R). Memory is a
few chunk buffers whatever the model size; each tensor is read once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace

import torch

from frankmerge import kernels, workers
from frankmerge.doctor import check_pair
from frankmerge.errors import NonFiniteError, RecipeError
from frankmerge.inputs import RoleInput, open_inputs
from frankmerge.methods.frank import BlockStats, frank_coefficients, prior_weights
from frankmerge.progress import progress_bar
from frankmerge.reasoner_base import reasoner_reader
from frankmerge.recipe import MergeRecipe, Prior
from frankmerge.streaming import Source, Workspace, dot64, fused, read_arrays, release

GROUPS = ("attention", "mlp", "norms", "other")
BLOCK = "block"  # the group name of a whole block's totals
DEFAULT_CHUNK = 1 << 20  # as the merge: buffers that stay in the CPU caches


def module_group(suffix: str) -> str:
    """Module type of a block tensor from its suffix: norms first (q_norm lives under self_attn)."""
    module = suffix.removesuffix(".weight").removesuffix(".bias")
    if "norm" in module.rsplit(".", 1)[-1]:
        return "norms"
    if module.startswith(("self_attn.", "attn.", "attention.")):
        return "attention"
    if module.startswith(("mlp.", "feed_forward.")):
        return "mlp"
    return "other"


@dataclass
class Sums:
    """Running sums over the entries of a set of tensors (float64, exact integer counts)."""

    numel: int = 0
    tau_vv: float = 0.0
    tau_rr: float = 0.0
    tau_vr: float = 0.0
    theta_00: float = 0.0
    theta_vv: float = 0.0
    theta_rr: float = 0.0
    theta_vr: float = 0.0
    diff_sq: float = 0.0  # ‖θ_V − θ_R‖², summed directly (no cancellation when θ_V ≈ θ_R)
    conflicts: int = 0  # entries where τ_V and τ_R are both nonzero with opposite signs

    def add(self, other: Sums) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class GroupStats:
    """Statistics of one block (``group`` = "block") or of one module type inside it."""

    index: int  # 0-based block index, as in tensor names and merge_report.json
    group: str
    numel: int
    norm_v: float  # ‖τ_V‖
    norm_r: float  # ‖τ_R‖
    norm_0: float  # ‖θ_0‖
    rel_norm_v: float  # ‖τ_V‖ / ‖θ_0‖
    rel_norm_r: float
    cos_vr: float  # cos(τ_V, τ_R)
    sign_conflict: float  # conflicting entries / numel
    dist_vr: float  # ‖θ_V − θ_R‖
    rel_dist_vr: float  # ‖θ_V − θ_R‖ / ‖θ_0‖
    cos_theta_vr: float  # cos(θ_V, θ_R)

    @classmethod
    def from_sums(cls, index: int, group: str, s: Sums) -> GroupStats:
        norm_v, norm_r, norm_0, dist = (math.sqrt(x) for x in (s.tau_vv, s.tau_rr, s.theta_00, s.diff_sq))
        return cls(
            index=index,
            group=group,
            numel=s.numel,
            norm_v=norm_v,
            norm_r=norm_r,
            norm_0=norm_0,
            rel_norm_v=_ratio(norm_v, norm_0),
            rel_norm_r=_ratio(norm_r, norm_0),
            cos_vr=_ratio(s.tau_vr, norm_v * norm_r, empty=0.0),
            sign_conflict=_ratio(s.conflicts, s.numel, empty=0.0),
            dist_vr=dist,
            rel_dist_vr=_ratio(dist, norm_0),
            cos_theta_vr=_ratio(s.theta_vr, math.sqrt(s.theta_vv * s.theta_rr), empty=1.0),
        )

    @property
    def layer(self) -> int:
        return self.index + 1


def _ratio(num: float, den: float, empty: float = math.nan) -> float:
    return num / den if den > 0 else empty


@dataclass(frozen=True)
class TaskVectorAnalysis:
    vlm: str
    reasoner: str
    base: str
    num_blocks: int
    rows: tuple[GroupStats, ...]  # per block: one row per present module type, then the block total
    alpha: float  # the α used for the Eq. 16 column
    alpha_source: str
    lambda_v_eq13: tuple[float, ...]
    lambda_v_eq16: tuple[float, ...]
    warnings: tuple[tuple[str, str], ...]  # (code, message)
    seconds: float
    compatibility: dict[str, object] | None = None  # the pair doctor's check (frankmerge.doctor)
    reasoner_base: str | None = None  # the reasoner's own base, when τ_R is taken over it

    @property
    def blocks(self) -> tuple[GroupStats, ...]:
        return tuple(r for r in self.rows if r.group == BLOCK)

    def group_rows(self, group: str) -> tuple[GroupStats, ...]:
        return tuple(r for r in self.rows if r.group == group)


def analyze_task_vectors(
    vlm: str,
    reasoner: str,
    base: str,
    *,
    alpha: float | None = None,
    alpha_source: str | None = None,
    profile_layers: int | None = None,
    allow_pickle: bool = False,
    allow_download: bool = False,
    allow_family_mismatch: bool = False,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = False,
    reasoner_base: str | None = None,
    threads: int | None = None,
) -> TaskVectorAnalysis:
    """Stream the three decoders block by block; ``alpha`` is the Eq. 16 decay used for the λ_V column.

    ``threads`` caps the threads that compute (default: every core the process may run on); the
    statistics are the same bit for bit for any value, as the merge's (``frankmerge.workers``).

    ``profile_layers`` (the layer count of the profile ``alpha`` came from) must match the VLM.
    With ``reasoner_base``, τ_R = θ_R − θ_0R, and θ_R in the statistics stands for θ_0 + τ_R.
    """
    from frankmerge.analysis.diagnostics import diagnose

    started = time.perf_counter()
    recipe = MergeRecipe(
        vlm=vlm,
        reasoner=reasoner,
        base=base,
        reasoner_base=reasoner_base,
        prior=Prior(kind="none"),
        allow_pickle=allow_pickle,
        allow_download=allow_download,
        allow_family_mismatch=allow_family_mismatch,
    )
    inputs = open_inputs(recipe)
    try:
        num_blocks = inputs["vlm"].layout.num_blocks
        if profile_layers is not None and profile_layers != num_blocks:
            raise RecipeError(
                f"--profile: profiled a model with {profile_layers} layers, but the VLM has {num_blocks}; "
                "profile this VLM with `frankmerge profile`"
            )
        pair = check_pair(inputs)
        with workers.using(workers.available_cores() if threads is None else threads):
            rows = _stream(inputs, chunk, progress)
    finally:
        for item in inputs.values():
            item.checkpoint.close()
    blocks = [r for r in rows if r.group == BLOCK]
    used_alpha = 0.0 if alpha is None else alpha
    source = alpha_source or ("given" if alpha is not None else "default: α = 0, so w_V = 1/L in every block")
    eq13 = tuple(_lambda_v(r, 0.5) for r in blocks)
    eq16 = tuple(_lambda_v(r, w) for r, w in zip(blocks, prior_weights("exponential", len(blocks), used_alpha), strict=True))
    analysis = TaskVectorAnalysis(
        vlm=vlm,
        reasoner=reasoner,
        base=base,
        num_blocks=len(blocks),
        rows=tuple(rows),
        alpha=used_alpha,
        alpha_source=source,
        lambda_v_eq13=eq13,
        lambda_v_eq16=eq16,
        warnings=(),
        seconds=0.0,
        reasoner_base=reasoner_base,
    )
    found = [("config", line) for line in pair.function_warnings()] + [("lineage", line) for line in pair.lineage_findings]
    warnings = tuple(found) + tuple((w.code, w.message) for w in diagnose(analysis))
    return replace(analysis, warnings=warnings, seconds=time.perf_counter() - started, compatibility=pair.to_dict())


def _lambda_v(stats: GroupStats, w_v: float) -> float:
    block = BlockStats(stats.index, stats.norm_v**2, stats.norm_r**2, stats.cos_vr * stats.norm_v * stats.norm_r, stats.norm_0**2)
    return frank_coefficients(block, w_v).lambda_v


def _stream(inputs: dict[str, RoleInput], chunk: int, progress: bool) -> list[GroupStats]:
    vlm, reasoner, base = inputs["vlm"], inputs["reasoner"], inputs["base"]
    ws = Workspace(chunk, torch.float32)
    scratch = torch.empty(chunk, dtype=torch.float32)
    rows: list[GroupStats] = []
    for index in progress_bar(range(vlm.layout.num_blocks), desc="analysing blocks", unit="block", disable=not progress):
        groups: dict[str, Sums] = {}
        for suffix, name_v in vlm.layout.blocks[index].items():
            sources = (
                Source("vlm", vlm.checkpoint, name_v),
                Source("reasoner", reasoner_reader(inputs, index), reasoner.layout.blocks[index][suffix]),  # type: ignore[arg-type]
                Source("base", base.checkpoint, base.layout.blocks[index][suffix]),
            )
            numel = vlm.checkpoint.info(name_v).numel
            groups.setdefault(module_group(suffix), Sums()).add(tensor_sums(ws, scratch, sources, numel))
        total = Sums()
        for group in GROUPS:
            if group in groups:
                total.add(groups[group])
                rows.append(GroupStats.from_sums(index, group, groups[group]))
        rows.append(GroupStats.from_sums(index, BLOCK, total))
    return rows


def tensor_sums(ws: Workspace, scratch: torch.Tensor, sources: tuple[Source, Source, Source], numel: int) -> Sums:
    """All sums of one tensor, chunk by chunk; NaN/Inf in any input stops with the tensor's name."""
    vlm, reasoner, base = sources
    sums = Sums(numel=numel)
    use_kernels = fused(*sources)
    for start in range(0, numel, ws.chunk):
        count = min(ws.chunk, numel - start)
        if use_kernels:
            arrays = read_arrays(sources, start, count)
            parts = workers.current().map(lambda lo, hi, a=arrays: kernels.analysis_sums(*(x[lo:hi] for x in a)), count)
            release(sources, start, count)
            for theta_vv, theta_rr, theta_vr, theta_00, diff_sq, tau_vv, tau_rr, tau_vr, conflicts in parts:
                # Added piece by piece in order: the same sums for any thread count.
                sums.add(
                    Sums(0, tau_vv, tau_rr, tau_vr, theta_00, theta_vv, theta_rr, theta_vr, diff_sq, int(conflicts))
                )  # fmt: skip
            continue
        theta_v, theta_r, theta_0 = (torch.from_numpy(ws.read_f32(s, start, count)) for s in sources)
        sums.theta_vv += dot64(theta_v, theta_v)
        sums.theta_rr += dot64(theta_r, theta_r)
        sums.theta_vr += dot64(theta_v, theta_r)
        sums.theta_00 += dot64(theta_0, theta_0)
        diff = scratch[:count].copy_(theta_v).sub_(theta_r)
        sums.diff_sq += dot64(diff, diff)
        tau_v, tau_r = theta_v.sub_(theta_0), theta_r.sub_(theta_0)
        sums.tau_vv += dot64(tau_v, tau_v)
        sums.tau_rr += dot64(tau_r, tau_r)
        sums.tau_vr += dot64(tau_v, tau_r)
        sums.conflicts += int(((tau_v > 0) & (tau_r < 0)).sum()) + int(((tau_v < 0) & (tau_r > 0)).sum())
    if not all(math.isfinite(x) for x in (sums.theta_vv, sums.theta_rr, sums.theta_00)):
        bad = next(s for s, x in zip(sources, (sums.theta_vv, sums.theta_rr, sums.theta_00), strict=True) if not math.isfinite(x))
        raise NonFiniteError(f"--{bad.role} tensor {bad.name!r} contains NaN or Inf (or overflows float32); fix the checkpoint")
    return sums

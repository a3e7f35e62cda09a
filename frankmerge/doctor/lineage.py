"""Does each fine-tune descend from ``--base``? Measured from the weights, in seconds at any size.

A task vector τ = θ_X − θ_0 is only a task vector when θ_0 is X's base. Fine-tunes sit a few per
cent from their base (‖τ‖/‖θ_0‖ per block); independently trained weights of the same shape sit
near √2 ≈ 1.4. DeepSeek-R1-Distill-Qwen-7B descends from Qwen2.5-Math-7B, so measured against
Qwen2.5-7B its "task vector" is mostly Qwen2.5-Math's continued pretraining, and the two roles
sit at very different distances from ``--base``. Distances are estimated on a few blocks and, in
each tensor, on evenly spaced rows: a few MB read per role whatever the model's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from frankmerge.casting import as_float64

if TYPE_CHECKING:
    from frankmerge.inputs import RoleInput

SAMPLED_BLOCKS = 3
SAMPLED_ROWS = 64
FAR_RATIO = 3.0  # one role this many times farther from --base than the other: ask whether it is its base
UNRELATED = 1.0  # farther than θ_ref is from zero: θ_ref explains none of the weights
CLOSER_FACTOR = 0.7  # a candidate base this much closer than --base is worth naming


@dataclass
class Distances:
    """Relative distances ‖θ_X − θ_ref‖/‖θ_ref‖ per sampled block, for one role against one reference."""

    role: str
    reference: str
    per_block: dict[int, float] = field(default_factory=dict)
    problem: str | None = None  # why the distance could not be measured (shapes differ, ...)

    @property
    def mean(self) -> float | None:
        return sum(self.per_block.values()) / len(self.per_block) if self.per_block else None

    def to_dict(self) -> dict[str, object]:
        mean = self.mean
        return {
            "role": self.role,
            "reference": self.reference,
            "per_block": {str(k): round(v, 6) for k, v in self.per_block.items()},
            "mean": None if mean is None else round(mean, 6),
            "problem": self.problem,
        }


def sampled_blocks(num_blocks: int, count: int = SAMPLED_BLOCKS) -> list[int]:
    """First, middle and last block (fewer for shallow models)."""
    return sorted({round(i * (num_blocks - 1) / max(1, count - 1)) for i in range(count)})


def relative_distances(pairs: list[tuple[RoleInput, RoleInput, str]], blocks: list[int]) -> list[Distances]:
    """‖θ_a − θ_ref‖ / ‖θ_ref‖ on the sampled rows of ``blocks`` for each (a, ref, label) pair; a shape
    mismatch is reported, not raised.

    One pass over the tensors: each role's rows of a tensor are read once, however many pairs it is
    in (the VLM is compared with --base and with the reasoner), and only one tensor's rows per role
    are held at a time.
    """
    results = [Distances(a.role, label) for a, _, label in pairs]
    live = []
    for result, (a, ref, _) in zip(results, pairs, strict=True):
        if a.layout.num_blocks != ref.layout.num_blocks:
            result.problem = f"{a.layout.num_blocks} vs {ref.layout.num_blocks} decoder blocks"
        else:
            live.append(result)
    by_result = {id(result): pair for result, pair in zip(results, pairs, strict=True)}
    for index in blocks:
        sums = {id(result): [0.0, 0.0] for result in live}
        suffixes = sorted({k for r in live for k in by_result[id(r)][0].layout.blocks[index]})
        for suffix in suffixes:
            rows: dict[int, np.ndarray[Any, Any]] = {}
            for result in [r for r in live if r.problem is None]:
                a, ref, _ = by_result[id(result)]
                block_a, block_r = a.layout.blocks[index], ref.layout.blocks[index]
                if suffix not in block_a or suffix not in block_r:
                    continue
                info_a, info_r = a.checkpoint.info(block_a[suffix]), ref.checkpoint.info(block_r[suffix])
                if info_a.shape != info_r.shape:
                    result.problem = f"block {index} {suffix}: shape {list(info_a.shape)} vs {list(info_r.shape)}"
                    result.per_block.clear()
                    continue
                for item, name in ((a, block_a[suffix]), (ref, block_r[suffix])):
                    if id(item) not in rows:
                        rows[id(item)] = sampled_rows(item, name)
                values_a, values_r = rows[id(a)], rows[id(ref)]
                sums[id(result)][0] += float(np.sum((values_a - values_r) ** 2))
                sums[id(result)][1] += float(np.sum(values_r**2))
        for result in live:
            if result.problem is None:
                diff_sq, ref_sq = sums[id(result)]
                result.per_block[index] = math.sqrt(diff_sq / ref_sq) if ref_sq > 0 else math.inf
    return results


def sampled_rows(item: RoleInput, name: str, rows: int = SAMPLED_ROWS) -> np.ndarray[Any, Any]:
    """Evenly spaced rows of one tensor as float64 (the whole tensor when it has few rows)."""
    info = item.checkpoint.info(name)
    n_rows = info.shape[0] if info.shape else 1
    width = info.numel // max(1, n_rows)
    picks = range(n_rows) if n_rows <= rows else sorted({round(i * (n_rows - 1) / (rows - 1)) for i in range(rows)})
    parts = []
    for row in picks:
        parts.append(as_float64(item.checkpoint.read_array(name, row * width, width), info.dtype))
        item.checkpoint.release(name, row * width, width)
    return np.concatenate(parts)


@dataclass
class Lineage:
    """Each fine-tune's distance to --base, to each other and to every candidate base."""

    to_base: dict[str, Distances]
    between: Distances
    candidates: dict[str, dict[str, Distances]] = field(default_factory=dict)  # candidate -> role -> distances
    findings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "method": f"‖θ_X − θ_ref‖/‖θ_ref‖ on {SAMPLED_ROWS} evenly spaced rows per tensor of blocks "
            f"{sorted(self.between.per_block) or '-'}",
            "to_base": {role: d.to_dict() for role, d in self.to_base.items()},
            "vlm_to_reasoner": self.between.to_dict(),
            "candidates": {c: {role: d.to_dict() for role, d in by_role.items()} for c, by_role in self.candidates.items()},
            "findings": list(self.findings),
        }


def measure_lineage(inputs: dict[str, RoleInput], candidates: dict[str, RoleInput] | None = None) -> Lineage:
    """Distances of the VLM to --base and of the reasoner to its own base (--reasoner-base, else
    --base), of the two to each other, and of both to each candidate base."""
    base = inputs["base"]
    own = inputs.get("reasoner_base")
    vlm, reasoner = inputs["vlm"], inputs["reasoner"]
    pairs = [
        (vlm, base, "base"),
        (reasoner, own or base, "reasoner_base" if own else "base"),
        (vlm, reasoner, "reasoner"),
    ]
    for label, candidate in (candidates or {}).items():
        pairs += [(inputs[role], candidate, label) for role in ("vlm", "reasoner")]
    measured = relative_distances(pairs, sampled_blocks(base.layout.num_blocks))
    lineage = Lineage({"vlm": measured[0], "reasoner": measured[1]}, measured[2])
    for i, label in enumerate(candidates or {}):
        lineage.candidates[label] = {"vlm": measured[3 + 2 * i], "reasoner": measured[4 + 2 * i]}
    lineage.findings = lineage_findings(lineage)
    return lineage


def lineage_findings(lineage: Lineage) -> list[str]:
    """Plain verdicts: a role far from --base, one role much farther than the other, a closer candidate."""
    found = []
    means = {role: d.mean for role, d in lineage.to_base.items()}
    flags = {role: "--reasoner-base" if d.reference == "reasoner_base" else "--base" for role, d in lineage.to_base.items()}
    for role, mean in means.items():
        if mean is not None and mean > UNRELATED:
            found.append(
                f"the {role} sits at relative distance {mean:.2f} from {flags[role]}, farther than it is from zero "
                f"(fine-tunes sit within a few tenths, unrelated weights near 1.4): {flags[role]} is not its base"
            )
    v, r = means["vlm"], means["reasoner"]
    if v and r and flags["reasoner"] == "--base" and max(v, r) / min(v, r) >= FAR_RATIO:
        far, near = ("reasoner", "VLM") if r > v else ("VLM", "reasoner")
        fix = " (see --reasoner-base)" if far == "reasoner" else ""
        found.append(
            f"the {far} moved {max(v, r) / min(v, r):.1f}× farther from --base than the {near}: either --base is not "
            f"its base{fix}, or its training rewrote much of the decoder, the regime where the testbed's merges stop "
            "transferring (docs/testbed.md)"
        )
    for role in ("vlm", "reasoner"):
        current = means[role]
        ranked = sorted(
            ((d[role].mean, label) for label, d in lineage.candidates.items() if d[role].mean is not None),
            key=lambda pair: pair[0],
        )
        if ranked and current is not None and ranked[0][0] < CLOSER_FACTOR * current:
            hint = (
                ": likely its own base; --reasoner-base takes τ_R over it, leaving that base's training out of τ_R "
                "(measure both: docs/testbed.md, two bases)"
                if role == "reasoner"
                else ""
            )
            found.append(f"the {role} is nearer {ranked[0][1]} ({ranked[0][0]:.3f}) than {flags[role]} ({current:.3f}){hint}")
    return found

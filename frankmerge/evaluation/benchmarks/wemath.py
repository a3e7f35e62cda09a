"""WeMath (testmini): the official answer rule and four-dimensional metrics (IK, IG, CM, RM).

Each multi-step problem (key ``2steps_multi`` / ``3steps_multi``) shares its ``ID`` with its
one-step sub-problems (``2steps_1``, ``2steps_2``, ...). Per group, with the sub-problems' and the
multi-step problem's correctness (We-Math ``evaluation/four_dimensional_metrics.py``):

* IK (insufficient knowledge): some sub-problem wrong and the multi-step problem wrong
* IG (inadequate generalization): every sub-problem right, the multi-step problem wrong
* CM (complete mastery): strict = every sub right and multi right; loose = any sub right and multi right
* RM (rote memorization): strict = some sub wrong and multi right; loose = every sub wrong and multi right
* score = (N − 0.5·IG − RM − IK) / N, strict and loose; RM rate = RM / (CM + RM)

N is the number of complete groups in the data (525 on the full testmini, which the official
script hard-codes); incomplete groups are reported and left out of these metrics.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from frankmerge.evaluation.benchmarks.base import Aggregate, Benchmark, breakdown, instruction, percent
from frankmerge.evaluation.benchmarks.common import read_gold, row_images
from frankmerge.evaluation.data.tables import Table, require_columns
from frankmerge.evaluation.items import Item, Judgement

_KEY = re.compile(r"^(\d)steps_(\d|multi)$")
_STEP_NAMES = {"1": "one-step", "2": "two-step", "3": "three-step"}
OFFICIAL_INSTRUCTION = (
    "Regarding the format, please answer following the template below, and be sure to include two <> symbols:\n"
    "<Thought process>: <<your thought process>> <Answer>: <<your option>>"
)
_PREAMBLE = (
    "Now, we require you to solve a multiple-choice math question. "
    "Please briefly describe your thought process and provide the final answer(option)."
)


def official_answer(response: str) -> str | None:
    """The official rule: text after the last "Answer", minus ``<>:.``, first character if a letter A-H."""
    tail = re.sub(r"[><:.]", "", response.split("Answer")[-1].strip()).strip()
    return tail[0] if tail and tail[0] in "ABCDEFGH" else None


def load(table: Table, style: str) -> list[Item]:
    require_columns(table, "wemath", "ID", "key", "question", "option", "answer")
    items = []
    for row in table.rows:
        key = str(row["key"])
        identifier = f"{row['ID']}@{key}"
        match = _KEY.match(key)
        level = ("one-step" if match.group(2) != "multi" else _STEP_NAMES[match.group(1)]) if match else "other"
        body = f"Question: {row['question']}\nOption: {row['option']}"
        kind = "multiple-choice"
        prompt = (
            f"{_PREAMBLE}\n{body}\n{OFFICIAL_INSTRUCTION}" if style == "official" else f"{body}\n\n{instruction(kind, style, '')}"
        )
        items.append(
            Item(
                id=identifier,
                prompt=prompt,
                images=row_images(table, row, ("image", "image_path"), identifier)[:1],
                gold=read_gold(row["answer"]),
                kind=kind,
                groups=MappingProxyType({"steps": (level,)}),
                difficulty=level,
                extra=MappingProxyType({"group": str(row["ID"]), "key": key}),
            )
        )
    return items


def judge(item: Item, answer: str, rng: random.Random) -> Judgement:
    parsed = official_answer(answer)
    return Judgement(parsed or "", parsed is not None and parsed == item.gold, parse_failed=parsed is None)


@dataclass(frozen=True)
class FourDimensional:
    n_groups: int
    ik: int
    ig: int
    cm_strict: int
    cm_loose: int
    rm_strict: int
    rm_loose: int


def four_dimensional(groups: Sequence[tuple[Sequence[bool], bool]]) -> FourDimensional:
    """Counts of IK, IG, CM and RM over (sub-problem results, multi-step result) groups."""
    counts = defaultdict(int)
    for subs, multi in groups:
        every, some = all(subs), any(subs)
        counts["ig"] += every and not multi
        counts["ik"] += (not every) and not multi
        counts["cm_strict"] += every and multi
        counts["cm_loose"] += some and multi
        counts["rm_strict"] += (not every) and multi
        counts["rm_loose"] += (not some) and multi
    return FourDimensional(
        n_groups=len(groups), **{k: counts[k] for k in ("ik", "ig", "cm_strict", "cm_loose", "rm_strict", "rm_loose")}
    )


def _groups(items: Sequence[Item], judgements: Sequence[Judgement]) -> tuple[dict[str, list], int]:
    """Complete groups keyed by "<steps>:<ID>" as [sub results in order, multi result]."""
    found: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)
    for item, judgement in zip(items, judgements, strict=True):
        match = _KEY.match(item.extra["key"])
        if match:
            found[(match.group(1), item.extra["group"])][match.group(2)] = judgement.correct
    complete: dict[str, list] = {}
    for (steps, group), results in found.items():
        wanted = [str(i) for i in range(1, int(steps) + 1)]
        if "multi" in results and all(w in results for w in wanted):
            complete[f"{steps}:{group}"] = [[results[w] for w in wanted], results["multi"]]
    return complete, len(found) - len(complete)


def aggregate(items: Sequence[Item], judgements: Sequence[Judgement]) -> Aggregate:
    complete, incomplete = _groups(items, judgements)
    fd = four_dimensional([(subs, multi) for subs, multi in complete.values()])
    n = fd.n_groups

    def score(rm: int) -> float:
        return 100.0 * (n - 0.5 * fd.ig - rm - fd.ik) / n if n else 0.0

    sub_results = [r for subs, _ in complete.values() for r in subs]
    multi = {s: [m for key, (_, m) in complete.items() if key.startswith(f"{s}:")] for s in ("2", "3")}
    metrics = {
        "score_strict": score(fd.rm_strict),
        "score_loose": score(fd.rm_loose),
        "IK": percent(fd.ik, n),
        "IG": percent(fd.ig, n),
        "CM_strict": percent(fd.cm_strict, n),
        "CM_loose": percent(fd.cm_loose, n),
        "RM_strict": percent(fd.rm_strict, fd.cm_strict + fd.rm_strict),
        "RM_loose": percent(fd.rm_loose, fd.cm_loose + fd.rm_loose),
        "S1": percent(sum(sub_results), len(sub_results)),
        "S2": percent(sum(multi["2"]), len(multi["2"])),
        "S3": percent(sum(multi["3"]), len(multi["3"])),
        "groups": float(n),
        "incomplete_groups": float(incomplete),
        **{f"{k}_count": float(getattr(fd, k)) for k in ("ik", "ig", "cm_strict", "cm_loose", "rm_strict", "rm_loose")},
    }
    return Aggregate(
        metric="score (strict)",
        score=metrics["score_strict"],
        breakdowns=(breakdown(items, judgements, "steps"),),
        metrics=MappingProxyType(metrics),
    )


BENCHMARK = Benchmark(
    name="wemath",
    title="WeMath (testmini)",
    official=True,
    scoring_note="official answer rule (first letter after the last 'Answer') on the extracted span; official "
    "four-dimensional metrics, N = complete groups in the data",
    load=load,
    judge=judge,
    aggregate=aggregate,
    default_split="testmini",
)

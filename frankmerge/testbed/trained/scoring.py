"""Free-generation scoring: exact match on the answer span, 95% intervals, think-block statistics.

Model-agnostic and built on ``frankmerge.evaluation.extract`` only (answer after ``</think>``, an
unclosed block counts as truncated), so a benchmark harness can score its generations with it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from frankmerge.evaluation.extract import THINK_CLOSE, THINK_OPEN, extract_answer, score_exact

Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion: well-behaved at 0, 1 and small n, unlike the normal one."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if correct == 0 else max(0.0, centre - half)  # exact at the ends, not 1e-18
    high = 1.0 if correct == n else min(1.0, centre + half)
    return (low, high)


def well_formed_think(text: str) -> bool:
    """Exactly one think block, opening the reply and closed, with a non-empty answer after it."""
    stripped = text.strip()
    return (
        stripped.startswith(THINK_OPEN)
        and stripped.count(THINK_OPEN) == 1
        and stripped.count(THINK_CLOSE) == 1
        and bool(stripped.split(THINK_CLOSE, 1)[1].strip())
    )


@dataclass(frozen=True)
class GenerationScore:
    """Accuracy of free generations with its 95% Wilson interval and how the replies were shaped."""

    n: int
    correct: int
    accuracy: float
    ci95: tuple[float, float]
    well_formed_think: float  # share of replies with one closed think block and an answer
    think_closed: float
    think_unclosed: float  # ran out of tokens inside the block: scored wrong
    think_absent: float
    mean_tokens: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def score_generations(
    texts: Sequence[str], golds: Sequence[str], n_tokens: Sequence[int], prompt_opened_think: bool = False
) -> GenerationScore:
    """Score replies against gold answers with the shared extractor's exact match."""
    if not (len(texts) == len(golds) == len(n_tokens)):
        raise ValueError(f"{len(texts)} texts, {len(golds)} golds and {len(n_tokens)} token counts")
    n = len(texts)
    correct = sum(score_exact(t, g, prompt_opened_think) for t, g in zip(texts, golds, strict=True))
    states = [extract_answer(t, prompt_opened_think).think for t in texts]

    def share(count: int) -> float:
        return count / n if n else math.nan

    return GenerationScore(
        n=n,
        correct=correct,
        accuracy=share(correct),
        ci95=wilson_interval(correct, n),
        well_formed_think=share(sum(well_formed_think(t) for t in texts)),
        think_closed=share(states.count("closed")),
        think_unclosed=share(states.count("unclosed")),
        think_absent=share(states.count("absent")),
        mean_tokens=sum(n_tokens) / n if n else math.nan,
    )

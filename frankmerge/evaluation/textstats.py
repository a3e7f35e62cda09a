"""Reflection-word counts: the FRANK paper's evidence that a merged VLM reflects ("Wait": 20,125 vs 0)."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Whole words, case-insensitive; "Hmm" also matches "Hmmm". The whole reply is counted,
# thinking included, because that is where reflection happens.
REFLECTION_WORDS: tuple[str, ...] = ("Wait", "Hmm", "Alternatively", "Check", "Mistake")
_PATTERNS = {
    "Wait": re.compile(r"\bwait\b", re.I),
    "Hmm": re.compile(r"\bhmm+\b", re.I),
    "Alternatively": re.compile(r"\balternatively\b", re.I),
    "Check": re.compile(r"\bcheck\b", re.I),
    "Mistake": re.compile(r"\bmistake\b", re.I),
}


def reflection_counts(text: str) -> dict[str, int]:
    """Occurrences of each reflection word in one text."""
    return {word: len(_PATTERNS[word].findall(text)) for word in REFLECTION_WORDS}


def total_reflection_counts(texts: Iterable[str]) -> dict[str, int]:
    """Reflection-word counts summed over many texts."""
    totals = dict.fromkeys(REFLECTION_WORDS, 0)
    for text in texts:
        for word, n in reflection_counts(text).items():
            totals[word] += n
    return totals

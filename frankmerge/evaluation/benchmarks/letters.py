"""Option letters in an answer span: the rule-based stand-in for GPT answer extraction."""

from __future__ import annotations

import re

_ONLY_LETTERS = re.compile(r"^[(\[]?([A-J])[)\]]?(?:\s*(?:,|and|&|/|\s)\s*[(\[]?([A-J])[)\]]?)*\.?$")
_BRACKETED = re.compile(r"\(([A-J])\)")
_STANDALONE = re.compile(r"(?<![A-Za-z])([A-J])(?![A-Za-z])")
_OPTION_WORD = re.compile(r"(?i)\boptions?\s+([A-J](?:\s*(?:,|and|&)\s*[A-J])*)\b")


def choice_letters(text: str, valid: str = "ABCDEFGHIJ") -> list[str]:
    """Sorted distinct option letters an answer names; [] when it names none.

    Accepts "B", "(B)", "A, C", "A and C", "AC", "option B"; in longer text only bracketed
    letters "(B)" or "option B" count, so the article "A" in a sentence is not read as a choice.
    """
    s = text.strip().rstrip(".")
    if not s:
        return []
    if re.fullmatch(r"[A-J]{1,10}", s):  # "AC"
        letters = list(s)
    elif _ONLY_LETTERS.match(s):
        letters = _STANDALONE.findall(s)
    else:
        named = _OPTION_WORD.findall(s)
        letters = _STANDALONE.findall(named[-1]) if named else _BRACKETED.findall(s)[-1:]
    return sorted({x for x in letters if x in valid})

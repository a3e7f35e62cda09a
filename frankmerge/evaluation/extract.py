"""Shared answer-span extraction and exact-match scoring for free-form generations.

Every benchmark scorer sees the same span, so a model is never judged on its thinking: take the
text after the last ``</think>`` (a think block left open means the answer was truncated), then
the last ``\\boxed{}``, else the last ``Answer:`` line, else the last "the answer is" span, else
the whole answer text, cleaned of markdown emphasis and surrounding punctuation (``**D**.`` is
``D``: MMMU's official parser would otherwise draw a random option for it).
Standard library only, so small training-time evaluators can import it cheaply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# How the final answer was found; "none" means the official parser gets the whole answer text, cleaned.
SPAN_KINDS: tuple[str, ...] = ("boxed", "answer_line", "answer_is", "none", "truncated")

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed[ ]+([^\s$]+)")
_ANSWER_LINE = re.compile(r"(?i)\banswer\b[\s*>]*[:：]")
_ANSWER_IS = re.compile(r"(?i)\bthe\s+(?:final\s+|correct\s+|right\s+)?answer\s+(?:is|should\s+be)\b\s*[:：]?")
_LETTER_ONLY = re.compile(r"^[(\[]?([A-Z])[)\].:]?$")
_TEXT_WRAP = re.compile(r"^\\(?:text|textbf|mathrm|mathbf)\{(.*)\}$", re.S)
_NUMBER = re.compile(r"^[-+]?\d[\d,]*(?:\.\d+)?$|^[-+]?\.\d+$")
# Markdown emphasis (**x**, __x__, *x*, _x_) not inside a word, so a_1 or 2*3*4 stay as they are.
_EMPHASIS = re.compile(r"(?<![\w*])(\*\*|__|\*|_)(?=\S)(.+?)(?<=\S)\1(?![\w*])", re.S)
_SURROUNDING = " \t\r\n\"'“”‘’`*_.,;:!?"


@dataclass(frozen=True)
class AnswerSpan:
    """Where the answer of one generation is; ``final`` is what benchmark parsers receive."""

    answer_text: str  # text after the think block ("" when the block never closed)
    span: str  # the extracted span, cleaned ("" when kind is "none" or "truncated")
    kind: str  # one of SPAN_KINDS
    think: str  # "closed", "unclosed" or "absent"

    @property
    def truncated(self) -> bool:
        return self.think == "unclosed"

    @property
    def final(self) -> str:
        return self.span if self.kind in ("boxed", "answer_line", "answer_is") else clean_answer_text(self.answer_text)

    @property
    def whole_answer(self) -> bool:
        """No span was found and the parser gets the whole (cleaned) answer text."""
        return self.kind == "none" and bool(self.final)


def split_think(raw_text: str, prompt_opened_think: bool = False) -> tuple[str, str]:
    """(answer text, think state). Several ``</think>``: the answer follows the last one.

    A reply that closes a block it never opened (the chat template opened it) is normal; a block
    opened by the reply or the prompt and never closed means the model ran out of tokens.
    """
    if THINK_CLOSE in raw_text:
        return raw_text.rsplit(THINK_CLOSE, 1)[1], "closed"
    if THINK_OPEN in raw_text or prompt_opened_think:
        return "", "unclosed"
    return raw_text, "absent"


def _match_brace(text: str, open_at: int) -> int | None:
    """Index of the brace closing the one at `open_at`, or None when it never closes."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete top-level ``\\boxed{...}`` (nested braces kept), or None.

    A box whose content is or ends in another box (``\\boxed{\\boxed{B}}``) is unwrapped.
    """
    spans: list[tuple[int, int]] = []
    for match in _BOX_START.finditer(text):
        end = _match_brace(text, match.end() - 1)
        if end is not None and not any(s <= match.start() < e for s, e in spans):
            spans.append((match.end(), end))
    if not spans:
        bare = _BOX_BARE.findall(text)
        return bare[-1] if bare else None
    start, end = spans[-1]
    content = text[start:end]
    inner = last_boxed(content)
    return inner if inner is not None else content


def _rest_of_line(text: str, start: int) -> str:
    """Text from `start` to the end of its line; the next non-empty line when that is blank."""
    rest = text[start:]
    lines = rest.split("\n")
    for line in lines:
        if line.strip(" *_`:"):
            return line
    return ""


def clean_span(span: str) -> str:
    """Strip markdown, dollar signs, ``\\text{}``, ``<<>>`` and a trailing period; "(B)" becomes "B"."""
    s = span.strip()
    for _ in range(3):  # wrappers nest: **$\text{B}$**
        before = s
        s = s.strip().strip("*_`").strip()
        if s.startswith("$") and s.endswith("$"):
            s = s.strip("$").strip()
        if s.startswith("<<") and s.endswith(">>"):
            s = s[2:-2].strip()
        wrapped = _TEXT_WRAP.match(s)
        if wrapped:
            s = wrapped.group(1).strip()
        s = s.rstrip(".").strip()
        if s == before:
            break
    letter = _LETTER_ONLY.match(s)
    return letter.group(1) if letter else s


def clean_answer_text(text: str) -> str:
    """The whole answer as a parser should see it when no span was found: markdown emphasis
    unwrapped anywhere, then surrounding whitespace, quotes and punctuation (a trailing period)
    stripped and the span wrappers of ``clean_span`` removed: ``"**D**."`` -> ``"D"``."""
    s = text
    for _ in range(3):  # nested emphasis: ***D*** or **_D_**
        unwrapped = _EMPHASIS.sub(r"\2", s)
        if unwrapped == s:
            break
        s = unwrapped
    return clean_span(s.strip(_SURROUNDING))


def extract_answer(raw_text: str, prompt_opened_think: bool = False) -> AnswerSpan:
    """Find the answer span of one generation (see the module docstring for the order)."""
    answer_text, think = split_think(raw_text, prompt_opened_think)
    if think == "unclosed":
        return AnswerSpan(answer_text="", span="", kind="truncated", think=think)
    boxed = last_boxed(answer_text)
    if boxed is not None and clean_span(boxed):
        return AnswerSpan(answer_text, clean_span(boxed), "boxed", think)
    for kind, pattern in (("answer_line", _ANSWER_LINE), ("answer_is", _ANSWER_IS)):
        matches = list(pattern.finditer(answer_text))
        if not matches:
            continue
        line = _rest_of_line(answer_text, matches[-1].end())
        if kind == "answer_is":
            line = re.split(r"\.\s", line, maxsplit=1)[0]
        span = clean_span(line)
        if span:
            return AnswerSpan(answer_text, span, kind, think)
    return AnswerSpan(answer_text, "", "none", think)


def normalize_answer(text: str) -> str:
    """Lower-cased, unwrapped, whitespace-collapsed answer; numbers in one canonical form."""
    s = clean_span(text).lower()
    s = re.sub(r"\s+", " ", s).strip()
    if _NUMBER.match(s):
        value = float(s.replace(",", ""))
        return str(int(value)) if value.is_integer() else repr(value)
    return s


def exact_match(prediction: str, gold: str) -> bool:
    """Equality after `normalize_answer` on both sides ("3.50" == "3.5", "**B**" == "b")."""
    return normalize_answer(prediction) == normalize_answer(gold)


def score_exact(raw_text: str, gold: str, prompt_opened_think: bool = False) -> bool:
    """Free-generation exact-match: extract the answer span, then compare it with the gold."""
    span = extract_answer(raw_text, prompt_opened_think)
    return bool(span.final) and exact_match(span.final, gold)

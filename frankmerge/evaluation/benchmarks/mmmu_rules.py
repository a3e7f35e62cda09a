"""MMMU's and MMMU-Pro's official answer parsers, re-implemented rule for rule.

Sources: MMMU-Benchmark/MMMU ``mmmu/utils/eval_utils.py`` (parse_multi_choice_response,
parse_open_response, eval_multi_choice, eval_open) and MMMU-Pro's ``mmmu-pro/evaluate.py``.
The official code draws its fallback from the global ``random`` seeded with 42; here a
``random.Random(42)`` is passed in and used in data order, and every draw is reported.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

OFFICIAL_SEED = 42
_STRIP_CHARS = (",", ".", "!", "?", ";", ":", "'")
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL = {":", ",", ".", "!", "?", ";", "'"}
_NUM_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")

OpenPred = str | float


def _last_candidate(candidates: Sequence[str], positions: Sequence[int]) -> str:
    """The candidate found furthest right (ties: the first listed), like the official np.argmax."""
    best = max(range(len(candidates)), key=lambda i: (positions[i], -i))
    return candidates[best]


def parse_multi_choice(
    response: str, all_choices: Sequence[str], index2ans: Mapping[str, str], rng: random.Random
) -> tuple[str, bool]:
    """MMMU's multiple-choice parser: (letter, whether it was a random guess)."""
    for char in _STRIP_CHARS:
        response = response.strip(char)
    response = f" {response} "
    candidates: list[str] = []
    with_brackets, by_content = False, False
    for choice in all_choices:
        if f"({choice})" in response:
            candidates.append(choice)
            with_brackets = True
    if not candidates:
        candidates = [c for c in all_choices if f" {c} " in response]
    if not candidates and len(response.split()) > 5:
        candidates = [i for i, ans in index2ans.items() if ans.lower() in response.lower()]
        by_content = bool(candidates)
    if not candidates:
        return rng.choice(list(all_choices)), True
    if len(candidates) == 1:
        return candidates[0], False
    if by_content:
        positions = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    elif with_brackets:
        positions = [response.rfind(f"({c})") for c in candidates]
    else:
        positions = [response.rfind(f" {c} ") for c in candidates]
    return _last_candidate(candidates, positions), False


def parse_pro_multi_choice(
    response: str, all_choices: Sequence[str], index2ans: Mapping[str, str], rng: random.Random
) -> tuple[str, bool]:
    """MMMU-Pro's parser: a unique option letter after the last "Answer:", else its MMMU variant."""
    at = response.rfind("Answer:")
    if at != -1:
        tail = response[at + len("Answer:") :].strip()
        matching = [c for c in all_choices if c in tail]
        if len(matching) == 1:
            return matching[0], False
    for char in _STRIP_CHARS:
        response = response.strip(char)
    response = f" {response} "
    candidates: list[str] = []
    with_brackets, by_content = False, False
    for choice in all_choices:
        if f"({choice})" in response:
            candidates.append(choice)
            with_brackets = True
    if not candidates:  # MMMU-Pro drops the leading space and also accepts "A."
        candidates = [c for c in all_choices if f"{c} " in response]
    if not candidates:
        candidates = [c for c in all_choices if f"{c}." in response]
    if not candidates and len(response.split()) > 5:
        candidates = [i for i, ans in index2ans.items() if ans.lower() in response.lower()]
        by_content = bool(candidates)
    if not candidates:
        return rng.choice(list(all_choices)), True
    if len(candidates) == 1:
        return candidates[0], False
    if by_content:
        positions = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    elif with_brackets:
        positions = [response.rfind(f"({c})") for c in candidates]
    else:
        positions = [response.rfind(f" {c} ") for c in candidates]
    return _last_candidate(candidates, positions), False


def check_is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def normalize_str(text: str) -> list[OpenPred]:
    """Numbers become floats rounded to 2 decimals; one-character strings get guard spaces."""
    text = text.strip()
    if check_is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    if len(text) == 1:
        return [" " + text, text + " "]
    return [text]


def extract_numbers(text: str) -> list[str]:
    return _NUM_COMMAS.findall(text) + _NUM_SCIENTIFIC.findall(text) + _NUM_SIMPLE.findall(text)


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    sub_responses = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys: list[str] = []
    for index, resp in enumerate(sub_responses):
        indicators = [*_KEY_INDICATORS, "="] if index == len(sub_responses) - 1 else list(_KEY_INDICATORS)
        shortest: str | None = None
        for indicator in indicators:
            if indicator in resp:
                tail = resp.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            keys.append(shortest)
    return keys or [response]


def parse_open_response(response: str) -> list[OpenPred]:
    """MMMU's open-question parser: key sub-responses and every number in them, normalised."""
    keys = _key_subresponses(response)
    preds: list[str] = list(keys)
    for key in keys:
        preds.extend(extract_numbers(key))
    normalized = [p for pred in preds for p in normalize_str(pred)]
    return list(dict.fromkeys(normalized))  # the official set(), in a reproducible order


def eval_multi_choice(gold: str | Sequence[str], pred: str) -> bool:
    return pred in gold if isinstance(gold, list | tuple) else gold == pred


def eval_open(gold: str | Sequence[str], preds: Sequence[OpenPred]) -> bool:
    """A string prediction is right when it contains a string gold; a number when it equals one."""
    golds = list(gold) if isinstance(gold, list | tuple) else [gold]
    norm_answers = [n for g in golds for n in normalize_str(str(g))]
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(n, str) and n in pred for n in norm_answers):
                return True
        elif pred in norm_answers:
            return True
    return False


def choice_info(options: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """(index2ans, all_choices) for options A, B, C, ... as the official get_multi_choice_info."""
    letters = [chr(ord("A") + i) for i in range(len(options))]
    return dict(zip(letters, options, strict=True)), letters

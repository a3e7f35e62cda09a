"""MathVision (testmini): the official answer clean-up and ``is_equal``, accuracy by subject and level."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from types import MappingProxyType

from frankmerge.evaluation.benchmarks.base import Aggregate, Benchmark, breakdown, join_prompt, percent
from frankmerge.evaluation.benchmarks.common import item_id, read_gold, read_options, row_images
from frankmerge.evaluation.benchmarks.math_equal import is_equal
from frankmerge.evaluation.data.tables import Table, cell, require_columns
from frankmerge.evaluation.items import Item, Judgement

# MATH-V's generation prompt; it already asks for \boxed{}, so both prompt styles use it.
PROMPT = (
    'Please solve the problem step by step and put your answer in one "\\boxed{}". '
    'If it is a multiple choice question, only one letter is allowed in the "\\boxed{}".'
)
_FLAGS = ("the final answer is", "the answer is", "the correct answer is", "the answer should be")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fix_sqrt(s: str) -> str:
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        out += "\\sqrt{" + part[0] + "}" + part[1:] if part and part[0] != "{" else "\\sqrt" + part
    return out


def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part and part[0] == "{":
            out += part
            continue
        if len(part) < 2:
            return s
        a, b, rest = part[0], part[1], part[2:]
        out += "{" + a + "}{" + b + "}" + rest if b != "{" else "{" + a + "}" + b + rest
    return out


def _fix_a_slash_b(s: str) -> str:
    if len(s.split("/")) != 2:
        return s
    a, b = s.split("/")
    try:
        if s == f"{int(a)}/{int(b)}":
            return "\\frac{" + str(int(a)) + "}{" + str(int(b)) + "}"
    except ValueError:
        pass
    return s


def strip_string(s: str) -> str:
    """The official _strip_string: drop LaTeX decoration and units, normalise fractions."""
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac")):
        s = s.replace(old, new)
    for old in ("\\left", "\\right", "^{\\circ}", "^\\circ", "\\$", "$"):
        s = s.replace(old, "")
    s = s.split("\\text{ ")[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2:
        s = s.split("=")[-1]
    if len(s.split("\\approx")) == 2:
        s = s.split("\\approx")[-1]
    if "sqrt" in s:
        s = _fix_sqrt(s)
    s = s.replace(" ", "")
    if "sqrt" in s:
        s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def find_math_answer(s: str) -> str:
    """The official find_math_answer: greedy ``oxed{...}`` content, then clean-up."""
    s = s.lower().replace("{}", "")
    found = re.findall(r"oxed{(.*)}", s, flags=re.S)
    ans = found[-1] if found else s
    if ans.find("}") != -1 and (ans.find("{") == -1 or ans.find("}") < ans.find("{")):
        ans = ans.split("}")[0]
    ans = ans.split("=")[-1].split("\\approx")[-1]
    for old, new in (
        (" ", ""),
        ("\\,", ""),
        ("∞", "\\infty"),
        ("+\\infty", "\\infty"),
        ("\\\\", "\\"),
        ("\n", ""),
        ("\\text", ""),
        ("\\mbox", ""),
        ("bmatrix", "pmatrix"),
        ("\\left", ""),
        ("\\right", ""),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("{m}^3", ""),
        ("m^3", ""),
        ("{units}", ""),
        ("units", ""),
        ("{km}", ""),
        ("km", ""),
    ):
        ans = ans.replace(old, new)
    return strip_string(ans)


def extract_model_answer(output: str) -> str:
    """The official evaluate.py steps from a model response to the answer string it compares."""
    output = output.strip()
    for c in "ABCDE":
        if (
            output.endswith(f" {c}.")
            or output.endswith(f" ({c}).")
            or output.startswith(f"{c}\n")
            or output.startswith(f"({c})\n")
            or output.startswith(f"({c}) {c}\n")
        ):
            output = c
    if _is_number(output.split("is ")[-1].rstrip(".")):
        output = output.split("is ")[-1].rstrip(".")
    if "oxed{" not in output:
        for flag in _FLAGS:
            for variant in (flag, flag.replace("the", "The")):
                raw = output
                output = output.split(variant)[-1].strip()
                if variant in raw:
                    output = output.split("\n")[0].split(". ")[0]
    elif output.count("oxed{") > 1:
        output = "\\boxed{" + output.split("oxed{")[-1]
    output = find_math_answer(output)
    for letter in "abcde":
        output = output.replace(f"({letter})", letter).replace("{" + letter + "}", letter)
    return output.rstrip(".").lstrip(":").strip()


def load(table: Table, style: str) -> list[Item]:
    require_columns(table, "mathvision", ("id", "index"), "question", "answer")
    items = []
    for position, row in enumerate(table.rows):
        identifier = item_id(row, "id", "index", position=position)
        options = read_options(row, "options")
        shown = "Options: " + " ".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(options)) if options else ""
        level = cell(row, "level")
        level = str(int(level)) if isinstance(level, float) else (str(level) if level is not None else None)
        subject = str(cell(row, "subject", "category", default="unknown"))
        items.append(
            Item(
                id=identifier,
                prompt=join_prompt(PROMPT, str(row["question"]) + ("\n" + shown if shown else "")),
                images=row_images(table, row, ("decoded_image", "image"), identifier)[:1],
                gold=read_gold(row["answer"]),
                kind="multiple-choice" if options else "open",
                choices=tuple(options),
                groups=MappingProxyType({"subject": (subject,), **({"level": (level,)} if level else {})}),
                difficulty=level,
            )
        )
    return items


def judge(item: Item, answer: str, rng: random.Random) -> Judgement:
    gold = str(item.gold)
    index = ord(gold) - ord("A") if len(gold) == 1 else -1
    gold_value = item.choices[index] if 0 <= index < len(item.choices) else ""
    parsed = extract_model_answer(answer) if answer.strip() else ""
    correct = bool(parsed) and (is_equal(parsed, gold) or is_equal(parsed, gold_value))
    return Judgement(parsed, correct, parse_failed=not parsed)


def aggregate(items: Sequence[Item], judgements: Sequence[Judgement]) -> Aggregate:
    return Aggregate(
        metric="accuracy",
        score=percent(sum(j.correct for j in judgements), len(judgements)),
        breakdowns=tuple(breakdown(items, judgements, d) for d in ("subject", "level")),
    )


BENCHMARK = Benchmark(
    name="mathvision",
    title="MathVision (testmini)",
    official=True,
    scoring_note="official MATH-V extraction and is_equal (safe arithmetic instead of eval; latex2sympy2 when installed)",
    load=load,
    judge=judge,
    aggregate=aggregate,
    default_split="testmini",
)

"""MathVision's answer extraction and equality check (mathllm/MATH-V ``evaluation/``), made safe.

The official code calls Python's ``eval`` on model output and ``latex2sympy`` for LaTeX. Here a
whitelisted arithmetic evaluator replaces ``eval``; ``latex2sympy2`` is used when installed, else
a small LaTeX-to-arithmetic translation (fractions, roots, powers, pi) that covers numeric answers.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable

_MAX_EXPONENT = 128
_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "sqrt": math.sqrt,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "log": math.log,
    "ln": math.log,
    "exp": math.exp,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def safe_eval(expression: str) -> float:
    """Evaluate plain arithmetic (numbers, + - * / % **, sqrt/sin/.../pi/e); ValueError otherwise."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not arithmetic: {expression!r}") from exc
    return float(_eval_node(tree.body))


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval_node(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > _MAX_EXPONENT:
                raise ValueError("exponent too large")
            return float(left**right)
        if type(node.op) in _BINARY:
            try:
                return _BINARY[type(node.op)](left, right)
            except ZeroDivisionError as exc:
                raise ValueError("division by zero") from exc
    is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
    if is_call and len(node.args) == 1 and not node.keywords:  # type: ignore[attr-defined]
        return _FUNCTIONS[node.func.id](_eval_node(node.args[0]))  # type: ignore[attr-defined]
    raise ValueError(f"unsupported expression element {type(node).__name__}")


def _braced(text: str, start: int) -> tuple[str, int]:
    """(content, index after the closing brace) of the group opening at text[start] == '{'."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i], i + 1
    raise ValueError("unbalanced braces")


def _argument(text: str, start: int) -> tuple[str, int]:
    """A LaTeX macro argument: a braced group or a single character."""
    while start < len(text) and text[start] == " ":
        start += 1
    if start >= len(text):
        raise ValueError("missing argument")
    return _braced(text, start) if text[start] == "{" else (text[start], start + 1)


def latex_to_arithmetic(latex: str) -> str:
    """Translate numeric LaTeX (\\frac, \\sqrt, ^, \\pi, \\cdot) into Python arithmetic."""
    s = latex.replace("\\left", "").replace("\\right", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\pi", " pi ").replace("\\%", "")
    out, i = [], 0
    while i < len(s):
        if s.startswith("\\frac", i):
            num, i = _argument(s, i + 5)
            den, i = _argument(s, i)
            out.append(f"(({latex_to_arithmetic(num)})/({latex_to_arithmetic(den)}))")
        elif s.startswith("\\sqrt", i):
            i += 5
            root = "2"
            if i < len(s) and s[i] == "[":
                close = s.index("]", i)
                root, i = s[i + 1 : close], close + 1
            body, i = _argument(s, i)
            out.append(f"(({latex_to_arithmetic(body)})**(1/({latex_to_arithmetic(root)})))")
        elif s[i] == "^":
            exponent, i = _argument(s, i + 1)
            out.append(f"**({latex_to_arithmetic(exponent)})")
        elif s[i] in "{}":
            out.append("(" if s[i] == "{" else ")")
            i += 1
        elif s[i] == "\\":
            raise ValueError(f"unsupported LaTeX macro in {latex!r}")
        else:
            out.append(s[i])
            i += 1
    return re.sub(r"(\d)\s*(pi|\()", r"\1*\2", "".join(out))


def latex_value(latex: str) -> float:
    """Numeric value of a LaTeX or plain expression (latex2sympy2 when installed)."""
    try:
        from latex2sympy2 import latex2sympy  # type: ignore[import-not-found]
    except ImportError:
        return safe_eval(latex_to_arithmetic(latex))
    try:
        return float(latex2sympy(latex).evalf())
    except Exception as exc:  # latex2sympy raises many unrelated types
        raise ValueError(str(exc)) from exc


def eval_tuple(s: str) -> str:
    """Official eval_tuple: evaluate each element of "(a,b)" / "[a,b]" to 2 decimals."""
    parts = s[1:-1].split(",")
    if len(s) < 2 or len(parts) < 2 or (s[0], s[-1]) not in (("(", ")"), ("[", "]")):
        return s
    try:
        values = [p if "infty" in p or p in ("a", "-a") else str(round(latex_value(p), 2)) for p in parts]
    except ValueError:
        return s
    return f"{s[0]}{','.join(values)}{s[-1]}"


def is_equal(answer: str, gold: str) -> bool:
    """Official MathVision equality: same text, same evaluated tuple, or same value to 2 decimals."""
    answer, gold = answer.lower(), gold.lower()
    if not answer.replace(" ", "") or not gold.replace(" ", ""):
        return False
    if gold.strip() == answer.strip():
        return True
    answer, gold = eval_tuple(answer), eval_tuple(gold)
    if gold == answer:
        return True
    try:
        return round(latex_value(gold), 2) == round(latex_value(answer), 2)
    except (ValueError, OverflowError, TypeError):
        return False

"""Chat templates and reasoning tokens, read from the files (never rendered, never executed).

R1-style reasoners rely on their template to open the answer with ``<think>``: DeepSeek-R1-Distill
and QwQ put it right after the assistant header. A merged model keeps the VLM's template, which
does not, so unless the merge adds it (``--think-template``) the model is asked to answer without
the opening its reasoning was trained behind.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

THINK_OPEN = "<think>"
_GENERATION_PROMPT = re.compile(r"if\s+add_generation_prompt\s*-?%\}(.*?)\{%-?\s*(?:endif|else)", re.DOTALL)


@dataclass(frozen=True)
class TemplateFacts:
    """What one model's files say about its chat template and its ``<think>`` token."""

    has_template: bool
    opens_think: bool  # the generation prompt ends with <think>
    mentions_think: bool  # the template handles <think> somewhere (e.g. strips it from history)
    think_token: bool  # the tokenizer holds <think> as one token

    def to_dict(self) -> dict[str, bool]:
        return dict(vars(self))


def read_template_facts(directory: Path) -> TemplateFacts:
    """Template facts from tokenizer_config.json, chat_template.jinja/.json and tokenizer.json."""
    templates = _templates(directory)
    text = "\n".join(templates)
    opens = any(THINK_OPEN in match for t in templates for match in _GENERATION_PROMPT.findall(t))
    return TemplateFacts(bool(templates), opens, THINK_OPEN in text, _has_token(directory, THINK_OPEN))


def _templates(directory: Path) -> list[str]:
    found: list[str] = []
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        found.append(jinja.read_text(errors="replace"))
    for name in ("tokenizer_config.json", "chat_template.json", "processor_config.json"):
        value = _json(directory / name).get("chat_template")
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):  # named templates: [{"name": "default", "template": "..."}]
            found += [t["template"] for t in value if isinstance(t, dict) and isinstance(t.get("template"), str)]
    return found


def _has_token(directory: Path, text: str) -> bool:
    tokenizer = _json(directory / "tokenizer.json")
    if any(isinstance(t, dict) and t.get("content") == text for t in tokenizer.get("added_tokens", [])):
        return True
    vocab = (tokenizer.get("model") or {}).get("vocab")
    if isinstance(vocab, dict) and text in vocab:
        return True
    decoder = _json(directory / "tokenizer_config.json").get("added_tokens_decoder") or {}
    return any(isinstance(t, dict) and t.get("content") == text for t in decoder.values())


def _json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or {} if absent or unreadable (templates are advisory)."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(errors="replace"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def template_findings(
    vlm: TemplateFacts, reasoner: TemplateFacts, *, think_template: bool = False, carry_tokens: bool = False
) -> list[str]:
    """What to do about the templates, one line each; nothing about what the merge already does."""
    findings = []
    if reasoner.opens_think and not vlm.opens_think and not think_template:
        findings.append(
            "the reasoner's chat template opens every answer with <think>, the VLM's does not: pass --think-template "
            "so the merged model's template does too (or start generations with <think> yourself)"
        )
    if (reasoner.think_token or reasoner.mentions_think) and not vlm.think_token and not carry_tokens:
        findings.append(
            "the VLM's tokenizer has no <think> token: merge carries the reasoner's unless --no-carry-reasoning-tokens"
        )
    return findings

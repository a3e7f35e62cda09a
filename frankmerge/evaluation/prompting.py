"""Turn items into chat prompts with the model's own template; shared by every backend."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frankmerge.errors import one_line
from frankmerge.evaluation.data.images import load_image
from frankmerge.evaluation.errors import EvaluationError, ImageDecodeError
from frankmerge.evaluation.extract import THINK_CLOSE, THINK_OPEN
from frankmerge.evaluation.items import Item

IMAGE_TAG = re.compile(r"<image\s*(\d+)>")
THINK_TEMPLATES = ("model", "open")


@dataclass(frozen=True)
class PreparedPrompt:
    """A rendered prompt and its decoded images, ready for a backend."""

    item_id: str
    text: str
    images: tuple[Any, ...]  # PIL images in the order their placeholders appear
    think_open: bool  # the prompt ends inside an opened <think> block
    sha256: str


@dataclass(frozen=True)
class FailedPrompt:
    """An item that cannot be prompted (e.g. an undecodable image); reported, never dropped."""

    item_id: str
    error: str


def content_parts(prompt: str, n_images: int) -> tuple[list[dict[str, str]], list[int]]:
    """Chat content with images where ``<image k>`` tags stand (first mention), untagged images first.

    Returns the parts and the 0-based image order, which is the order the processor must see them.
    """
    parts: list[dict[str, str]] = []
    order: list[int] = []
    tagged = {int(m.group(1)) - 1 for m in IMAGE_TAG.finditer(prompt) if 0 < int(m.group(1)) <= n_images}
    for index in range(n_images):
        if index not in tagged:
            parts.append({"type": "image"})
            order.append(index)
    position = 0
    for match in IMAGE_TAG.finditer(prompt):
        index = int(match.group(1)) - 1
        if index not in tagged or index in order:
            continue
        if prompt[position : match.start()]:
            parts.append({"type": "text", "text": prompt[position : match.start()]})
        parts.append({"type": "image"})
        order.append(index)
        position = match.end()
    if prompt[position:]:
        parts.append({"type": "text", "text": prompt[position:]})
    return parts, order


def load_chat_template(think_template: str) -> str | None:
    """None for "model"/"open"; the file's text when `think_template` names a Jinja file."""
    if think_template in THINK_TEMPLATES:
        return None
    path = Path(think_template)
    if not path.is_file():
        raise EvaluationError(f"--think-template {think_template!r}: expected 'model', 'open' or a Jinja template file")
    return path.read_text(encoding="utf-8")


def render(processor: Any, item: Item, think_template: str, chat_template: str | None) -> tuple[str, list[int]]:
    """The prompt text through the model's chat template (or the given one), and the image order."""
    parts, order = content_parts(item.prompt, len(item.images))
    messages = [{"role": "user", "content": parts}]
    kwargs = {"chat_template": chat_template} if chat_template is not None else {}
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
    if think_template == "open" and not text.rstrip().endswith(THINK_OPEN):
        text += THINK_OPEN + "\n"
    return text, order


def prepare(processor: Any, items: Iterable[Item], think_template: str) -> list[PreparedPrompt | FailedPrompt]:
    """Render every item; items whose images fail to decode become FailedPrompt."""
    chat_template = load_chat_template(think_template)
    prepared: list[PreparedPrompt | FailedPrompt] = []
    for item in items:
        text, order = render(processor, item, think_template, chat_template)
        try:
            images = tuple(load_image(item.images[i]) for i in order)
        except ImageDecodeError as exc:
            prepared.append(FailedPrompt(item.id, one_line(exc)))
            continue
        digest = hashlib.sha256(text.encode())
        for ref in (item.images[i] for i in order):
            digest.update(ref.label.encode())
        prepared.append(PreparedPrompt(item.id, text, images, text.rstrip().endswith(THINK_OPEN), digest.hexdigest()))
    return prepared


def clean_reply(text: str, special_tokens: Sequence[str]) -> str:
    """Drop special tokens (EOS, padding, image markers) from a reply but keep the think tags."""
    for token in special_tokens:
        if token and token not in (THINK_OPEN, THINK_CLOSE):
            text = text.replace(token, "")
    return text

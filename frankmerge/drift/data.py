"""Multimodal chat SFT data: JSONL records, checked up front, collated with assistant-only labels.

One JSON object per line, in either of the two shapes multimodal SFT sets use::

    {"messages": [{"role": "user", "content": "<image>What is shown?"},
                  {"role": "assistant", "content": "<think>…</think> A cat."}],
     "images": ["images/0001.png"]}                      # LLaMA-Factory / DRIFT style

    {"messages": [{"role": "user", "content": [{"type": "image", "image": "images/0001.png"},
                                               {"type": "text", "text": "What is shown?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]}

``conversations`` with ``from``/``value`` (human/gpt) is accepted as an alias. Relative image
paths are resolved against ``image_root`` (default: the JSONL file's directory). Every record
and every image file is checked before training starts; the first problem stops the run with
the line number and file at fault.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from frankmerge.drift.errors import DriftDataError
from frankmerge.errors import one_line

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}


@dataclass(frozen=True)
class ChatSample:
    """One conversation: messages with content parts, and its image files in order of appearance."""

    line: int
    messages: tuple[dict[str, Any], ...]
    images: tuple[Path, ...]


class ChatDataset(Dataset):
    def __init__(self, samples: list[ChatSample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> ChatSample:
        return self.samples[index]


def load_chat_jsonl(path: str | Path, image_root: str | Path | None = None) -> list[ChatSample]:
    """Parse and check every record; raise ``DriftDataError`` naming the first bad line or missing image."""
    path = Path(path)
    if not path.is_file():
        raise DriftDataError(f"--data {path}: no such file")
    root = Path(image_root) if image_root is not None else path.parent
    samples: list[ChatSample] = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError as exc:
                raise DriftDataError(f"{path} line {number}: not valid JSON ({one_line(exc)})") from exc
            samples.append(_parse(record, number, path, root))
    if not samples:
        raise DriftDataError(f"--data {path}: no records")
    missing = next(((s, p) for s in samples for p in s.images if not p.is_file()), None)
    if missing is not None:
        sample, image = missing
        count = sum(1 for s in samples for p in s.images if not p.is_file())
        raise DriftDataError(
            f"{path} line {sample.line}: image file {image} does not exist ({count} missing in all; "
            f"relative paths are resolved against {root}, set --image-root to change that)"
        )
    return samples


def _parse(record: Any, line: int, path: Path, root: Path) -> ChatSample:
    where = f"{path} line {line}"
    if not isinstance(record, dict):
        raise DriftDataError(f"{where}: expected a JSON object")
    raw = record.get("messages", record.get("conversations"))
    if not isinstance(raw, list) or not raw:
        raise DriftDataError(f"{where}: needs a non-empty 'messages' (or 'conversations') list")
    listed = record.get("images", record.get("image", []))
    listed = [listed] if isinstance(listed, str) else listed
    if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
        raise DriftDataError(f"{where}: 'images' must be a list of file paths")
    pending = list(listed)
    messages, images = [], []
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise DriftDataError(f"{where}: message {index} is not an object")
        role = _ROLES.get(str(message.get("role", message.get("from", ""))).lower())
        if role is None:
            raise DriftDataError(f"{where}: message {index} has role {message.get('role', message.get('from'))!r}")
        parts = _parts(message.get("content", message.get("value")), pending, where, index)
        for part in parts:
            if part["type"] == "image":
                if role == "assistant":
                    raise DriftDataError(f"{where}: message {index}: images in assistant turns cannot be trained on")
                images.append(_resolve(part.pop("path"), root, where))
        messages.append({"role": role, "content": parts})
    if pending:
        raise DriftDataError(f"{where}: {len(listed)} images listed but only {len(listed) - len(pending)} placeholders")
    if not any(m["role"] == "assistant" and any(p.get("text") for p in m["content"]) for m in messages):
        raise DriftDataError(f"{where}: no assistant message with text; there is nothing to train on")
    return ChatSample(line, tuple(messages), tuple(images))


def _parts(content: Any, pending: list[str], where: str, index: int) -> list[dict[str, Any]]:
    """Content as parts; ``<image>`` placeholders and bare image parts take the listed images in order."""
    if isinstance(content, str):
        parts: list[dict[str, Any]] = []
        for i, piece in enumerate(content.split(IMAGE_TOKEN)):
            if i:
                parts.append({"type": "image", "path": _take(pending, where, index)})
            if piece:
                parts.append({"type": "text", "text": piece})
        return parts
    if not isinstance(content, list):
        raise DriftDataError(f"{where}: message {index} content must be a string or a list of parts")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image":
            ref = part.get("image", part.get("path", part.get("url")))
            parts.append({"type": "image", "path": ref if isinstance(ref, str) else _take(pending, where, index)})
        else:
            raise DriftDataError(f"{where}: message {index} has a content part of type {kind!r} (text and image only)")
    return parts


def _take(pending: list[str], where: str, index: int) -> str:
    if not pending:
        raise DriftDataError(f"{where}: message {index} has more image placeholders than listed images")
    return pending.pop(0)


def _resolve(ref: str, root: Path, where: str) -> Path:
    if ref.startswith(("http://", "https://")):
        raise DriftDataError(f"{where}: image {ref} is a URL; download the images and reference local files")
    path = Path(ref).expanduser()
    return path if path.is_absolute() else root / path


class ChatCollator:
    """Batch samples through the VLM's processor and chat template; labels only on assistant tokens.

    Assistant turn j is located by rendering the conversation a second time with that turn's
    text emptied and diffing the two token sequences (common prefix and suffix): both renderings
    hold the same images, so every family's image-token expansion — even one that depends on how
    many images a sample has — cancels out. The end-of-turn token that follows the text (e.g.
    ``<|im_end|>``) is trained too, so the model learns to stop. Sequences are not truncated:
    cutting through expanded image tokens breaks the model.
    """

    def __init__(self, processor: Any) -> None:
        if not getattr(processor, "chat_template", None):
            raise DriftDataError("the VLM's processor has no chat template; save one with the processor")
        self.processor = processor
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "right"
        # Chat markers are special or added tokens; which list a processor puts them in varies.
        self.special_ids = set(getattr(tokenizer, "all_special_ids", ())) | set(getattr(tokenizer, "added_tokens_decoder", {}))

    def __call__(self, samples: list[ChatSample]) -> dict[str, torch.Tensor]:
        images = [[_load_image(p) for p in s.images] for s in samples]
        texts = [self._render(s.messages) for s in samples]
        batch = self._process(texts, images, padding=True)
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, (sample, sample_images) in enumerate(zip(samples, images, strict=True)):
            real = batch["attention_mask"][row].nonzero().flatten()
            offset = int(real[0])  # processors that pad on the left regardless are handled too
            ids = batch["input_ids"][row, offset : int(real[-1]) + 1]
            for start, end in self._assistant_spans(sample, sample_images, ids):
                labels[row, offset + start : offset + end] = ids[start:end]
        batch["labels"] = labels
        return dict(batch)

    def _render(self, messages: Any) -> str:
        return self.processor.apply_chat_template(list(messages), tokenize=False)

    def _process(self, texts: list[str], images: list[list[Any]], **kwargs: Any) -> Any:
        return self.processor(text=texts, images=images if any(images) else None, return_tensors="pt", **kwargs)

    def _assistant_spans(self, sample: ChatSample, images: list[Any], ids: torch.Tensor) -> list[tuple[int, int]]:
        spans = []
        for j, message in enumerate(sample.messages):
            if message["role"] != "assistant":
                continue
            blank = [*sample.messages[:j], {"role": "assistant", "content": [{"type": "text", "text": ""}]}]
            blank += sample.messages[j + 1 :]
            other = self._process([self._render(blank)], [images])["input_ids"][0]
            start, end = _differing_span(ids, other)
            if end <= start:
                raise DriftDataError(f"line {sample.line}: assistant message {j} renders to no tokens")
            if end < ids.numel() and int(ids[end]) in self.special_ids:
                end += 1
            spans.append((start, end))
        return spans


def _differing_span(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """[start, end) of ``a`` outside the longest common prefix and suffix of ``a`` and ``b``."""
    limit = min(a.numel(), b.numel())
    same = (a[:limit] == b[:limit]).tolist() + [False]
    prefix = same.index(False)
    tail = (a.flip(0)[:limit] == b.flip(0)[:limit]).tolist() + [False]
    suffix = min(tail.index(False), limit - prefix)
    return prefix, a.numel() - suffix


def _load_image(path: Path) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise DriftDataError(f"image {path}: cannot be read ({one_line(exc)})") from exc

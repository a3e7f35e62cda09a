"""Examples to model inputs, through the saved tokenizer's chat template and image processor.

Training and teacher-forced evaluation both go through here, and produce exactly the ids a user
gets from ``processor.apply_chat_template`` + ``processor(text, images)`` (a test checks it), so the
models learn the format that ordinary Hugging Face inference will feed them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from frankmerge.testbed.tiny_tokenizers import IM_END, IM_START
from frankmerge.testbed.trained.tasks import Example
from frankmerge.testbed.trained.vocab import IMAGE_TOKEN, testbed_chat_template, testbed_processor, visual_tokens

IGNORE = -100


@dataclass
class Batch:
    """Right-padded batch; ``kinds`` gives each label position's token kind ("" where no label)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    kinds: list[list[str]]
    pixel_values: torch.Tensor | None
    cell_ids: torch.Tensor | None = None  # (images, patches): each patch's cell word, when every image has them

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
        return inputs


class Encoder:
    """Chat-formats and tokenizes examples; one instance is reused for a whole training run.

    ``template``: the chat template to render with (a model's own, for instance one with a default
    system turn); the testbed's plain template when None. ``image_scale``: the VLM's image layout
    (``<image>`` expands to ``visual_tokens(image_scale)`` ids, images are processed at its size).
    """

    def __init__(self, template: str | None = None, image_scale: int = 1) -> None:
        processor = testbed_processor(image_scale=image_scale)
        self.visual_tokens = visual_tokens(image_scale)
        if template is not None:
            processor.tokenizer.chat_template = template
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.image_id = int(self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        self._prompt_cache: dict[tuple[str, bool], list[int]] = {}
        # What the template renders before any message (a default system turn): a dialogue's
        # follow-up turns, rendered one by one, must not repeat it.
        self.prefix_ids: list[int] = self._prefix_ids() if template is not None else []

    @classmethod
    def with_system(cls, system: tuple[str, ...] = (), image_scale: int = 1) -> Encoder:
        """The encoder of a testbed whose conversations open with ``system`` (none: the plain template)."""
        return cls(testbed_chat_template(system) if system else None, image_scale)

    def _prefix_ids(self) -> list[int]:
        """The ids the template renders before the first user turn (transformers refuses to render
        an empty conversation, so one user turn is rendered and cut where it starts)."""
        text = str(self.tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False))
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        turn = self.tokenizer.convert_tokens_to_ids([IM_START, "user"])
        starts = [i for i in range(len(ids) - 1) if ids[i : i + 2] == turn]
        return list(ids[: starts[0]])

    def prompt_text(self, example: Example) -> str:
        """The chat-formatted prompt with the generation prompt, as the processor renders it."""
        content: list[dict[str, str]] = [{"type": "image"}] if example.image is not None else []
        content.append({"type": "text", "text": example.prompt})
        messages = [{"role": "user", "content": content}]
        return str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def prompt_ids(self, example: Example) -> list[int]:
        """Prompt ids with ``<image>`` expanded to one token per patch, as LlavaProcessor does."""
        key = (example.prompt, example.image is not None)
        if key not in self._prompt_cache:
            ids = self.tokenizer(self.prompt_text(example), add_special_tokens=False)["input_ids"]
            expanded: list[int] = []
            for i in ids:
                expanded += [i] * self.visual_tokens if i == self.image_id else [i]
            self._prompt_cache[key] = expanded
        return self._prompt_cache[key]

    def target_ids(self, example: Example) -> tuple[list[int], list[str]]:
        """Response ids ending in ``<|im_end|>`` (kind "format"), and each id's kind."""
        ids = self.tokenizer.convert_tokens_to_ids([*example.target, IM_END])
        return list(ids), [*example.kinds, "format"]

    @staticmethod
    def turns(example: Example) -> list[Example]:
        """A dialogue as single turns; the chat template renders turn by turn and the word-level
        tokenizer drops the newlines between them, so their ids simply concatenate."""
        follow = [
            replace(example, prompt=q, target=t, kinds=example.kinds[-len(t) :], image=None, follow_ups=())
            for q, t in example.follow_ups
        ]
        return [replace(example, follow_ups=()), *follow]

    def pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def batch(self, examples: Sequence[Example], loss_on_prompt: bool = False) -> Batch:
        """Collate examples; labels cover the response (and the prompt's text tokens when asked)."""
        rows, labels, kinds = [], [], []
        for example in examples:
            row: list[int] = []
            row_labels: list[int] = []
            row_kinds: list[str] = []
            for index, turn in enumerate(self.turns(example)):
                prompt = self.prompt_ids(turn)
                if index and self.prefix_ids:
                    prompt = prompt[len(self.prefix_ids) :]
                target, target_kinds = self.target_ids(turn)
                if loss_on_prompt:
                    row_labels += [IGNORE if i == self.image_id else i for i in prompt]
                else:
                    row_labels += [IGNORE] * len(prompt)
                row += prompt + target
                row_labels += target
                row_kinds += [""] * len(prompt) + target_kinds
            rows.append(row)
            labels.append(row_labels)
            kinds.append(row_kinds)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        label_ids = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row, lab) in enumerate(zip(rows, labels, strict=True)):
            input_ids[i, : len(row)] = torch.tensor(row)
            label_ids[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(row)] = 1
            kinds[i] += [""] * (width - len(kinds[i]))
        pictured = [e for e in examples if e.image is not None]
        pixel_values = self.pixels([e.image for e in pictured]) if pictured else None
        cell_ids = None
        if pictured and all(e.cell_words for e in pictured):
            cell_ids = torch.tensor([self.tokenizer.convert_tokens_to_ids(list(e.cell_words)) for e in pictured])
        return Batch(input_ids, mask, label_ids, kinds, pixel_values, cell_ids)

"""Evaluate a testbed or merged checkpoint: free generation (the score) and teacher forcing (the diagnosis).

Free generation goes through the checkpoint's own processor / tokenizer, chat template and
``generate`` — the path a user takes — and is scored by ``scoring.score_generations``. The
teacher-forced pass feeds the gold chain of thought and reports next-token accuracy per token kind
(count, operand, arithmetic, format, answer), so a model that counts correctly but cannot keep
the format, or the reverse, is visible even when its exact-match score is zero.

A ``<think>``-opened task (``visual_reasoning_think``) scores the same items with ``<think>``
appended to the generation prompt, as R1-style chat templates do; its replies are recorded with the
``<think>`` in front, so they are scored and their think blocks counted like any other reply.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
import transformers as tf

from frankmerge.testbed.tiny_tokenizers import THINK_OPEN
from frankmerge.testbed.trained.encode import IGNORE, Encoder
from frankmerge.testbed.trained.models import MAX_NEW_TOKENS, image_scale_of, load_model
from frankmerge.testbed.trained.scoring import GenerationScore, score_generations
from frankmerge.testbed.trained.tasks import THINK_OPENED_TASKS, Example, eval_set
from frankmerge.testbed.trained.vocab import END_TOKENS, load_text_tokenizer

log = logging.getLogger(__name__)

VISUAL_TASKS = ("perception", "visual_reasoning", "visual_reasoning_think")
SAMPLES_KEPT = 3


@dataclass(frozen=True)
class TaskResult:
    task: str
    generation: GenerationScore
    teacher_forced: dict[str, float]  # token kind (and "all") -> next-token accuracy on the gold response
    samples: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "task": self.task,
            **self.generation.to_json(),
            "teacher_forced": self.teacher_forced,
            "samples": list(self.samples),
        }


@dataclass(frozen=True)
class ModelEvaluation:
    name: str
    path: str
    is_vlm: bool
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    seconds: float = 0.0

    def accuracy(self, task: str) -> float | None:
        return self.tasks[task].generation.accuracy if task in self.tasks else None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "is_vlm": self.is_vlm,
            "seconds": round(self.seconds, 2),
            "tasks": {k: v.to_json() for k, v in self.tasks.items()},
        }


def evaluate_checkpoint(
    name: str, path: Path, tasks: Sequence[str], n_items: int, *, batch_size: int = 100, teacher_forced: bool = True
) -> ModelEvaluation:
    """Score ``path`` on each task it can take (text models skip the visual ones), on images drawn in
    the VLM's own layout (its tower's image size)."""
    started = time.perf_counter()
    model = load_model(path)
    is_vlm = hasattr(model.config, "vision_config")
    image_scale = image_scale_of(model.config)
    frontend = tf.AutoProcessor.from_pretrained(path) if is_vlm else load_text_tokenizer(path)
    results = {}
    for task in tasks:
        if task in VISUAL_TASKS and not is_vlm:
            continue
        examples = eval_set(task, n_items, image_scale=image_scale)
        opened = task in THINK_OPENED_TASKS
        texts, lengths = generate(model, frontend, examples, batch_size, open_think=opened)
        if opened:
            texts = [f"{THINK_OPEN} {text}" for text in texts]
        score = score_generations(texts, [e.answer for e in examples], lengths)
        # A <think>-opened task's teacher forcing would repeat its plain task's exactly.
        forced = (
            teacher_forced_accuracy(
                model, examples, batch_size, getattr(frontend, "tokenizer", frontend).chat_template, image_scale
            )
            if teacher_forced and not opened
            else {}
        )
        results[task] = TaskResult(task, score, forced, tuple(texts[:SAMPLES_KEPT]))
    seconds = time.perf_counter() - started
    log.info("evaluated %s in %.1fs", name, seconds)
    return ModelEvaluation(name, str(path), is_vlm, results, seconds)


def _messages(example: Example) -> list[dict[str, Any]]:
    content: list[dict[str, str]] = [{"type": "image"}] if example.image is not None else []
    return [{"role": "user", "content": [*content, {"type": "text", "text": example.prompt}]}]


@torch.inference_mode()
def generate(
    model: Any,
    frontend: Any,
    examples: Sequence[Example],
    batch_size: int,
    max_new_tokens: int = MAX_NEW_TOKENS,
    *,
    open_think: bool = False,
) -> tuple[list[str], list[int]]:
    """Greedy replies (special end tokens stripped) and their lengths in tokens, in input order.

    Decoding is fixed here (greedy, ``max_new_tokens``) rather than read from the checkpoint: a
    merged model carries the reasoner's sampling settings and an 8192-token budget.

    Prompts are grouped by token length, so no batch needs padding and batching cannot change a reply.
    ``open_think`` ends every prompt with ``<think>`` (not part of the returned replies).
    """
    tokenizer = getattr(frontend, "tokenizer", frontend)
    opening = THINK_OPEN if open_think else ""
    prompts = [
        str(frontend.apply_chat_template(_messages(e), add_generation_prompt=True, tokenize=False)) + opening for e in examples
    ]
    encoded = []
    for prompt, example in zip(prompts, examples, strict=True):
        images = [example.image] if example.image is not None else None
        kwargs = {"images": images} if images is not None else {}
        encoded.append(frontend(text=[prompt], return_tensors="pt", **kwargs))
    order = sorted(range(len(examples)), key=lambda i: encoded[i]["input_ids"].shape[1])
    texts: list[str] = [""] * len(examples)
    lengths: list[int] = [0] * len(examples)
    end_ids = set(tokenizer.convert_tokens_to_ids(list(END_TOKENS)))
    for _, group in groupby(order, key=lambda i: encoded[i]["input_ids"].shape[1]):
        members = list(group)
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            inputs = {k: torch.cat([encoded[i][k] for i in chunk]) for k in encoded[chunk[0]] if k != "token_type_ids"}
            output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
            new = output[:, inputs["input_ids"].shape[1] :]
            for row, i in enumerate(chunk):
                ids = new[row].tolist()
                cut = next((j for j, t in enumerate(ids) if t in end_ids), None)
                lengths[i] = len(ids) if cut is None else cut + 1
                kept = ids if cut is None else ids[:cut]
                texts[i] = tokenizer.decode(kept, skip_special_tokens=False).strip()
    return texts, lengths


@torch.inference_mode()
def teacher_forced_accuracy(
    model: Any, examples: Sequence[Example], batch_size: int, template: str | None = None, image_scale: int = 1
) -> dict[str, float]:
    """Next-token argmax accuracy on the gold response, per token kind and over all response tokens,
    with the prompts rendered by ``template`` (the model's own chat template)."""
    encoder = Encoder(template, image_scale)
    hits: dict[str, int] = defaultdict(int)
    totals: dict[str, int] = defaultdict(int)
    for start in range(0, len(examples), batch_size):
        batch = encoder.batch(examples[start : start + batch_size])
        logits = model(**batch.model_inputs()).logits
        predicted = logits[:, :-1].argmax(-1)
        labels = batch.labels[:, 1:]
        for row in range(labels.shape[0]):
            for col in (labels[row] != IGNORE).nonzero().flatten().tolist():
                kind = batch.kinds[row][col + 1]
                ok = int(predicted[row, col] == labels[row, col])
                for key in (kind, "all"):
                    hits[key] += ok
                    totals[key] += 1
    return {k: round(hits[k] / totals[k], 4) for k in sorted(totals)}

"""The default backend: transformers ``generate`` on CPU or CUDA, left-padded batches."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frankmerge.errors import one_line
from frankmerge.evaluation.errors import BackendUnavailableError
from frankmerge.evaluation.prompting import PreparedPrompt, clean_reply
from frankmerge.evaluation.records import GenerationSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    """One reply as a backend returns it."""

    text: str
    finish_reason: str  # "stop" or "length"
    n_tokens: int
    n_prompt_tokens: int


def finish_of(token_ids: Sequence[int], eos_ids: set[int], max_new_tokens: int) -> tuple[int, str]:
    """(reply length without EOS and padding, finish reason) of one generated row."""
    for position, token in enumerate(token_ids):
        if token in eos_ids:
            return position, "stop"
    return len(token_ids), "length" if len(token_ids) >= max_new_tokens else "stop"


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """ "auto" = the checkpoint's dtype on a GPU, float32 on CPU (bf16 matmuls are slow there)."""
    import torch

    if dtype == "auto":
        return "auto" if device.startswith("cuda") else torch.float32
    if not hasattr(torch, dtype):
        raise BackendUnavailableError(f"--dtype {dtype!r}: not a torch dtype (use auto, bfloat16, float16, float32)")
    return getattr(torch, dtype)


def _internvl_chat(model_dir: Path, raw: dict[str, Any], dtype: Any, placement: dict[str, Any]) -> tuple[Any, Any]:
    """An InternVL chat checkpoint as transformers' InternVL model, with its own generation config."""
    import transformers as tf

    from frankmerge.analysis.errors import ProfileError
    from frankmerge.analysis.internvl_chat import ChatProcessor, check_runnable, load_native
    from frankmerge.checkpoints.reader import Checkpoint

    who = f"--model {model_dir}"
    try:
        check_runnable(raw, who)
        processor = ChatProcessor(model_dir, raw, who)
        with Checkpoint(model_dir) as weights:
            model = load_native(weights, raw, processor.image_token_id, who, dtype=dtype, **placement)
    except ProfileError as exc:
        raise BackendUnavailableError(one_line(exc)) from exc
    if (model_dir / "generation_config.json").is_file():
        model.generation_config = tf.GenerationConfig.from_pretrained(model_dir)
    return processor, model


class TransformersBackend:
    """Loads a VLM with ``AutoModelForImageTextToText`` and its processor, and generates in batches."""

    def __init__(self, model_dir: Path, settings: GenerationSettings) -> None:
        import torch
        import transformers as tf

        from frankmerge.analysis.internvl_chat import is_internvl_chat

        self.settings = settings
        self.device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, self.device)
        placement = {"device_map": "auto"} if settings.device == "auto" and self.device == "cuda" else {}
        raw = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
        if raw.get("model_type") == "llava_llama":
            raise BackendUnavailableError(
                f"--model {model_dir}: NVILA checkpoints run only with NVlabs' VILA package, not through transformers; "
                "evaluate it with VILA's own scripts"
            )
        if is_internvl_chat(raw):  # remote-code checkpoint: run by transformers' own InternVL instead
            self.processor, self.model = _internvl_chat(model_dir, raw, dtype, placement)
        else:
            self.processor = tf.AutoProcessor.from_pretrained(model_dir)
            self.model = tf.AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype, **placement).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        if not placement:
            self.model.to(self.device)
        config = self.model.generation_config
        eos = config.eos_token_id if config.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.specials = list(self.tokenizer.all_special_tokens)
        self._torch = torch

    def generate(self, prompts: Sequence[PreparedPrompt]) -> list[Generation]:
        """Replies in prompt order; prompts with and without images go in separate sub-batches."""
        results: dict[int, Generation] = {}
        with_images = [i for i, p in enumerate(prompts) if p.images]
        without = [i for i, p in enumerate(prompts) if not p.images]
        for group in (with_images, without):
            if group:
                for index, generation in zip(group, self._generate([prompts[i] for i in group]), strict=True):
                    results[index] = generation
        return [results[i] for i in range(len(prompts))]

    def _generate(self, prompts: Sequence[PreparedPrompt]) -> list[Generation]:
        torch = self._torch
        images = [list(p.images) for p in prompts] if prompts[0].images else None
        inputs = self.processor(text=[p.text for p in prompts], images=images, padding=True, return_tensors="pt")
        model_dtype = self.model.dtype
        inputs = {
            k: (v.to(self.model.device, model_dtype) if v.is_floating_point() else v.to(self.model.device))
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }
        s = self.settings
        sampling = (
            {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p} if s.temperature > 0 else {"do_sample": False}
        )
        torch.manual_seed(s.seed)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=s.max_new_tokens, pad_token_id=self.pad_id, **sampling)
        prompt_length = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        generations = []
        for row, n_prompt in zip(output[:, prompt_length:].tolist(), prompt_tokens, strict=True):
            n_tokens, finish = finish_of(row, self.eos_ids, s.max_new_tokens)
            text = self.tokenizer.decode(row[:n_tokens], skip_special_tokens=False)
            generations.append(Generation(clean_reply(text, self.specials), finish, n_tokens, int(n_prompt)))
        return generations

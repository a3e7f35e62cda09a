"""Independent references for the analysis tests: eager attention weights and float64 tensor sums."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import transformers as tf
from safetensors.torch import load_file


@functools.cache
def _processor(vlm: Path):  # type: ignore[no-untyped-def]
    return tf.AutoProcessor.from_pretrained(vlm)


@functools.cache
def _eager_model(vlm: Path):  # type: ignore[no-untyped-def]
    return tf.AutoModelForImageTextToText.from_pretrained(vlm, attn_implementation="eager").eval()


def chat_inputs(vlm: Path, image, prompt: str) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    processor = _processor(vlm)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[image], return_tensors="pt")
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def ratio_from_weights(weights: list[torch.Tensor], rows: list[int], visual: torch.Tensor, exclude_sink: bool) -> torch.Tensor:
    """a_l from full attention matrices (layers of (heads, queries, keys)): per-head ratio of row sums, mean over heads."""
    out = []
    for attn in weights:
        attn = attn.double()[:, rows, :]
        keys = attn.shape[-1]
        vis = torch.zeros(keys, dtype=torch.bool)
        vis[: visual.numel()] = visual
        text = ~vis
        if exclude_sink:
            vis[0] = text[0] = False
        v = attn[:, :, vis].sum(dim=(1, 2))
        t = attn[:, :, text].sum(dim=(1, 2))
        out.append((v / (v + t)).mean())
    return torch.stack(out)


def eager_ratios(vlm: Path, image, prompt: str, image_token: int, query: str, exclude_sink: bool, new_tokens: int = 3):  # type: ignore[no-untyped-def]
    """Brute force: eager attention with output_attentions=True, every layer's full matrix in memory."""
    model = _eager_model(vlm)
    inputs = chat_inputs(vlm, image, prompt)
    ids = inputs["input_ids"][0]
    visual = ids == image_token
    with torch.no_grad():
        if query == "generated":
            steps = new_tokens + 1
            out = model.generate(
                **inputs,
                max_new_tokens=steps,
                min_new_tokens=steps,
                do_sample=False,
                suppress_tokens=[image_token],
                output_attentions=True,
                return_dict_in_generate=True,
            )
            per_step = [ratio_from_weights_sums([a[0] for a in step], visual, exclude_sink) for step in out.attentions[1:]]
            vis = sum(s[0] for s in per_step)
            text = sum(s[1] for s in per_step)
            return (vis / (vis + text)).mean(dim=1)
        attentions = model(**inputs, output_attentions=True).attentions
    rows = list(range(int(visual.nonzero().max()) + 1, ids.numel())) if query == "after_image" else [ids.numel() - 1]
    return ratio_from_weights([a[0] for a in attentions], rows, visual, exclude_sink)


def ratio_from_weights_sums(weights: list[torch.Tensor], visual: torch.Tensor, exclude_sink: bool):  # type: ignore[no-untyped-def]
    """Per layer and head (visual mass, text mass) of every query row of a decoding step."""
    vis_rows, text_rows = [], []
    for attn in weights:
        attn = attn.double()
        keys = attn.shape[-1]
        vis = torch.zeros(keys, dtype=torch.bool)
        vis[: visual.numel()] = visual
        text = ~vis
        if exclude_sink:
            vis[0] = text[0] = False
        vis_rows.append(attn[:, :, vis].sum(dim=(1, 2)))
        text_rows.append(attn[:, :, text].sum(dim=(1, 2)))
    return torch.stack(vis_rows), torch.stack(text_rows)


def load_all(directory: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(file))
    return state

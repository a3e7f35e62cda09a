"""Where a testbed VLM's post-image prompt tokens attend, per layer: the tokens before the image (the
system turn, when there is one), the first token alone, the image, the text after the image.

    python benchmarks/testbed_attention_split.py VLM_DIR [VLM_DIR ...]

The diagnosis behind docs/testbed.md ("Results: FRANK's premise"): eager attention on 32 testbed
scenes, prompt "how many red ?", query rows = the prompt tokens after the image, heads averaged —
the profile's own choices, with the non-image share split by where it goes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import transformers as tf

from frankmerge.testbed.trained.tasks import perception
from frankmerge.testbed.trained.vocab import IMAGE_TOKEN

PROMPT = "how many red ?"
SCENES = 32
SEED = 7


@torch.inference_mode()
def attention_split(path: Path) -> np.ndarray:
    """(layers, 4): mean attention mass on the first token, everything before the image, the image,
    and the text after it, from the queries after the image."""
    processor = tf.AutoProcessor.from_pretrained(path)
    model = tf.AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    rng = np.random.default_rng(SEED)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    per_scene = []
    for _ in range(SCENES):
        inputs = processor(text=[text], images=[perception(rng).image], return_tensors="pt")
        image = (inputs["input_ids"][0] == image_id).nonzero().flatten()
        first, last = int(image[0]), int(image[-1])
        rows = []
        for layer in model(**inputs, output_attentions=True).attentions:
            queries = layer[0, :, last + 1 :, :].mean(0)  # heads averaged: (queries, keys)
            rows.append(
                [
                    float(queries[:, 0].mean()),
                    float(queries[:, :first].sum(-1).mean()),
                    float(queries[:, first : last + 1].sum(-1).mean()),
                    float(queries[:, last + 1 :].sum(-1).mean()),
                ]
            )
        per_scene.append(rows)
    return np.asarray(per_scene).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("vlms", type=Path, nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.vlms:
        print(f"{path}\n  layer: first token / before the image (first token included) / image / text after the image")
        for index, (first, before, image, after) in enumerate(attention_split(path), 1):
            print(f"  {index}: {first:.2f} / {before:.2f} / {image:.2f} / {after:.2f}")


if __name__ == "__main__":
    main()

"""Chat JSONL parsing, up-front checks, and assistant-only labels through each family's processor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import transformers as tf
from PIL import Image

from frankmerge.drift.data import IGNORE_INDEX, ChatCollator, load_chat_jsonl
from frankmerge.drift.errors import DriftDataError


def _image(path: Path, px: int = 32, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (px, px, 3), dtype=np.uint8)).save(path)
    return path


def _jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


TURN = [{"role": "user", "content": "<image>describe the image"}, {"role": "assistant", "content": "a cat"}]


def test_both_record_shapes_parse(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "a.png")
    _image(tmp_path / "img" / "b.png", seed=1)
    records = [
        {"messages": TURN, "images": ["img/a.png"]},
        {
            "messages": [
                {"role": "system", "content": "the"},
                {"role": "user", "content": [{"type": "image", "image": "img/b.png"}, {"type": "text", "text": "describe"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]},
            ]
        },
        {"conversations": [{"from": "human", "value": "describe"}, {"from": "gpt", "value": "the image"}]},
    ]
    samples = load_chat_jsonl(_jsonl(tmp_path / "train.jsonl", records))
    assert [len(s.images) for s in samples] == [1, 1, 0]
    assert samples[0].images[0] == tmp_path / "img" / "a.png"
    assert samples[0].messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "describe the image"}]
    assert samples[2].messages[1] == {"role": "assistant", "content": [{"type": "text", "text": "the image"}]}


def test_missing_image_names_the_first_missing_file(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "a.png")
    records = [{"messages": TURN, "images": ["img/a.png"]}] + [
        {"messages": TURN, "images": [f"img/gone{i}.png"]} for i in range(3)
    ]
    with pytest.raises(DriftDataError, match=r"line 2: image file .*img/gone0\.png does not exist \(3 missing in all"):
        load_chat_jsonl(_jsonl(tmp_path / "train.jsonl", records))


def test_image_root_option(tmp_path: Path) -> None:
    _image(tmp_path / "elsewhere" / "a.png")
    path = _jsonl(tmp_path / "train.jsonl", [{"messages": TURN, "images": ["a.png"]}])
    assert load_chat_jsonl(path, tmp_path / "elsewhere")[0].images == (tmp_path / "elsewhere" / "a.png",)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("{not json", "line 1: not valid JSON"),
        ({"messages": TURN, "images": []}, "more image placeholders than listed images"),
        ({"messages": TURN, "images": ["a.png", "b.png"]}, "2 images listed but only 1 placeholders"),
        ({"messages": [{"role": "user", "content": "describe"}]}, "no assistant message with text"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
        ({"messages": TURN, "images": ["https://example.com/a.png"]}, "is a URL"),
        ({"messages": [{"role": "assistant", "content": "<image>x"}], "images": ["a.png"]}, "images in assistant turns"),
        ({"text": "no messages"}, "needs a non-empty 'messages'"),
    ],
)
def test_bad_records_name_the_line(tmp_path: Path, record: object, message: str) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    with pytest.raises(DriftDataError, match=message):
        load_chat_jsonl(_jsonl(tmp_path / "train.jsonl", [record]))


def test_empty_and_absent_files(tmp_path: Path) -> None:
    with pytest.raises(DriftDataError, match="no such file"):
        load_chat_jsonl(tmp_path / "absent.jsonl")
    with pytest.raises(DriftDataError, match="no records"):
        load_chat_jsonl(_jsonl(tmp_path / "empty.jsonl", []))


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision", "internvl", "idefics3"])
def test_labels_cover_assistant_tokens_only(tiny_triple, tmp_path: Path, family: str) -> None:
    """Batches mixing one- and two-image, single- and multi-turn samples; left-padding processors too."""
    for i in range(3):
        _image(tmp_path / f"{i}.png", px=56, seed=i)
    records = [
        {"messages": TURN, "images": ["0.png"]},
        {
            "messages": [
                {"role": "user", "content": "<image>describe"},
                {"role": "assistant", "content": "the cat"},
                {"role": "user", "content": "<image>the image"},
                {"role": "assistant", "content": "a a cat"},
            ],
            "images": ["1.png", "2.png"],
        },
    ]
    samples = load_chat_jsonl(_jsonl(tmp_path / "train.jsonl", records))
    processor = tf.AutoProcessor.from_pretrained(tiny_triple(family).vlm)
    batch = ChatCollator(processor)(samples)
    tokenizer = processor.tokenizer
    trained = [
        tokenizer.convert_ids_to_tokens(row[labels != IGNORE_INDEX])
        for row, labels in zip(batch["input_ids"], batch["labels"], strict=True)
    ]
    assert trained == [["a", "cat", "<|im_end|>"], ["the", "cat", "<|im_end|>", "a", "a", "cat", "<|im_end|>"]]
    assert batch["labels"].shape == batch["input_ids"].shape

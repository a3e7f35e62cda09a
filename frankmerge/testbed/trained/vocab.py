"""The testbed's 64-token word-level vocabulary, its tokenizer and the LLaVA processor.

All three models share one vocabulary (homologous embedding rows); the VLM's processor expands
``<image>`` into one token per vision patch, exactly as for a real LLaVA checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import decoders
from transformers import LlavaProcessor, PreTrainedTokenizerFast, SiglipImageProcessor

from frankmerge.testbed.tiny_tokenizers import (
    BOS,
    EOS,
    IM_END,
    PAD,
    THINK_CLOSE,
    THINK_OPEN,
    UNK,
    build_vocab,
    chat_template,
    make_tokenizer,
)

VOCAB_SIZE = 64
IMAGE_TOKEN = "<image>"
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
MAX_NUMBER = 16
NUMBERS: tuple[str, ...] = tuple(str(i) for i in range(MAX_NUMBER + 1))
EMPTY_CELL = "_"  # an empty grid cell in a text scene
WORDS: tuple[str, ...] = ("how", "many", "shapes", "?", ".", "copy", "first", "last", "colour", "+", "*", "=", EMPTY_CELL)
# Stripped from decoded generations before scoring; <think> / </think> stay (the scorer reads them).
END_TOKENS: tuple[str, ...] = (IM_END, EOS, PAD, BOS, UNK)

IMAGE_PX = 32  # at image_scale 1: a 4×4 grid of 8-px patches, one per scene cell
PATCH = 8


def image_px(image_scale: int = 1) -> int:
    """Image side in pixels: each scene cell spans ``image_scale``² patches (docs/testbed.md, "variant 2")."""
    if image_scale < 1:
        raise ValueError(f"image_scale must be a positive integer, got {image_scale}")
    return IMAGE_PX * image_scale


def visual_tokens(image_scale: int = 1) -> int:
    """Tokens ``<image>`` expands to: one per patch."""
    return (image_px(image_scale) // PATCH) ** 2


def testbed_vocab() -> dict[str, int]:
    """Specials, the image token, colours, task words and numbers 0..16; fillers pad it to 64."""
    return build_vocab([IMAGE_TOKEN, *COLOURS, *WORDS, *NUMBERS], VOCAB_SIZE)


def testbed_chat_template(system: Sequence[str] = ()) -> str:
    """The testbed's chat template; ``system`` words become a default system turn (docs/testbed.md,
    "FRANK's premise": a fixed prefix before every conversation)."""
    return chat_template(image_placeholder=IMAGE_TOKEN, default_system=" ".join(system))


def testbed_tokenizer(system: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer; ``<think>``/``</think>`` are added (not special) tokens, as in R1-style models.

    All three models share this tokenizer and its chat template (images render as ``<image>``).
    Decoding joins words with spaces (a WordPiece decoder with no ``##`` pieces and no clean-up).
    """
    tok = make_tokenizer(
        testbed_vocab(),
        named_specials={"image_token": IMAGE_TOKEN},
        extra_specials=[IMAGE_TOKEN],
        added_tokens=(THINK_OPEN, THINK_CLOSE),
        template=testbed_chat_template(system),
    )
    tok.backend_tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return tok


def load_text_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The word-level tokenizer of a saved testbed text model.

    ``AutoTokenizer`` cannot be used for these: transformers 5 maps ``model_type: qwen2`` to
    ``Qwen2Tokenizer``, which rebuilds a byte-level BPE from the vocabulary whatever
    ``tokenizer_config.json`` says. (The VLM is a LLaVA, whose processor loads the file as it is.)
    """
    return PreTrainedTokenizerFast.from_pretrained(path)


def testbed_processor(system: Sequence[str] = (), image_scale: int = 1) -> LlavaProcessor:
    """LLaVA processor: 32×32 images (64×64 at ``image_scale`` 2), patch 8, no CLS token, so
    ``<image>`` becomes 16 (64) tokens."""
    tok = testbed_tokenizer(system)
    side = image_px(image_scale)
    image_processor = SiglipImageProcessor(size={"height": side, "width": side})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        chat_template=tok.chat_template,
        image_token=IMAGE_TOKEN,
    )

"""Offline word-level tokenizers for the tiny testbed checkpoints.

Every model of a triple shares one vocabulary so that token ids (and thus embedding rows) are
homologous; only which strings are registered as special/added tokens differs per role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
BASE_SPECIALS: tuple[str, ...] = (UNK, BOS, EOS, PAD, IM_START, IM_END, THINK_OPEN, THINK_CLOSE)
PLAIN_WORDS: tuple[str, ...] = ("system", "user", "assistant", "describe", "the", "image", "a", "cat")

# ChatML-style template; image parts render as a family-specific placeholder string.
_CHAT_TEMPLATE = (
    "{% for m in messages %}" + IM_START + "{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}@IMAGE@{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}" + IM_END + "\n{% endfor %}"
    "{% if add_generation_prompt %}" + IM_START + "assistant\n@GEN@{% endif %}"
)


def chat_template(image_placeholder: str = "", generation_prefix: str = "", default_system: str = "") -> str:
    """ChatML template; the VLM's renders images as the placeholder its processor expands.

    ``default_system``: a system turn rendered first when the conversation has none, as Qwen2's
    template inserts "You are a helpful assistant." (none when empty, the template unchanged).
    """
    template = _CHAT_TEMPLATE.replace("@IMAGE@", image_placeholder).replace("@GEN@", generation_prefix)
    if not default_system:
        return template
    opening = (
        "{% if messages|length == 0 or messages[0]['role'] != 'system' %}"
        + IM_START
        + "system\n"
        + default_system
        + IM_END
        + "\n{% endif %}"
    )
    return opening + template


def build_vocab(family_tokens: Sequence[str], size: int) -> dict[str, int]:
    """Specials first (stable low ids, all inside `size`), then filler words up to `size`."""
    fixed = list(dict.fromkeys([*BASE_SPECIALS, *family_tokens, *PLAIN_WORDS]))
    if len(fixed) > size:
        raise ValueError(f"vocab size {size} cannot hold {len(fixed)} fixed tokens")
    fixed += [f"w{i}" for i in range(size - len(fixed))]
    return {tok: i for i, tok in enumerate(fixed)}


def make_tokenizer(
    vocab: Mapping[str, int],
    *,
    named_specials: Mapping[str, str] | None = None,
    extra_specials: Sequence[str] = (),
    added_tokens: Sequence[str] = (),
    template: str | None = None,
) -> PreTrainedTokenizerFast:
    """WordLevel tokenizer; tokens already in `vocab` keep their ids when registered as special/added."""
    core = Tokenizer(models.WordLevel(dict(vocab), unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=dict(named_specials or {}),
    )
    specials = [IM_START, IM_END, *extra_specials]
    tok.add_special_tokens({"additional_special_tokens": specials}, replace_extra_special_tokens=False)
    if added_tokens:
        tok.add_tokens(list(added_tokens))
    if template is not None:
        tok.chat_template = template
    return tok

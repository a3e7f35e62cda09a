"""Vocabularies, reasoning tokens and chat templates that survive the merge.

Token ids are never trusted across models: the VLM's and the reasoner's vocabularies are
compared by token *text*. The paper's own pair shows why — InternVL2.5 uses id 151667 for its
image-context token, QwQ-32B for ``<think>``. Reasoning tokens the VLM lacks are added to the
merged tokenizer at fresh ids (after every id the VLM's tokenizer uses, so image and video tokens
keep their ids and meaning) and take the reasoner's embedding and lm_head rows. Embedding
padding rows are never truncated; the matrix only grows when a new id falls past its end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frankmerge.errors import CorruptCheckpointError, RecipeError

log = logging.getLogger(__name__)
MAX_LISTED = 20
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
# Config keys under which VLMs name the ids of their multimodal tokens.
MULTIMODAL_ID_KEYS = (
    "image_token_id",
    "image_token_index",
    "video_token_id",
    "video_token_index",
    "vision_start_token_id",
    "vision_end_token_id",
    "boi_token_index",
    "eoi_token_index",
)


@dataclass(frozen=True)
class CarriedToken:
    """A reasoning token added to the merged tokenizer, with the reasoner row it takes."""

    text: str
    reasoner_id: int
    merged_id: int


@dataclass
class TokenPlan:
    report: dict[str, Any]
    carried: list[CarriedToken] = field(default_factory=list)
    tokenizer: Any = None  # the VLM's tokenizer with the carried tokens added (None: keep files as they are)
    # Row ids whose token differs between the VLM and the reasoner (None: tokenizers not compared).
    rows_of_other_meaning: list[int] | None = None

    def rows(self, vlm_rows: int) -> int:
        """Embedding rows of the merged model: the VLM's, grown only if a new id needs it."""
        return max([vlm_rows] + [t.merged_id + 1 for t in self.carried])


def load_tokenizer(directory: Path) -> tuple[Any, str | None]:
    """The model's tokenizer through AutoTokenizer (never remote code), or None and why not."""
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):  # before importing transformers (~1 s)
        return None, f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {directory}"
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # remote-code model types warn about their config here
    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False), None
    except Exception as exc:  # missing files, remote-code tokenizers, broken configs
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    finally:
        hf_logging.set_verbosity(verbosity)


def single_token_id(tokenizer: Any, text: str) -> int | None:
    """The id of ``text`` if the tokenizer encodes it as exactly one token of that text."""
    token_id = tokenizer.convert_tokens_to_ids(text)
    if token_id is None or token_id == tokenizer.unk_token_id and text != tokenizer.unk_token:
        return None
    ids = tokenizer.encode(text, add_special_tokens=False)
    return token_id if ids == [token_id] else None


def compare_vocabularies(vlm: Any, reasoner: Any, vlm_rows: int, reasoner_rows: int) -> tuple[dict[str, Any], list[int]]:
    """Shared tokens with different ids, ids meaning different tokens, specials, padding (the report),
    and the row ids below both row counts that do not hold the same token in both models.

    Those rows — collisions (InternVL2.5's ``<IMG_CONTEXT>`` and QwQ's ``<think>`` at 151667), tokens
    only one model has, padding — are the ones that merging embeddings by index would mix up.
    """
    vlm_vocab, reasoner_vocab = vlm.get_vocab(), reasoner.get_vocab()
    vlm_by_id = {i: t for t, i in vlm_vocab.items()}
    reasoner_by_id = {i: t for t, i in reasoner_vocab.items()}
    moved = sorted(
        (t, vlm_vocab[t], reasoner_vocab[t])
        for t in vlm_vocab.keys() & reasoner_vocab.keys()
        if vlm_vocab[t] != reasoner_vocab[t]
    )
    collisions = sorted(
        (i, vlm_by_id[i], reasoner_by_id[i])
        for i in vlm_by_id.keys() & reasoner_by_id.keys()
        if vlm_by_id[i] != reasoner_by_id[i]
    )
    other_meaning = [
        i for i in range(min(vlm_rows, reasoner_rows)) if vlm_by_id.get(i) is None or vlm_by_id.get(i) != reasoner_by_id.get(i)
    ]
    added = set(vlm.get_added_vocab()) | set(reasoner.get_added_vocab())
    report = {
        "vlm_tokenizer_size": len(vlm),
        "reasoner_tokenizer_size": len(reasoner),
        "vlm_embedding_rows": vlm_rows,
        "reasoner_embedding_rows": reasoner_rows,
        "vlm_padding_rows": max(vlm_rows - len(vlm), 0),
        "reasoner_padding_rows": max(reasoner_rows - len(reasoner), 0),
        "shared_tokens_with_different_ids": len(moved),
        "shared_tokens_with_different_ids_examples": [
            {"token": t, "vlm_id": a, "reasoner_id": b} for t, a, b in moved[:MAX_LISTED]
        ],
        "id_collisions": len(collisions),
        "id_collisions_of_added_tokens": [
            {"id": i, "vlm": a, "reasoner": b} for i, a, b in collisions if a in added or b in added
        ][:MAX_LISTED],
        "vlm_special_tokens": sorted(vlm.all_special_tokens),
        "reasoner_special_tokens": sorted(reasoner.all_special_tokens),
        "rows_of_other_meaning": len(other_meaning),
    }
    return report, other_meaning


def load_tokenizer_pair(vlm_dir: Path, reasoner_dir: Path, consequence: str) -> tuple[Any, Any, str | None]:
    """Both models' tokenizers; where one is unavailable, (None, None, why) and a warning that ends
    with ``consequence`` (what the caller does without them)."""
    vlm_tok, vlm_problem = load_tokenizer(vlm_dir)
    reasoner_tok, reasoner_problem = load_tokenizer(reasoner_dir)
    if vlm_tok is None or reasoner_tok is None:
        why = f"{'VLM' if vlm_tok is None else 'reasoner'} tokenizer unavailable ({vlm_problem or reasoner_problem})"
        log.warning("%s: %s", why, consequence)
        return None, None, why
    return vlm_tok, reasoner_tok, None


def rows_of_other_meaning(vlm_dir: Path, reasoner_dir: Path, vlm_rows: int, reasoner_rows: int) -> list[int] | None:
    """Embedding rows below both row counts whose ids name different tokens in the two models
    (collisions, tokens one model lacks); None, with a warning, when a tokenizer is unavailable."""
    vlm_tok, reasoner_tok, why = load_tokenizer_pair(vlm_dir, reasoner_dir, "embedding rows matched by index alone")
    if why is not None:
        return None
    return compare_vocabularies(vlm_tok, reasoner_tok, vlm_rows, reasoner_rows)[1]


def plan_tokens(
    vlm_dir: Path,
    reasoner_dir: Path,
    *,
    vlm_config: dict[str, Any],
    vlm_rows: int,
    reasoner_rows: int,
    reasoning_tokens: list[str],
    carry: bool,
) -> TokenPlan:
    """Compare the vocabularies and decide which reasoning tokens the merged tokenizer gains."""
    vlm_tok, reasoner_tok, why = load_tokenizer_pair(
        vlm_dir, reasoner_dir, "vocabularies not compared, no reasoning tokens carried over"
    )
    if why is not None:
        return TokenPlan({"status": f"skipped: {why}", "carried": []})
    report, other_meaning = compare_vocabularies(vlm_tok, reasoner_tok, vlm_rows, reasoner_rows)
    plan = TokenPlan(report, rows_of_other_meaning=other_meaning)
    found = {t: single_token_id(reasoner_tok, t) for t in reasoning_tokens}
    report["reasoner_reasoning_tokens"] = {t: i for t, i in found.items() if i is not None}
    if not any(i is not None for i in found.values()):
        report["status"] = f"the reasoner has none of {reasoning_tokens} as single tokens: nothing carried over"
        log.warning(report["status"])
        return plan
    _refuse_conflicts(vlm_tok, vlm_config, [t for t, i in found.items() if i is not None])
    to_add = [t for t, i in found.items() if i is not None and single_token_id(vlm_tok, t) is None]
    report["vlm_already_has"] = [t for t, i in found.items() if i is not None and t not in to_add]
    if not carry or not to_add:
        report["status"] = "carry-over disabled" if to_add else "the VLM already has every reasoning token"
        return plan
    vlm_tok.add_tokens(to_add, special_tokens=False)
    plan.carried = [CarriedToken(t, int(found[t]), int(vlm_tok.convert_tokens_to_ids(t))) for t in to_add]  # type: ignore[arg-type]
    plan.tokenizer = vlm_tok
    report["status"] = f"carried over {len(to_add)} reasoning token(s)"
    report["carried"] = [vars(t) for t in plan.carried]
    return plan


def _refuse_conflicts(vlm_tok: Any, vlm_config: dict[str, Any], tokens: list[str]) -> None:
    """A reasoning token that is one of the VLM's multimodal tokens cannot be reconciled automatically."""
    sections = [vlm_config] + [v for v in vlm_config.values() if isinstance(v, dict)]
    multimodal = {int(s[k]) for s in sections for k in MULTIMODAL_ID_KEYS if isinstance(s.get(k), int)}
    for text in tokens:
        vlm_id = single_token_id(vlm_tok, text)
        if vlm_id is not None and vlm_id in multimodal:
            raise RecipeError(
                f"reasoning token {text!r} is the VLM's multimodal token (id {vlm_id}); set `reasoning_tokens` in the "
                "recipe to the reasoner's other markers, or `carry_reasoning_tokens: false`"
            )


THINK_SUFFIX = "{% if add_generation_prompt %}<think>\n{% endif %}"


def add_think_prefix(directory: Path) -> list[str]:
    """Make every chat template in ``directory`` open the assistant turn with ``<think>\\n`` (R1 style).

    The generation prompt is the last thing a template renders, so appending a block that only
    fires with ``add_generation_prompt`` puts ``<think>\\n`` right after the assistant header.
    """
    changed = []
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        jinja.write_text(jinja.read_text() + THINK_SUFFIX)
        changed.append(jinja.name)
    for name in ("chat_template.json", "tokenizer_config.json", "processor_config.json"):
        path = directory / name
        if not path.is_file():
            continue
        data = _read_json(path)
        template = data.get("chat_template")
        if isinstance(template, str):
            data["chat_template"] = template + THINK_SUFFIX
        elif isinstance(template, list):
            for entry in template:
                entry["template"] = entry["template"] + THINK_SUFFIX
        else:
            continue
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        changed.append(name)
    return changed


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a model directory; malformed JSON is an error naming the file (copied from the VLM)."""
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise CorruptCheckpointError(f"{path.name} of the VLM: not valid JSON ({exc}); fix or re-download it") from exc
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{path.name} of the VLM: expected a JSON object; fix or re-download it")
    return data


# Settings for long reasoning, as DeepSeek-R1's model card recommends (temperature 0.6, top-p 0.95,
# sampling); 8192 new tokens leaves room for the paper's ~3.5k-token answers and their reflection.
REASONING_GENERATION = {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 8192}


def write_generation_config(directory: Path) -> dict[str, Any]:
    path = directory / "generation_config.json"
    config = _read_json(path) if path.is_file() else {}
    config.update(REASONING_GENERATION)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return config

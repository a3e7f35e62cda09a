"""Generation records (one JSON object per line) and the settings and model fingerprint they carry.

Scoring is a pure function of these records and the benchmark data, so a generations file can
be re-scored at any time (``frankmerge score``) and a resumed run can prove it uses the same model
and the same generation settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from frankmerge import __version__
from frankmerge.evaluation.errors import PredictionsError, ResumeConflictError

log = logging.getLogger(__name__)

# R1-style replies run 1-4k tokens and a long tail beyond 8k on hard math; 16384 keeps
# truncation rare while fitting, with the prompt and images, in a 32k context.
DEFAULT_MAX_NEW_TOKENS = 16384
BACKENDS: tuple[str, ...] = ("transformers", "vllm")
# Settings that change what a model writes; a resumed run must match them exactly.
OUTPUT_SETTINGS: tuple[str, ...] = (
    "backend",
    "max_new_tokens",
    "temperature",
    "top_p",
    "seed",
    "dtype",
    "think_template",
    "prompt_style",
)
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "error")
_SAMPLE_CHUNKS = 16
_SAMPLE_BYTES = 1 << 16
_TEXT_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".py", ".yaml")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides how replies are generated; recorded with every record."""

    backend: str = "transformers"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0  # greedy: the same replies every time
    top_p: float = 1.0
    seed: int = 0
    dtype: str = "auto"
    think_template: str = "model"  # "model", "open" (append <think>) or a Jinja template file
    prompt_style: str = "reasoning"  # "reasoning" (final answer in \boxed{}) or "official"
    batch_size: int = 8
    device: str = "auto"
    max_model_len: int | None = None  # vLLM only
    tensor_parallel: int | None = None  # vLLM only; None = chosen from model size and GPUs

    def output_affecting(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in OUTPUT_SETTINGS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ModelInfo:
    """Which model wrote a record: its path, a display name and a content fingerprint."""

    path: str = ""
    name: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class GenerationRecord:
    """One generated reply, as written to ``generations.jsonl``."""

    id: str
    raw_text: str
    # "stop", "length" (hit max_new_tokens) or "error" (item not generated); None: unknown, as in
    # predictions made by other tools, which the report then shows as unknown rather than guessing
    finish_reason: str | None = None
    n_tokens: int | None = None  # generated tokens, without the end-of-sequence token; None: unknown
    benchmark: str = ""
    n_prompt_tokens: int = 0
    think_open_in_prompt: bool = False  # the chat template opened a <think> block
    prompt_sha256: str = ""
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    model: ModelInfo = field(default_factory=ModelInfo)
    error: str | None = None  # why the item was not generated (e.g. an undecodable image)
    seconds: float = 0.0
    frankmerge_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["id"] = str(values["id"])
        if "raw_text" not in data:  # a minimal prediction: {"id": ..., "prediction": ...}
            values["raw_text"] = data.get("prediction")
        values["raw_text"] = "" if values.get("raw_text") is None else str(values["raw_text"])
        values["settings"] = GenerationSettings.from_dict(data.get("settings") or {})
        values["model"] = ModelInfo(**{k: v for k, v in (data.get("model") or {}).items() if k in ("path", "name", "sha256")})
        return cls(**values)


def read_records(path: Path) -> list[GenerationRecord]:
    """Records of a JSONL file; a torn last line (an interrupted run) is dropped with a warning.

    Only ``id`` and ``raw_text`` (or ``prediction``) are required, so predictions written by other
    tools can be scored; what they lack (token counts, finish reasons) is reported as unknown.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"predictions file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    records: dict[str, GenerationRecord] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                log.warning("%s:%d: dropping a torn last line (interrupted run); it will be regenerated", path, number)
                break
            raise PredictionsError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(data, dict) or "id" not in data or not ("raw_text" in data or "prediction" in data):
            raise PredictionsError(
                f"{path}:{number}: a prediction needs 'id' and 'raw_text' (or 'prediction'); "
                f"this line has {', '.join(map(repr, data)) if isinstance(data, dict) else 'no JSON object'}"
            )
        record = GenerationRecord.from_dict(data)
        if record.id in records:
            log.warning("%s:%d: id %s appears again; the later record wins", path, number, record.id)
        records[record.id] = record
    return list(records.values())


def append_records(path: Path, records: list[GenerationRecord]) -> None:
    """Append and flush, so an interrupted run keeps every finished batch."""
    with Path(path).open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.to_json() + "\n")
        handle.flush()


def check_resumable(existing: list[GenerationRecord], settings: GenerationSettings, model: ModelInfo, path: Path) -> None:
    """Refuse to mix generations of another model or other output-affecting settings in one file."""
    wanted = settings.output_affecting()
    for record in existing:
        if record.model.sha256 and record.model.sha256 != model.sha256:
            raise ResumeConflictError(
                f"{path} holds generations of another model ({record.model.path}, fingerprint "
                f"{record.model.sha256[:12]} vs {model.sha256[:12]}); use another --out"
            )
        have = record.settings.output_affecting()
        changed = [f"{k}: {have[k]!r} -> {wanted[k]!r}" for k in wanted if have[k] != wanted[k]]
        if changed:
            raise ResumeConflictError(
                f"{path} was generated with other settings ({'; '.join(changed)}); use the same options or another --out"
            )


def model_fingerprint(model_dir: Path) -> str:
    """SHA-256 over configs, tokenizer and chat template in full and weights sampled at 16 places.

    Reading every weight byte of a 30B model would take minutes; sampled chunks differ between any
    two merges or fine-tunes of the same architecture, and file sizes catch truncation.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(model_dir).iterdir() if p.is_file()):
        if file.suffix in _TEXT_SUFFIXES:
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
        elif file.suffix in _WEIGHT_SUFFIXES:
            size = file.stat().st_size
            digest.update(f"{file.name}\0{size}".encode())
            with file.open("rb") as handle:
                for k in range(_SAMPLE_CHUNKS):
                    handle.seek(max(0, (size - _SAMPLE_BYTES) * k // (_SAMPLE_CHUNKS - 1)))
                    digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def model_info(model_dir: Path, name: str | None = None) -> ModelInfo:
    path = Path(model_dir)
    return ModelInfo(path=str(path.resolve()), name=name or path.name, sha256=model_fingerprint(path))

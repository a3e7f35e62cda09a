"""Generation records, resumption checks, the vLLM settings translation (fake engine), batching helpers."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from frankmerge.evaluation.errors import BackendUnavailableError, PredictionsError, ResumeConflictError
from frankmerge.evaluation.generate import finish_of
from frankmerge.evaluation.prompting import PreparedPrompt, clean_reply
from frankmerge.evaluation.records import (
    DEFAULT_MAX_NEW_TOKENS,
    GenerationRecord,
    GenerationSettings,
    ModelInfo,
    append_records,
    check_resumable,
    model_fingerprint,
    read_records,
)
from frankmerge.evaluation.vllm_backend import VllmBackend, choose_tensor_parallel, engine_kwargs, sampling_kwargs

GB = 10**9


def test_record_round_trip_keeps_settings_and_model(tmp_path: Path) -> None:
    settings = GenerationSettings(max_new_tokens=64, temperature=0.6, seed=3)
    record = GenerationRecord("a", "<think>x</think>B", "length", 64, "mmmu", 10, True, "h", settings, ModelInfo("/m", "m", "f"))
    path = tmp_path / "g.jsonl"
    append_records(path, [record])
    (back,) = read_records(path)
    assert back == record
    assert set(json.loads(path.read_text())) >= {"id", "raw_text", "finish_reason", "n_tokens", "settings", "model"}


def test_torn_last_line_is_dropped_but_a_bad_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    good = GenerationRecord("a", "x", "stop", 1).to_json()
    path.write_text(good + "\n" + '{"id": "b", "raw_te')
    assert [r.id for r in read_records(path)] == ["a"]
    path.write_text('{"id": "b", "raw_te\n' + good + "\n")
    with pytest.raises(PredictionsError, match=":1: not valid JSON"):
        read_records(path)


def test_resume_refuses_other_settings_or_another_model() -> None:
    model = ModelInfo("/m", "m", "abc")
    existing = [GenerationRecord("a", "x", "stop", 1, settings=GenerationSettings(max_new_tokens=64), model=model)]
    check_resumable(existing, GenerationSettings(max_new_tokens=64, batch_size=2), model, Path("g.jsonl"))  # batch size is free
    with pytest.raises(ResumeConflictError, match="max_new_tokens: 64 -> 128"):
        check_resumable(existing, GenerationSettings(max_new_tokens=128), model, Path("g.jsonl"))
    with pytest.raises(ResumeConflictError, match="another model"):
        check_resumable(existing, GenerationSettings(max_new_tokens=64), ModelInfo("/n", "n", "def"), Path("g.jsonl"))


def test_fingerprint_changes_with_weights_and_template(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(bytes(300_000))
    first = model_fingerprint(model)
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    assert model_fingerprint(copy) == first
    weights = bytearray(300_000)
    weights[150_000] = 1  # one byte in the middle
    (copy / "model.safetensors").write_bytes(bytes(weights))
    assert model_fingerprint(copy) != first
    (model / "chat_template.jinja").write_text("{{ x }}")
    assert model_fingerprint(model) != first


def test_default_max_new_tokens_fits_long_reasoning() -> None:
    assert GenerationSettings().max_new_tokens == DEFAULT_MAX_NEW_TOKENS >= 8192


def test_finish_reason_from_generated_ids() -> None:
    assert finish_of([5, 6, 2, 3, 3], {2}, 5) == (2, "stop")
    assert finish_of([5, 6, 7], {2}, 3) == (3, "length")
    assert finish_of([5, 6, 7, 2], {2}, 4) == (3, "stop")  # EOS as the very last token still stops


def test_clean_reply_keeps_think_tags() -> None:
    assert clean_reply("<think>a</think>b</s><pad>", ["</s>", "<pad>", "<think>", "</think>"]) == "<think>a</think>b"


def test_tensor_parallel_grows_until_the_weights_fit() -> None:
    assert choose_tensor_parallel(14 * GB, 80 * GB, 8) == 1
    assert choose_tensor_parallel(70 * GB, 80 * GB, 8) == 2  # 70 > 0.8 * 80
    assert choose_tensor_parallel(200 * GB, 80 * GB, 8) == 4
    assert choose_tensor_parallel(900 * GB, 80 * GB, 8) == 8


def test_vllm_settings_are_translated_explicitly() -> None:
    settings = GenerationSettings(backend="vllm", max_new_tokens=16384, temperature=0.0, top_p=0.95, seed=7, max_model_len=32768)
    engine = engine_kwargs(Path("/models/m"), settings, max_images=7, tensor_parallel=2)
    assert engine["limit_mm_per_prompt"] == {"image": 7} and engine["max_model_len"] == 32768
    assert engine["tensor_parallel_size"] == 2 and engine["seed"] == 7 and engine["trust_remote_code"] is False
    sampling = sampling_kwargs(settings)
    assert sampling["max_tokens"] == 16384  # never vLLM's default of 16
    assert sampling["skip_special_tokens"] is False and sampling["temperature"] == 0.0 and sampling["top_p"] == 0.95
    assert "max_model_len" not in engine_kwargs(Path("m"), GenerationSettings(), 0, 1)
    assert engine_kwargs(Path("m"), GenerationSettings(), 0, 1)["limit_mm_per_prompt"] == {"image": 1}


@dataclass
class _Completion:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class _Output:
    outputs: list[_Completion]
    prompt_token_ids: list[int]


@dataclass
class _FakeEngine:
    calls: list[Any] = field(default_factory=list)

    def generate(self, requests: list[dict[str, Any]], params: Any, use_tqdm: bool = True) -> list[_Output]:
        self.calls.append((requests, params))
        return [
            _Output([_Completion("<think>w</think>\\boxed{A}</s>", [9, 9, 2], "stop")], [1, 1, 1]),
            _Output([_Completion("<think>cut", [9] * 4, "length")], [1]),
        ]


class _FakeTokenizer:
    eos_token_id = 2
    all_special_tokens = ["</s>", "<think>", "</think>"]


def test_vllm_backend_requests_and_replies_with_a_fake_engine() -> None:
    engine = _FakeEngine()
    backend = VllmBackend(Path("m"), GenerationSettings(), 1, processor=_FakeTokenizer(), engine=engine, sampling_params="SP")
    prompts = [PreparedPrompt("1", "p1", ("IMG",), False, "h"), PreparedPrompt("2", "p2", (), True, "h")]
    first, second = backend.generate(prompts)
    requests, params = engine.calls[0]
    assert requests == [{"prompt": "p1", "multi_modal_data": {"image": ["IMG"]}}, {"prompt": "p2"}] and params == "SP"
    assert (first.text, first.finish_reason, first.n_tokens, first.n_prompt_tokens) == (
        "<think>w</think>\\boxed{A}",
        "stop",
        2,
        3,
    )
    assert (second.finish_reason, second.n_tokens) == ("length", 4)


def test_vllm_backend_without_vllm_is_a_clear_error() -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(BackendUnavailableError, match="pip install vllm"):
        VllmBackend(Path("m"), GenerationSettings(backend="vllm"), 1, processor=_FakeTokenizer())

"""Optional vLLM backend: the same prompts, every setting translated explicitly.

vLLM defaults to ``max_tokens=16`` and strips special tokens (so a special ``</think>`` vanishes);
here max_tokens is the run's ``max_new_tokens`` and special tokens are kept, then cleaned like the
transformers backend does. Models larger than one GPU are split with tensor parallelism.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from frankmerge.errors import human_size
from frankmerge.evaluation.errors import BackendUnavailableError
from frankmerge.evaluation.generate import Generation
from frankmerge.evaluation.prompting import PreparedPrompt, clean_reply
from frankmerge.evaluation.records import GenerationSettings

log = logging.getLogger(__name__)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
MEMORY_HEADROOM = 0.8  # weights may fill this share of the GPUs; the rest is KV cache and activations


def choose_tensor_parallel(model_bytes: int, gpu_bytes: int, n_gpus: int) -> int:
    """Smallest power-of-two GPU count whose memory holds the weights with headroom (at most n_gpus)."""
    size = 1
    while size < n_gpus and model_bytes > MEMORY_HEADROOM * size * gpu_bytes:
        size *= 2
    size = min(size, max(n_gpus, 1))
    if model_bytes > MEMORY_HEADROOM * size * gpu_bytes:
        log.warning("the weights (%s) may not fit on %d GPU(s)", human_size(model_bytes), size)
    return size


def weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).iterdir() if p.suffix in _WEIGHT_SUFFIXES)


def engine_kwargs(model_dir: Path, settings: GenerationSettings, max_images: int, tensor_parallel: int) -> dict[str, Any]:
    """Arguments of ``vllm.LLM``: image limit from the data, context length, parallelism, seed."""
    kwargs: dict[str, Any] = {
        "model": str(model_dir),
        "limit_mm_per_prompt": {"image": max(max_images, 1)},
        "tensor_parallel_size": tensor_parallel,
        "dtype": settings.dtype,
        "seed": settings.seed,
        "trust_remote_code": False,
    }
    if settings.max_model_len is not None:
        kwargs["max_model_len"] = settings.max_model_len
    return kwargs


def sampling_kwargs(settings: GenerationSettings) -> dict[str, Any]:
    """Arguments of ``vllm.SamplingParams``; temperature 0 is greedy in vLLM too."""
    return {
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "seed": settings.seed,
        "skip_special_tokens": False,
    }


def _gpu_layout() -> tuple[int, int]:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("--backend vllm needs a CUDA GPU; use --backend transformers on CPU")
    return torch.cuda.device_count(), torch.cuda.get_device_properties(0).total_memory


class VllmBackend:
    """Generate with a ``vllm.LLM``; `engine` and `sampling_params` can be injected (tests)."""

    def __init__(
        self,
        model_dir: Path,
        settings: GenerationSettings,
        max_images: int,
        processor: Any = None,
        engine: Any = None,
        sampling_params: Any = None,
    ) -> None:
        self.settings = settings
        if processor is None:
            import transformers as tf

            processor = tf.AutoProcessor.from_pretrained(model_dir)
        self.processor = processor
        tokenizer = getattr(processor, "tokenizer", processor)
        self.specials = list(getattr(tokenizer, "all_special_tokens", []))
        self.eos_ids = {tokenizer.eos_token_id} - {None}
        if engine is None:
            engine, sampling_params = self._start(model_dir, max_images)
        self.engine = engine
        self.sampling_params = sampling_params

    def _start(self, model_dir: Path, max_images: int) -> tuple[Any, Any]:
        try:
            import vllm  # type: ignore[import-not-found]
        except ImportError as exc:
            raise BackendUnavailableError("--backend vllm: vllm is not installed (pip install vllm)") from exc
        tensor_parallel = self.settings.tensor_parallel
        if tensor_parallel is None:
            n_gpus, gpu_bytes = _gpu_layout()
            tensor_parallel = choose_tensor_parallel(weights_bytes(model_dir), gpu_bytes, n_gpus)
        kwargs = engine_kwargs(model_dir, self.settings, max_images, tensor_parallel)
        log.info("starting vLLM with %s", kwargs)
        return vllm.LLM(**kwargs), vllm.SamplingParams(**sampling_kwargs(self.settings))

    def generate(self, prompts: Sequence[PreparedPrompt]) -> list[Generation]:
        requests = [{"prompt": p.text, **({"multi_modal_data": {"image": list(p.images)}} if p.images else {})} for p in prompts]
        outputs = self.engine.generate(requests, self.sampling_params, use_tqdm=False)
        generations = []
        for output in outputs:
            completion = output.outputs[0]
            token_ids = list(completion.token_ids)
            ends_in_eos = bool(token_ids) and token_ids[-1] in self.eos_ids
            finish = "length" if completion.finish_reason == "length" else "stop"
            generations.append(
                Generation(
                    text=clean_reply(completion.text, self.specials),
                    finish_reason=finish,
                    n_tokens=len(token_ids) - int(ends_in_eos),
                    n_prompt_tokens=len(output.prompt_token_ids or []),
                )
            )
        return generations

"""``frankmerge profile``: the per-layer visual-attention ratio a_l of a VLM and its decay fit.

The VLM runs through transformers with its own processor and chat template, one image at a time
(no padding to reason about), with the attention probe of ``attention.py`` on its text decoder.
Everything that can be wrong with the input (model, images, options) is checked before the model
is loaded, and nothing is written here: ``profile_report.write_profile`` writes the result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frankmerge.analysis.attention import AttentionProbe, ProbeTarget
from frankmerge.analysis.calibration import CalibrationSet, bundled_calibration_set
from frankmerge.analysis.errors import ProfileError
from frankmerge.analysis.fit import bootstrap_alpha, fit_decay
from frankmerge.analysis.internvl_chat import ChatProcessor, check_runnable, is_internvl_chat, load_native
from frankmerge.analysis.profile_report import (
    QUERY_DESCRIPTIONS,
    ImageRecord,
    ModelInfo,
    Profile,
    ProfileOptions,
    check_output_path,
    write_profile,
)
from frankmerge.checkpoints.reader import Checkpoint
from frankmerge.checkpoints.resolve import resolve_checkpoint
from frankmerge.errors import one_line
from frankmerge.layouts import read_config
from frankmerge.layouts.families import BY_MODEL_TYPE, FAMILIES
from frankmerge.progress import progress_bar

log = logging.getLogger(__name__)

IMAGE_TOKEN_KEYS = ("image_token_id", "image_token_index")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def profile_vlm(
    vlm: str | Path,
    images: CalibrationSet | None = None,
    options: ProfileOptions | None = None,
    *,
    allow_download: bool = False,
    progress: bool = False,
) -> Profile:
    """Measure a_l on ``images`` (default: the bundled calibration set) and fit its decay."""
    options = options or ProfileOptions()
    _check_options(options)
    started = time.perf_counter()
    path = resolve_checkpoint(vlm, role="vlm", allow_download=allow_download)
    info = _model_info(str(vlm), path, options.trust_remote_code)
    source = (images if images is not None else bundled_calibration_set()).subset(options.max_images, options.seed)

    model, processor = _load(path, options, info)
    loaded = time.perf_counter()
    probe = AttentionProbe(model)
    if probe.num_layers != info.num_layers:
        raise ProfileError(f"--vlm {vlm}: config says {info.num_layers} decoder layers, the model has {probe.num_layers}")
    probe.install()
    rows, records = [], []
    for image in progress_bar(source, desc="profiling", unit="image", disable=not progress):
        begin = time.perf_counter()
        inputs = _inputs(processor, model, image.load(), options.prompt)
        sums, visual, prompt_len = _measure(model, probe, inputs, info.image_token_id, options, image.name)
        rows.append(sums.ratios().numpy())
        seconds = time.perf_counter() - begin
        records.append(ImageRecord(image.name, visual, sums.rows, prompt_len, seconds))
    per_image = np.stack(rows)
    done = time.perf_counter()
    fit = fit_decay(per_image.mean(axis=0))
    boot = bootstrap_alpha(per_image, n_boot=options.n_boot, seed=options.seed)
    timings = {
        "load_s": loaded - started,
        "images_s": done - loaded,
        "per_image_s": (done - loaded) / len(records),
        "fit_s": time.perf_counter() - done,
        "total_s": time.perf_counter() - started,
    }
    log.info("profiled %d images: alpha=%.4g C=%.4g r2=%s", len(records), fit.alpha, fit.C, fit.r2)
    return Profile(
        model=replace(info, num_heads=probe_heads(model)),
        options=options,
        source_kind=source.kind,
        source=source.source,
        skipped=source.skipped,
        images=tuple(records),
        per_image=per_image,
        fit=fit,
        bootstrap=boot,
        device=_device_text(model),
        dtype=str(model.dtype).removeprefix("torch."),
        timings=timings,
    )


def profile_for_merge(vlm: str | Path, out: Path, *, allow_download: bool = False, progress: bool = True) -> Profile:
    """What ``frankmerge merge`` runs when no prior option is given: the default profile on the bundled
    calibration set, written to ``out`` (JSON, plus the PNG next to it) for ``prior_from_profile``."""
    check_output_path(out)
    profile = profile_vlm(vlm, allow_download=allow_download, progress=progress)
    write_profile(profile, out)
    return profile


def _check_options(options: ProfileOptions) -> None:
    if options.query not in QUERY_DESCRIPTIONS:
        raise ProfileError(f"--query {options.query!r}: choose one of {', '.join(QUERY_DESCRIPTIONS)}")
    if options.query == "generated" and options.max_new_tokens < 1:
        raise ProfileError("--max-new-tokens must be at least 1 with --query generated")
    if options.dtype != "auto" and options.dtype not in DTYPES:
        raise ProfileError(f"--dtype {options.dtype!r}: choose auto, {', '.join(DTYPES)}")
    if options.n_boot < 2:
        raise ProfileError("--bootstrap must be at least 2 draws")


def _model_info(reference: str, path: Path, trust_remote_code: bool = False) -> ModelInfo:
    """Refuse anything but a supported VLM family before loading weights; read its image-token id."""
    config = read_config(path, "vlm")
    family = BY_MODEL_TYPE.get(config.model_type)
    _refuse_remote_code(reference, config.raw, trust_remote_code)
    supported = ", ".join(f.name for f in FAMILIES if f.kind == "vlm")
    if family is None:
        raise ProfileError(f"--vlm {reference}: model_type {config.model_type!r} is not a supported VLM family ({supported})")
    if family.kind != "vlm":
        raise ProfileError(f"--vlm {reference}: is a text-only {config.model_type} model; profile the vision-language model")
    if is_internvl_chat(config.raw):  # run through transformers' own InternVL: no remote code
        check_runnable(config.raw, f"--vlm {reference}")
        token = ChatProcessor(path, config.raw, f"--vlm {reference}").image_token_id
        return ModelInfo(reference, str(path), config.model_type, config.text_model_type, config.num_layers, 0, token)
    from transformers import AutoConfig

    auto = AutoConfig.from_pretrained(path, trust_remote_code=False)
    token = next((getattr(auto, k) for k in IMAGE_TOKEN_KEYS if isinstance(getattr(auto, k, None), int)), None)
    if token is None:
        raise ProfileError(f"--vlm {reference}: config.json has no {' or '.join(IMAGE_TOKEN_KEYS)}; cannot find the image tokens")
    return ModelInfo(reference, str(path), config.model_type, config.text_model_type, config.num_layers, 0, int(token))


def _refuse_remote_code(reference: str, raw: dict[str, Any], trust_remote_code: bool) -> None:
    """Profiling runs the model; for checkpoints that ship code that means executing it."""
    if raw.get("model_type") == "llava_llama":
        raise ProfileError(
            f"--vlm {reference}: NVILA runs only with NVlabs' VILA package, not through transformers; "
            "choose the prior by hand (--alpha) or profile another VLM of its family"
        )
    if "auto_map" not in raw or is_internvl_chat(raw):
        return
    if not trust_remote_code:
        raise ProfileError(
            f"--vlm {reference}: this checkpoint ships its own modelling code ({', '.join(raw.get('architectures', []))}); "
            "profiling runs the model, so pass --trust-remote-code to allow executing it (merge and analyze never do)"
        )
    raise ProfileError(
        f"--vlm {reference}: profiling remote-code VLMs other than InternVL2.5/InternVL2 chat checkpoints is not "
        "supported (their forward passes share no interface); use the model's transformers-native '-hf' conversion, "
        "or choose --alpha by hand"
    )


def _load(path: Path, options: ProfileOptions, info: ModelInfo) -> tuple[Any, Any]:
    """The model in eval mode and its processor."""
    kwargs: dict[str, Any] = {"dtype": "auto" if options.dtype == "auto" else DTYPES[options.dtype]}
    device = options.device
    if device == "auto":
        device = "auto" if torch.cuda.is_available() else "cpu"
    if device == "auto":
        kwargs["device_map"] = "auto"
    elif device != "cpu":
        kwargs["device_map"] = {"": device}
    raw = read_config(path, "vlm").raw
    if is_internvl_chat(raw):  # no processor of its own, and remote code: transformers' InternVL runs it
        processor = ChatProcessor(path, raw, f"--vlm {info.reference}")
        with Checkpoint(path) as weights:
            return load_native(weights, raw, info.image_token_id, f"--vlm {info.reference}", **kwargs), processor
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path)
    except Exception as exc:  # transformers raises OSError, ValueError, AttributeError for missing/odd files
        raise ProfileError(f"--vlm {path}: cannot load its processor ({type(exc).__name__}: {one_line(exc)})") from exc
    if getattr(processor, "chat_template", None) is None:
        raise ProfileError(f"--vlm {path}: the processor has no chat template; add chat_template.jinja to the model directory")
    return AutoModelForImageTextToText.from_pretrained(path, **kwargs).eval(), processor


def _inputs(processor: Any, model: Any, image: Any, prompt: str) -> dict[str, torch.Tensor]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[image], return_tensors="pt")
    device = model.get_input_embeddings().weight.device
    return {
        k: v.to(device=device, dtype=model.dtype if v.is_floating_point() else v.dtype)
        for k, v in batch.items()
        if isinstance(v, torch.Tensor)
    }


def _measure(
    model: Any, probe: AttentionProbe, inputs: dict[str, torch.Tensor], image_token: int, options: ProfileOptions, name: str
) -> tuple[Any, int, int]:
    """One image through the model with the probe on: its sums, visual-token count and prompt length."""
    ids = inputs["input_ids"][0].cpu()
    visual = ids == image_token
    n_visual = int(visual.sum())
    if n_visual == 0:
        raise ProfileError(f"image {name}: the processor produced no tokens with the config's image-token id {image_token}")
    if options.query == "after_image":
        last = int(visual.nonzero().max())
        queries: torch.Tensor | None = torch.arange(last + 1, ids.numel())
        if queries.numel() == 0:  # type: ignore[union-attr]
            raise ProfileError(f"image {name}: no prompt token follows the image; use --query last")
    elif options.query == "last":
        queries = torch.tensor([ids.numel() - 1])
    else:
        queries = None
    target = ProbeTarget(visual=visual, query_positions=queries, exclude_sink=options.exclude_sink)
    with torch.inference_mode(), probe.measure(target):
        if queries is None:
            steps = options.max_new_tokens + 1  # the last generated token is never fed back
            model.generate(
                **inputs,
                max_new_tokens=steps,
                min_new_tokens=steps,
                do_sample=False,
                suppress_tokens=[image_token],
                pad_token_id=_pad_id(model),
            )
        else:
            model(**inputs, use_cache=False, **_logits_to_keep(model))
    return probe.sums(), n_visual, ids.numel()


def _logits_to_keep(model: Any) -> dict[str, int]:
    """Only the last position's logits: a 150k-entry vocabulary times the sequence is otherwise the biggest tensor."""
    import inspect

    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _pad_id(model: Any) -> int | None:
    config = model.generation_config
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    return pad[0] if isinstance(pad, list) else pad


def probe_heads(model: Any) -> int:
    return int(model.config.get_text_config().num_attention_heads)


def _device_text(model: Any) -> str:
    devices = getattr(model, "hf_device_map", None)
    if devices:
        return "device_map=auto: " + ", ".join(sorted({str(d) for d in devices.values()}))
    return str(model.device)

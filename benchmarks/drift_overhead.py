#!/usr/bin/env python
"""DRIFT overhead: step time and peak memory of plain SFT vs DRIFT vs the paper's per-step host copy.

Builds (once, cached under ``benchmarks/.cache/drift``) a small Qwen2-VL-shaped VLM — a Qwen2
text decoder of ``--hidden`` x ``--layers`` with a tiny vision tower — and a matching Qwen2
"reasoner", then the DRIFT prior with ``frankmerge.drift.build_prior`` (attention + MLP, bf16).
One training step is forward + backward + AdamW step on ``--seq`` random tokens (batch 1; the
vision tower frozen as in ``drift-train``). Modes:

  sft              no guidance
  drift            the default: adaptive, per-backward hooks, Δ̂ resident beside the parameters in
                   the automatic dtype (bf16 on a GPU, float32 on CPU)
  drift_bf16       the same with Δ̂ resident in bf16 (the GPU default, measured on this device)
  drift_step       the default with timing=step (guidance once per optimizer step)
  paper_host_copy  the public implementation's scheme: float32 Δ on the host, copied to the
                   device on every backward and ‖Δ‖ recomputed each time

Step times are measured in one process with the modes interleaved step by step (``--rounds`` x
``--steps`` steps each), so that load from other processes hits every mode alike; the overhead
is the median of each step's time over the SFT step just before it, also min over min, and —
least sensitive to a shared machine — the guidance work alone (every covered tensor guided once
with a random gradient, min of 5 repeats) over the fastest SFT step.
Peak memory is measured per mode in a fresh subprocess over three steps after the first (peak
RSS, reset before the steps; on CUDA also peak allocated device memory).
Results go to ``benchmarks/results/drift_overhead.json``.

    python benchmarks/drift_overhead.py [--hidden 512] [--layers 8] [--seq 1024] [--steps 6] [--rounds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "drift"
RESULTS = HERE / "results" / "drift_overhead.json"
MODES: dict[str, dict[str, Any] | None] = {
    "sft": None,
    "drift": {},
    "drift_bf16": {"delta_dtype": torch.bfloat16},
    "drift_step": {"timing": "step"},
    "paper_host_copy": {"placement": "host_copy"},
}


def build_models(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """VLM, reasoner and prior for these dimensions, built once."""
    import transformers as tf

    from frankmerge.drift import PriorOptions, build_prior

    root = CACHE / f"h{args.hidden}-l{args.layers}"
    vlm, reasoner, prior = root / "vlm", root / "reasoner", root / "prior.safetensors"
    if prior.is_file():
        return vlm, reasoner, prior
    text = dict(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 256),
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    mrope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]}
    config = tf.AutoConfig.for_model(
        "qwen2_vl",
        text_config={"model_type": "qwen2_vl_text", **text, "rope_parameters": mrope},
        vision_config=dict(depth=2, embed_dim=32, hidden_size=args.hidden, num_heads=2, mlp_ratio=2, patch_size=14),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = tf.AutoModelForImageTextToText.from_config(config)
    model.save_pretrained(vlm)
    llm = tf.AutoModelForCausalLM.from_config(tf.AutoConfig.for_model("qwen2", **text))
    with torch.no_grad():
        decoder = model.get_decoder()
        for (name, param), (_, source) in zip(llm.model.named_parameters(), decoder.named_parameters(), strict=True):
            param.copy_(source + 0.01 * torch.randn_like(source), non_blocking=False)
            assert param.shape == source.shape, name
    llm.save_pretrained(reasoner)
    build_prior(vlm, reasoner, prior, PriorOptions(overwrite=True))
    return vlm, reasoner, prior


def load(vlm: Path, device: torch.device) -> tuple[Any, torch.optim.Optimizer]:
    import transformers as tf

    from frankmerge.drift.train import freeze_outside_language_model

    model = tf.AutoModelForImageTextToText.from_pretrained(vlm, dtype=torch.float32).to(device)
    model.train()
    freeze_outside_language_model(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    return model, optimizer


def step(model: Any, optimizer: torch.optim.Optimizer, tokens: torch.Tensor) -> float:
    sync(tokens.device)
    start = time.perf_counter()
    model(input_ids=tokens, labels=tokens).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(tokens.device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def prepare(model: Any, optimizer: torch.optim.Optimizer, prior: Path) -> dict[str, Any]:
    """Every mode's precomputed targets, attached once to build them, then detached."""
    from frankmerge.drift import attach_drift

    handles = {}
    for mode, options in MODES.items():
        if options is not None:
            handles[mode] = attach_drift(model, prior, optimizer=optimizer, **options)
            handles[mode].remove()
    return handles


def enable(handle: Any, optimizer: torch.optim.Optimizer) -> Any:
    from frankmerge.drift.guidance import GuidanceHooks

    return GuidanceHooks(handle.guide, handle.hooks.targets, handle.config.timing, optimizer)


def time_modes(
    args: argparse.Namespace, vlm: Path, prior: Path, device: torch.device
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, float]]:
    """Per-step times of every mode, interleaved step by step so that machine load hits each alike."""
    model, optimizer = load(vlm, device)
    handles = prepare(model, optimizer, prior)
    tokens = torch.randint(0, args.vocab, (1, args.seq), generator=torch.Generator().manual_seed(0)).to(device)
    for _ in range(2):  # warm-up: allocator, kernels, optimizer state
        step(model, optimizer, tokens)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds * args.steps):
        for mode in MODES:
            hooks = enable(handles[mode], optimizer) if mode in handles else None
            times[mode].append(step(model, optimizer, tokens))
            if hooks is not None:
                hooks.remove()
    return times, {mode: handle.delta_bytes for mode, handle in handles.items()}, isolated_guidance(handles, device)


def isolated_guidance(handles: dict[str, Any], device: torch.device, repeats: int = 5) -> dict[str, float]:
    """Seconds one step's guidance takes on its own (every covered tensor once, min over repeats).

    Less sensitive to other processes than whole-step differences: a short loop, repeated.
    """
    grads = [torch.randn_like(t.param) for t in next(iter(handles.values())).hooks.targets]
    cost = {}
    for mode, handle in handles.items():
        best = float("inf")
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            for grad, target in zip(grads, handle.hooks.targets, strict=True):
                if handle.config.timing == "step":
                    handle.guide.guide_(grad, target.term)
                else:
                    handle.guide.guided(grad, target.term)
            sync(device)
            best = min(best, time.perf_counter() - start)
        cost[mode] = best
    return cost


def measure_memory(args: argparse.Namespace, vlm: Path, prior: Path, device: torch.device, mode: str) -> dict[str, float]:
    """Peak memory of a few steps with only ``mode``'s Δ loaded (run in its own process)."""
    from frankmerge.drift import attach_drift

    model, optimizer = load(vlm, device)
    options = MODES[mode]
    if options is not None:
        attach_drift(model, prior, optimizer=optimizer, **options)
    tokens = torch.randint(0, args.vocab, (1, args.seq), generator=torch.Generator().manual_seed(0)).to(device)
    step(model, optimizer, tokens)  # optimizer state exists from here on
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mb("VmRSS")
    _reset_peak_rss()  # importing torch maps large libraries; measure the training steps only
    for _ in range(3):
        step(model, optimizer, tokens)
    peak = {"rss_before_steps_mb": before, "peak_rss_during_steps_mb": _rss_mb("VmHWM")}
    if device.type == "cuda":
        peak["peak_device_allocated_mb"] = torch.cuda.max_memory_allocated() / (1 << 20)
    return peak


def _rss_mb(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (Linux); ru_maxrss elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per mode per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-only", help=argparse.SUPPRESS)  # internal: one mode's peak memory
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = torch.device(args.device)
    vlm, _, prior = build_models(args)
    if args.memory_only:
        print(json.dumps(measure_memory(args, vlm, prior, device, args.memory_only)))
        return
    load_before = os.getloadavg()
    times, delta_bytes, guidance_s = time_modes(args, vlm, prior, device)
    load_after = os.getloadavg()
    memory = {mode: _memory_subprocess(mode) for mode in MODES}
    results = {}
    for mode, samples in times.items():
        # paired with the sft step run just before it: contention from other processes cancels
        ratios = [t / base for t, base in zip(samples, times["sft"], strict=True)]
        results[mode] = {
            "median_step_s": round(statistics.median(samples), 4),
            "min_step_s": round(min(samples), 4),
            "steps": len(samples),
            "overhead_vs_sft_pct_paired_median": round(100 * (statistics.median(ratios) - 1), 1),
            "overhead_vs_sft_pct_min": round(100 * (min(samples) / min(times["sft"]) - 1), 1),
            "guidance_alone_ms": round(1e3 * guidance_s.get(mode, 0.0), 1),
            "overhead_vs_sft_pct_guidance_alone_over_min_sft": round(100 * guidance_s.get(mode, 0.0) / min(times["sft"]), 1),
            "resident_delta_mb": round(delta_bytes.get(mode, 0) / 1e6, 1),
            **{k: round(v, 1) for k, v in memory[mode].items()},
        }
    report = {
        "benchmark": "drift_overhead",
        "model": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab, "seq": args.seq, "batch": 1},
        "covered_parameters": _covered(prior),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [round(x, 2) for x in (*load_before, *load_after)],
        "platform": platform.platform(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _memory_subprocess(mode: str) -> dict[str, float]:
    command = [sys.executable, __file__, *sys.argv[1:], "--memory-only", mode]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _covered(prior: Path) -> int:
    from frankmerge.drift import load_prior

    return sum(torch.Size(e.shape).numel() for e in load_prior(prior).meta.entries.values())


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What `frankmerge profile` costs relative to a plain forward pass, and relative to brute force.

Builds a random LLaVA-1.5-shaped VLM from a config (CLIP-style tower at 336 px, i.e. 576 image
tokens; a Llama decoder of ``--layers`` x ``--hidden``, GQA) and one prompt of 576 image tokens
plus ``--text-tokens`` text tokens, then times, interleaved, best and median of ``--repeats``:

  a. plain:  the model's own forward with SDPA (``logits_to_keep=1``, no cache), nothing measured;
  b. probe:  the same forward with frankmerge's attention probe on the text decoder, measuring a_l
             for every text token after the image (``--query after_image``, the default);
  c. eager:  brute force, ``attn_implementation="eager"`` with ``output_attentions=True`` (every
             layer's full attention matrix returned), the usual way to get a_l.

Peak memory of each mode is measured in a fresh subprocess (peak RSS after the forward minus RSS
after building the model and inputs). Results go to ``benchmarks/results/profile_cost.json``.

    python benchmarks/profile_cost.py [--layers 16] [--hidden 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers as tf

HERE = Path(__file__).resolve().parent
IMAGE_TOKEN = 32000
MODES = ("plain", "probe", "eager")


def build(args: argparse.Namespace, attn: str = "sdpa") -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    text = dict(
        model_type="llama",
        vocab_size=32064,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 256),
        max_position_embeddings=4096,
    )
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=336,
        patch_size=14,
    )
    config = tf.LlavaConfig(text_config=text, vision_config=vision, image_token_index=IMAGE_TOKEN, image_seq_length=576)
    torch.manual_seed(0)
    model = tf.LlavaForConditionalGeneration._from_config(config, attn_implementation=attn, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(1)
    text_ids = torch.randint(100, 32000, (args.text_tokens,), generator=generator)
    ids = torch.cat([torch.tensor([1]), torch.full((576,), IMAGE_TOKEN), text_ids])[None]
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(1, 3, 336, 336, generator=generator),
    }
    return model, inputs


def runner(mode: str, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A zero-argument function that runs one forward of ``mode``."""
    from frankmerge.analysis.attention import AttentionProbe, ProbeTarget

    model, inputs = build(args, "eager" if mode == "eager" else "sdpa")
    ids = inputs["input_ids"][0]
    visual = ids == IMAGE_TOKEN
    if mode == "plain":
        return lambda: model(**inputs, use_cache=False, logits_to_keep=1)
    if mode == "eager":
        return lambda: model(**inputs, use_cache=False, logits_to_keep=1, output_attentions=True)
    probe = AttentionProbe(model)
    probe.install()
    target = ProbeTarget(visual, torch.arange(int(visual.nonzero().max()) + 1, ids.numel()), exclude_sink=False)

    def run():  # type: ignore[no-untyped-def]
        with probe.measure(target):
            model(**inputs, use_cache=False, logits_to_keep=1)
        return probe.sums()

    return run


def status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_memory(mode: str, args: argparse.Namespace) -> None:
    """Child process: peak RSS growth of one forward, after resetting the peak (Linux clear_refs 5)."""
    run = runner(mode, args)
    with torch.inference_mode():
        run()  # first-call allocations (kernels, caches) are not the forward's working memory
        before = status_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        run()
    peak = status_mib("VmHWM")
    print(json.dumps({"mode": mode, "rss_before_mib": before, "peak_rss_mib": peak, "forward_extra_mib": peak - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--memory-mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profile_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_mode:
        measure_memory(args.memory_mode, args)
        return

    runs = {mode: runner(mode, args) for mode in MODES}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    with torch.inference_mode():
        for mode in MODES:
            runs[mode]()  # warm-up
        for _ in range(args.repeats):
            for mode in MODES:
                start = time.perf_counter()
                runs[mode]()
                times[mode].append(time.perf_counter() - start)
    memory = {}
    for mode in MODES:
        child = [sys.executable, __file__, "--memory-mode", mode, "--threads", str(args.threads)]
        child += ["--layers", str(args.layers), "--hidden", str(args.hidden), "--text-tokens", str(args.text_tokens)]
        memory[mode] = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    median = {mode: statistics.median(values) for mode, values in times.items()}
    best = {mode: min(values) for mode, values in times.items()}
    result = {
        "benchmark": "profile_cost",
        "model": f"random LLaVA-shaped VLM: Llama decoder {args.layers} layers x {args.hidden} hidden, "
        f"{args.hidden // 64} query / {max(1, args.hidden // 256)} kv heads; CLIP-style tower 4 x 256 at 336 px",
        "sequence": {"image_tokens": 576, "text_tokens_after_image": args.text_tokens, "total": 577 + args.text_tokens},
        "device": "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": tf.__version__,
        "machine": platform.platform(),
        "repeats": args.repeats,
        "seconds": {mode: {"min": best[mode], "median": median[mode], "all": times[mode]} for mode in MODES},
        # Best-of-N is the least disturbed by other load on a shared machine; the median is kept too.
        "relative_to_plain": {mode: best[mode] / best["plain"] for mode in MODES},
        "relative_to_plain_median": {mode: median[mode] / median["plain"] for mode in MODES},
        "peak_memory": memory,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("relative_to_plain", "sequence")}, indent=2))
    for mode in MODES:
        print(
            f"{mode:>6}: best {best[mode] * 1000:8.1f} ms, median {median[mode] * 1000:8.1f} ms, "
            f"forward peak RSS growth {memory[mode]['forward_extra_mib']:7.1f} MiB"
        )


if __name__ == "__main__":
    main()

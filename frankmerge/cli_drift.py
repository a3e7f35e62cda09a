"""DRIFT commands: ``drift-prior`` builds the reasoning prior, ``drift-train`` fine-tunes with it.

Commands only parse, call ``frankmerge.drift`` and print; the API is imported lazily so that
``frankmerge --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

_MODULES_HELP = "Module groups to cover, comma-separated, from attn,mlp,norm,embed,head [attn,mlp, as the paper]."
_DTYPES = click.Choice(["bfloat16", "float16", "float32"])
_THREADS_HELP = "Threads that compute [every core this process may run on]; the prior is the same for any count."


@click.command("drift-prior")
@click.option("--vlm", required=True, help="Vision-language model: local directory or hub id (offline cache).")
@click.option("--reasoner", required=True, help="Reasoning LLM fine-tuned from the VLM's base LLM.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Prior file, e.g. prior.safetensors.")
@click.option("--modules", default="attn,mlp", show_default=True, help=_MODULES_HELP)
@click.option("--dtype", type=_DTYPES, default="bfloat16", show_default=True, help="Storage dtype of Δ.")
@click.option("--vlm-layout", help="Override the detected layout table of the VLM (see `frankmerge layouts`).")
@click.option("--reasoner-layout", help="Override the reasoner's layout table.")
@click.option("--allow-pickle", is_flag=True, help="Read pickled .bin weights (weights_only=True).")
@click.option("--allow-nonfinite", is_flag=True, help="Do not stop on NaN/Inf in Δ.")
@click.option("--download", "allow_download", is_flag=True, help="Download hub ids missing from the cache.")
@click.option("--overwrite", is_flag=True, help="Replace an existing prior file.")
@click.option("--threads", type=click.IntRange(min=1), help=_THREADS_HELP)
def drift_prior(vlm: str, reasoner: str, out: Path, modules: str, dtype: str, **flags: Any) -> None:
    """Compute the DRIFT prior Δ = θ_reasoner − θ_vlm over the VLM's language decoder into OUT.

    \b
    Tensors are keyed by canonical decoder names (layers.{i}.{suffix}, embed_tokens.weight,
    norm.weight, lm_head.weight); the metadata records the VLM's own names, ‖Δ‖ per tensor and
    the inputs. The vision tower and projector are never covered.
    """
    from frankmerge.drift.coverage import parse_modules
    from frankmerge.drift.prior import PriorOptions, build_prior, prior_dtype

    options = PriorOptions(modules=parse_modules(modules), dtype=prior_dtype(dtype), **flags)
    prior = build_prior(vlm, reasoner, out, options)
    meta = prior.meta
    click.echo(
        f"prior written to {prior.path}: {len(meta.entries)} tensors ({', '.join(meta.modules)}), ‖Δ‖ = {meta.total_norm:.6g}"
    )
    if meta.uncovered:
        click.echo(f"decoder tensors outside these groups (not covered): {len(meta.uncovered)}")


@click.command("drift-train")
@click.option("--vlm", required=True, help="Vision-language model to fine-tune: local directory or hub id.")
@click.option("--reasoner", help="Reasoning LLM; the prior Δ = reasoner − vlm is built into OUT (unless --prior).")
@click.option("--prior", type=click.Path(path_type=Path, dir_okay=False), help="Use this prior file (from drift-prior).")
@click.option("--data", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Chat JSONL (see docs/drift.md).")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Output checkpoint directory.")
@click.option("--variant", default="adaptive", show_default=True, help="absolute | grad_norm | adaptive | none (plain SFT).")
@click.option("--alpha", type=float, default=-1.0, show_default=True, help="Prior weight α (negative moves toward the reasoner).")
@click.option("--modules", help=f"{_MODULES_HELP} With --prior: every group it covers.")
@click.option("--timing", default="backward", show_default=True, help="backward (per micro-batch, as the paper) | step.")
@click.option(
    "--placement", default="device", show_default=True, help="Where Δ lives: device (resident) | pinned (host, copied per use)."
)
@click.option("--delta-dtype", type=_DTYPES, help="dtype of resident Δ [bf16 on GPU, float32 on CPU].")
@click.option("--prior-dtype", type=_DTYPES, default="bfloat16", show_default=True, help="Storage dtype of a new prior.")
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=1e-6, show_default=True)
@click.option("--scheduler", default="cosine", show_default=True, help="Learning-rate schedule (transformers name).")
@click.option("--warmup-ratio", type=float, default=0.05, show_default=True)
@click.option("--batch-size", type=int, default=1, show_default=True, help="Per-device batch size.")
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Gradient accumulation steps.")
@click.option("--max-steps", type=int, default=-1, show_default=True, help="Stop after this many optimizer steps.")
@click.option("--max-grad-norm", type=float, default=1.0, show_default=True, help="Gradient clipping (0 disables).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--precision", default="auto", show_default=True, help="auto | fp32 | bf16 | fp16 (mixed precision).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--image-root", type=click.Path(path_type=Path, file_okay=False), help="Base of relative image paths.")
@click.option("--train-vision", is_flag=True, help="Also train the vision tower and projector (frozen by default).")
@click.option("--gradient-checkpointing", is_flag=True)
@click.option("--logging-steps", type=int, default=10, show_default=True)
@click.option("--vlm-layout", help="Override the detected layout table of the VLM.")
@click.option("--reasoner-layout", help="Override the reasoner's layout table.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output directory.")
@click.option(
    "--fsdp", is_flag=True, help="FSDP2: shard the model over all processes (torchrun, accelerate launch); needs --timing step."
)
def drift_train(vlm: str, reasoner: str | None, data: Path, out: Path, modules: str | None, **flags: Any) -> None:
    """Fine-tune VLM on chat data with DRIFT gradient guidance; write a VLM checkpoint and a report to OUT.

    \b
    Multi-GPU: accelerate launch -m frankmerge.cli drift-train ... (DDP or DeepSpeed ZeRO-1/2);
    beyond one GPU's memory: torchrun ... drift-train --fsdp --timing step (FSDP2, sharded prior).
    """
    from frankmerge.drift.coverage import parse_modules
    from frankmerge.drift.train import TrainOptions
    from frankmerge.drift.train import drift_train as run

    options = TrainOptions(modules=None if modules is None else parse_modules(modules), **flags)
    result = run(vlm, data, out, reasoner=reasoner, options=options)
    leave_process_group()
    report = result.report
    if not report:  # not the main process
        return
    drift = report.get("drift") or {}
    click.echo(f"model written to {result.out} ({report['method']}, {report['steps']} steps, loss {report['train_loss']:.4g})")
    if drift:
        click.echo(f"hooks attached: {drift['hooks_attached']} ({drift['variant']}, alpha={drift['alpha']}, {drift['timing']})")
    movement = (report.get("movement_along_prior") or {}).get("all")
    if movement:
        click.echo(
            f"moved along Δ: cos(θ_T−θ_0, Δ) = {movement['cos_moved_delta']:+.4f}, "
            f"fraction of Δ = {movement['fraction_of_delta']:+.3g}"
        )
    click.echo(f"report: {result.out / 'drift_report.json'}")


def leave_process_group() -> None:
    """Under torchrun / accelerate: wait for every rank (the main one writes the report), then tear
    the process group down while the interpreter is whole. torch keeps each group in a C++ registry
    that only destroy_process_group empties; left to process exit, the gloo group was destroyed
    among static destructors, and a rank aborted there ("terminate called without an active
    exception", SIGABRT) when both ranks were exiting at once on a loaded machine."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


COMMANDS = [drift_prior, drift_train]

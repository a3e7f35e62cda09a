#!/usr/bin/env python
"""DRIFT under FSDP2: memory per rank and step time, with and without guidance, at world sizes 1 and 2.

A Qwen2 text decoder of ``--hidden`` x ``--layers`` (float32 weights, AdamW) is sharded with
``fully_shard`` per block and at the root, on CPU over gloo (``torchrun``, one run per world
size), and a random bf16 prior over attention + MLP is attached with ``attach_drift`` (adaptive,
``timing="step"``, Δ̂ resident in ``--delta-dtype``: bf16, the GPU default). Per rank it reports

* resident bytes of what FSDP2 shards, counted from the tensors themselves: parameters,
  gradients, AdamW state and Δ̂ (``sharded_bytes``), their total per model parameter
  (``bytes_per_param``, times the world size: the per-parameter cost of one full copy);
* peak RSS (``host_peak_rss_mb``: includes torch itself, so only its growth is telling);
* the median step time (forward + backward + optimizer step on ``--seq`` random tokens) without
  guidance, then with it.

From the measured bytes per parameter it states the largest decoder one GPU of ``--gpu-gb``
memory can DRIFT-tune under FSDP2 over ``--gpus`` GPUs, leaving ``--headroom`` of the memory for
activations, the all-gathered block and the allocator. Results go to
``benchmarks/results/drift_fsdp_memory.json``.

    python benchmarks/drift_fsdp_memory.py [--hidden 512] [--layers 8] [--seq 256] [--steps 5] [--gpu-gb 80 --gpus 8]

On a GPU machine, ``--device cuda`` runs the same over NCCL, one GPU per rank (``--worlds`` no larger
than the GPU count: ``--worlds 1`` on one GPU), and adds each rank's peak allocated GPU memory
(``gpu_peak_mb``, reset before each phase) and synchronised step times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "drift_fsdp_memory.json"
REPO = HERE.parent


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per phase, after one warm-up step")
    parser.add_argument("--delta-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--worlds", default="1,2")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: NCCL, one GPU per rank")
    parser.add_argument("--gpu-gb", type=float, default=80.0)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--headroom", type=float, default=0.25, help="fraction of GPU memory kept for activations etc.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _model(args: argparse.Namespace) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=2048,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=args.seq,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).float()


def _write_prior(path: Path, model: torch.nn.Module) -> None:
    """A random bf16 Δ for every attention and MLP tensor, in the prior file format."""
    from safetensors.torch import save_file

    from frankmerge.drift.attach import decoder_parameters
    from frankmerge.drift.coverage import group_of
    from frankmerge.drift.prior_file import META_KEY, PriorEntry, PriorMetadata

    gen = torch.Generator().manual_seed(1)
    tensors, entries = {}, {}
    for canonical, (name, param) in decoder_parameters(model).items():
        group = group_of(canonical)
        if group not in ("attn", "mlp"):
            continue
        tensors[canonical] = (torch.randn(param.shape, generator=gen) * 1e-3).to(torch.bfloat16)
        entries[canonical] = PriorEntry(group, tuple(param.shape), name, name, float(tensors[canonical].double().norm()), 1.0)
    meta = PriorMetadata(modules=("attn", "mlp"), dtype="bfloat16", num_blocks=len(model.model.layers), entries=entries)
    save_file(tensors, str(path), metadata={"format": "pt", META_KEY: meta.to_json()})


def _local_bytes(tensors: list[torch.Tensor]) -> int:
    from frankmerge.drift.sharding import is_dtensor

    total = 0
    for t in tensors:
        local = t.to_local() if is_dtensor(t) else t  # type: ignore[attr-defined]
        total += local.numel() * local.element_size()
    return total


def _steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, args: argparse.Namespace, n: int) -> list[float]:
    gen = torch.Generator().manual_seed(int(os.environ.get("RANK", "0")))
    times = []
    for _ in range(n):
        ids = torch.randint(0, 2048, (1, args.seq), generator=gen).to(args.device)
        started = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return times


def _gpu_peak_mb(args: argparse.Namespace, reset: bool = True) -> float | None:
    """Peak GPU memory allocated since the last reset (None on CPU)."""
    if args.device != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated() / 1e6
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return round(peak, 1)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One rank: shard, train without guidance, attach DRIFT, train with it; measure both."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from frankmerge.drift.attach import attach_drift
    from frankmerge.drift.prior_file import load_prior

    if args.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = _model(args)
    params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        _write_prior(args.worker, model)
    dist.barrier()
    mesh = init_device_mesh(args.device, (world,))
    model.to(args.device)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    _steps(model, optimizer, args, 1)  # warm-up: gradients and AdamW state now exist
    _gpu_peak_mb(args)
    plain = _steps(model, optimizer, args, args.steps)
    gpu_plain = _gpu_peak_mb(args)
    rss_plain = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    weights = [p for p in model.parameters()]
    grads = [p.grad for p in weights if p.grad is not None]
    dtype = getattr(torch, args.delta_dtype)
    handle = attach_drift(model, load_prior(args.worker), timing="step", optimizer=optimizer, delta_dtype=dtype)
    _steps(model, optimizer, args, 1)  # warm-up of the guided step
    _gpu_peak_mb(args)
    guided = _steps(model, optimizer, args, args.steps)
    gpu_guided = _gpu_peak_mb(args)
    rss_guided = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    parts = {
        "params": _local_bytes(weights),
        "grads": _local_bytes(grads),
        "adamw_state": _local_bytes(state),
        "delta": handle.delta_bytes,
    }
    covered = sum(p.numel() for n, p in model.named_parameters() if n in set(handle.guided))
    result = {
        "rank": rank,
        "world": world,
        "model_params": params,
        "covered_params": covered,
        "sharded_bytes": parts,
        "bytes_per_param_without_delta": (parts["params"] + parts["grads"] + parts["adamw_state"]) * world / params,
        "delta_bytes_per_covered_param": parts["delta"] * world / covered,
        "delta_bytes_read": handle.delta_bytes_read,
        "host_peak_rss_mb": {"sft": round(rss_plain, 1), "drift": round(rss_guided, 1)},
        "gpu_peak_mb": {"sft": gpu_plain, "drift": gpu_guided},
        "step_s": {"sft": statistics.median(plain), "drift": statistics.median(guided)},
        "collectives": handle.hooks.collectives,
    }
    handle.remove()
    dist.destroy_process_group()
    return result


def _run_world(world: int, args: argparse.Namespace, prior: Path, argv: list[str]) -> list[dict[str, Any]]:
    torchrun = Path(sys.executable).with_name("torchrun")
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env["FSDP_BENCH_OUT"] = scratch
        command = [str(torchrun), "--standalone", "--nproc_per_node", str(world), __file__, *argv, "--worker", str(prior)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
        return [json.loads(p.read_text()) for p in sorted(Path(scratch).glob("rank*.json"))]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = _args(argv)
    if args.worker is not None:
        result = worker(args)
        Path(os.environ["FSDP_BENCH_OUT"], f"rank{result['rank']}.json").write_text(json.dumps(result))
        return
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for world in (int(w) for w in args.worlds.split(",")):
            runs[str(world)] = _run_world(world, args, Path(scratch) / "prior.safetensors", argv)
    top = runs[max(runs, key=int)][0]
    fixed = top["bytes_per_param_without_delta"]
    delta = top["delta_bytes_per_covered_param"]
    covered_share = top["covered_params"] / top["model_params"]
    per_param = fixed + delta * covered_share
    usable = args.gpu_gb * 1e9 * (1 - args.headroom) * args.gpus
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"},
        "torch": torch.__version__,
        "runs": runs,
        "bytes_per_param": {
            "params_grads_adamw": fixed,
            "delta_per_covered_param": delta,
            "covered_share": covered_share,
            "total": per_param,
        },
        "largest_model": {
            "gpu_gb": args.gpu_gb,
            "gpus": args.gpus,
            "headroom": args.headroom,
            "params": usable / per_param,
            "formula": "gpu_gb·1e9·(1−headroom)·gpus / (params+grads+AdamW bytes + Δ̂ bytes·covered share)",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for world, ranks in runs.items():
        for r in ranks:
            gpu = r["gpu_peak_mb"]
            print(
                f"world {world} rank {r['rank']}: sharded {sum(r['sharded_bytes'].values()) / 1e6:.1f} MB "
                f"(Δ̂ {r['sharded_bytes']['delta'] / 1e6:.1f} MB, read {r['delta_bytes_read'] / 1e6:.1f} MB), "
                f"peak RSS {r['host_peak_rss_mb']['sft']:.0f} → {r['host_peak_rss_mb']['drift']:.0f} MB, "
                f"step {r['step_s']['sft'] * 1e3:.0f} → {r['step_s']['drift'] * 1e3:.0f} ms"
                + (f", GPU peak {gpu['sft']:.0f} → {gpu['drift']:.0f} MB" if gpu["sft"] else "")
            )
    print(
        f"{per_param:.2f} bytes per parameter ({fixed:.1f} params+grads+AdamW, {delta:.1f} Δ̂ × {covered_share:.2f} covered): "
        f"{args.gpus} x {args.gpu_gb:g} GB with {args.headroom:.0%} headroom fits {usable / per_param / 1e9:.1f} B parameters"
    )


if __name__ == "__main__":
    main()

"""Run under ``torchrun --nproc_per_node 2``: FSDP2 guidance on a toy decoder equals the single-process step guidance.

The toy decoder's covered tensors have dim 0 of 1, 3, 4 and 5, so across two ranks one shard is
empty (1 → 1 + 0) and others uneven (3 → 2 + 1, 5 → 3 + 2). Each rank trains the FSDP2 model
on its own batch and, beside it, an unsharded copy on both ranks' batches with the existing
``timing="step"`` guidance; after a few AdamW steps the gathered FSDP2 weights must equal the
copy's. Also checked: one all-reduce per optimizer step (none for ``absolute``), and that each
rank read only its rows of Δ. Writes ``rank{r}.json`` into the directory given as argv[1].
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from frankmerge.drift.attach import attach_drift
from frankmerge.drift.guidance import VARIANTS
from frankmerge.drift.prior_file import META_KEY, PriorEntry, PriorMetadata, load_prior

STEPS = 3
WIDTHS = (4, 3, 1, 5, 4)  # x → up(3) → down(1) → up(5) → down(4)


class Block(nn.Module):
    def __init__(self, width_in: int, hidden: int, width_out: int) -> None:
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.up_proj = nn.Linear(width_in, hidden)
        self.mlp.down_proj = nn.Linear(hidden, width_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mlp.down_proj(torch.tanh(self.mlp.up_proj(x))))


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        w = WIDTHS
        self.layers = nn.ModuleList([Block(w[0], w[1], w[2]), Block(w[2], w[3], w[4])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ToyDecoderModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = Inner()

    def get_input_embeddings(self) -> None:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def write_prior(path: Path, model: nn.Module) -> None:
    """A bf16 prior for every covered tensor of the toy (as drift-prior writes: canonical names, metadata)."""
    gen = torch.Generator().manual_seed(7)
    tensors, entries = {}, {}
    for index, layer in enumerate(model.model.layers):
        for suffix, param in layer.named_parameters():
            name = f"layers.{index}.{suffix}"
            tensors[name] = (torch.randn(param.shape, generator=gen) * 0.3).to(torch.bfloat16)
            norm = float(tensors[name].double().norm())
            entries[name] = PriorEntry("mlp", tuple(param.shape), name, name, norm, float(param.detach().double().norm()))
    meta = PriorMetadata(modules=("mlp",), dtype="bfloat16", num_blocks=2, entries=entries)
    save_file(tensors, str(path), metadata={"format": "pt", META_KEY: meta.to_json()})


def run_variant(variant: str, prior_path: Path, rank: int, world: int, mesh: object) -> dict[str, object]:
    torch.manual_seed(0)
    reference = ToyDecoderModel()
    sharded = copy.deepcopy(reference)
    plain = copy.deepcopy(reference)  # no guidance: shows that the guidance changed the weights
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    shard_opt = torch.optim.AdamW(sharded.parameters(), lr=0.05)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=0.05)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=0.05)
    prior = load_prior(prior_path)
    handle = attach_drift(sharded, prior, variant=variant, timing="step", optimizer=shard_opt)
    ref_handle = attach_drift(reference, load_prior(prior_path), variant=variant, timing="step", optimizer=ref_opt)
    batches = [torch.randn(6, WIDTHS[0], generator=torch.Generator().manual_seed(100 + r)) for r in range(world)]
    collectives_per_step = []
    real_all_reduce = dist.all_reduce
    for step in range(STEPS):
        targets = [torch.sin(b.sum(1, keepdim=True) + step).expand(-1, WIDTHS[-1]) for b in batches]
        loss = ((sharded(batches[rank]) - targets[rank]) ** 2).mean()
        loss.backward()  # FSDP2 reduce-scatters: the sharded .grad is the mean over ranks
        calls = [0]

        def counting(*args: object, _calls: list[int] = calls, **kwargs: object) -> object:
            _calls[0] += 1
            return real_all_reduce(*args, **kwargs)

        dist.all_reduce = counting  # type: ignore[assignment]
        try:
            shard_opt.step()
        finally:
            dist.all_reduce = real_all_reduce
        collectives_per_step.append(calls[0])
        shard_opt.zero_grad()
        ref_loss = sum(((reference(b) - t) ** 2).mean() for b, t in zip(batches, targets, strict=True)) / world
        ref_loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
        (sum(((plain(b) - t) ** 2).mean() for b, t in zip(batches, targets, strict=True)) / world).backward()
        plain_opt.step()
        plain_opt.zero_grad()
    with torch.no_grad():
        full = {n: p.full_tensor() for n, p in sharded.named_parameters()}
        ref = {n: p.detach() for n, p in reference.named_parameters()}
        unguided = dict(plain.named_parameters())
        max_diff = max(float((full[n] - ref[n]).abs().max()) for n in ref)
        guidance_effect = max(float((unguided[n] - ref[n]).abs().max()) for n in ref)
    for name in ref:
        torch.testing.assert_close(full[name], ref[name], rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{variant} {n}: {m}")
    locals_ = {t.name: list(t.shard.local_shape) for t in handle.hooks.targets}
    summary = handle.summary()
    return {
        "variant": variant,
        "max_abs_diff": max_diff,
        "guidance_effect": guidance_effect,
        "collectives_per_step": collectives_per_step,
        "hook_collectives": handle.hooks.collectives,
        "guided_gradients": summary["guided_gradients"],
        "reference_guided_gradients": ref_handle.summary()["guided_gradients"],
        "mean_cos": summary["mean_cos_g_delta"],
        "reference_mean_cos": ref_handle.summary()["mean_cos_g_delta"],
        "sharded": summary["sharded"],
        "delta_bytes": summary["delta_bytes"],
        "reference_delta_bytes": ref_handle.summary()["delta_bytes"],
        "delta_bytes_read": summary["delta_bytes_read"],
        "local_shapes": locals_,
    }


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    prior_path = out / "prior.safetensors"
    if rank == 0:
        torch.manual_seed(0)
        write_prior(prior_path, ToyDecoderModel())
    dist.barrier()
    results = [run_variant(v, prior_path, rank, world, mesh) for v in VARIANTS]
    (out / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

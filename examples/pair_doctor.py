"""Tiny stand-ins for the paper's most-cited pair, to see what `frankmerge check` says about it.

    python examples/pair_doctor.py /tmp/pair        # builds the four models, prints the command

Four tiny Qwen2-shaped models named after the hub models, with the hub's values for every field
the doctor compares (RoPE θ and M-RoPE, windows, context lengths), and the hub's lineage: the VLM
fine-tuned lightly from Qwen2.5-7B, Qwen2.5-Math-7B continued-pretrained far from it, the R1
distill fine-tuned lightly from Qwen2.5-Math. Weights are random (only their distances are real).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from frankmerge.testbed.tiny import build_tiny_triple

# Hub values (config.json of each model, December 2026) for the fields that differ.
HUB = {
    "Qwen2.5-7B": {"rope_theta": 1000000.0, "sliding_window": 131072, "max_position_embeddings": 131072},
    "Qwen2.5-Math-7B": {"rope_theta": 10000.0, "sliding_window": 4096, "max_position_embeddings": 4096},
    "DeepSeek-R1-Distill-Qwen-7B": {"rope_theta": 10000.0, "sliding_window": 4096, "max_position_embeddings": 131072},
}
VLM_NAME = "Qwen2.5-VL-7B-Instruct"
# Relative distance of each model's weights from its parent: light fine-tunes, heavy continued pretraining.
MOVES = {
    VLM_NAME: ("Qwen2.5-7B", 0.04),
    "Qwen2.5-Math-7B": ("Qwen2.5-7B", 0.25),
    "DeepSeek-R1-Distill-Qwen-7B": ("Qwen2.5-Math-7B", 0.05),
}


def _moved(parent: dict[str, torch.Tensor], values: dict[str, torch.Tensor], share: float, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor the parent also holds becomes parent + noise of ``share`` × the parent's RMS."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(values)
    for name, value in values.items():
        if name in parent and parent[name].shape == value.shape:
            base = parent[name].float()
            rms = base.pow(2).mean().sqrt()
            out[name] = (base + share * rms * torch.randn(base.shape, generator=generator)).to(value.dtype)
    return out


def build(root: Path) -> dict[str, Path]:
    triple = build_tiny_triple(root / "tiny", "qwen2_5_vl", layout="hub")
    paths = {name: root / name for name in [*HUB, VLM_NAME]}
    shutil.copytree(triple.base, paths["Qwen2.5-7B"])
    for name in ("Qwen2.5-Math-7B", "DeepSeek-R1-Distill-Qwen-7B"):
        shutil.copytree(triple.reasoner, paths[name])
    shutil.copytree(triple.vlm, paths[VLM_NAME])
    for seed, (name, (parent, share)) in enumerate(MOVES.items()):
        parent_values = load_file(next(paths[parent].glob("*.safetensors")))
        for file in paths[name].glob("*.safetensors"):
            save_file(_moved(parent_values, load_file(file), share, seed), file, metadata={"format": "pt"})
    for name, fields in HUB.items():
        config_path = paths[name] / "config.json"
        config = json.loads(config_path.read_text())
        config.pop("rope_parameters", None)
        config.pop("layer_types", None)
        config.update(fields, use_sliding_window=False)
        config_path.write_text(json.dumps(config, indent=2))
    vlm_config = paths[VLM_NAME] / "config.json"
    config = json.loads(vlm_config.read_text())
    text = config.pop("text_config")  # the hub's flat legacy spelling
    sections = text.pop("rope_parameters")["mrope_section"]
    text.pop("layer_types", None)
    config.update({k: v for k, v in text.items() if k not in ("model_type", "architectures", "dtype")})
    config.update(
        rope_theta=1000000.0,
        rope_scaling={"type": "mrope", "mrope_section": sections},
        sliding_window=32768,
        use_sliding_window=False,
        max_position_embeddings=128000,
    )
    vlm_config.write_text(json.dumps(config, indent=2))
    shutil.rmtree(root / "tiny")
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "pair-doctor-example")
    if target.exists():
        sys.exit(f"{target} exists; pass a new directory")
    built = build(target)
    print(
        f"frankmerge check --vlm {built[VLM_NAME]} --reasoner {built['DeepSeek-R1-Distill-Qwen-7B']} "
        f"--base {built['Qwen2.5-7B']} --candidate-base {built['Qwen2.5-Math-7B']}"
    )

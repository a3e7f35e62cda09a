"""Tiny checkpoints in the on-disk layouts of the FRANK paper's own VLMs (paper_layouts.md).

InternVL2.5 chat checkpoints (``vision_model.*``, ``mlp1.*``, ``language_model.*`` with a Qwen2
or InternLM2 LLM, remote code and ``auto_map``) and NVILA's multi-folder checkpoints (``llm/``,
``vision_tower/``, ``mm_projector/``), rebuilt from the tiny transformers-native triples. The
shipped ``.py`` files record on disk if anything ever imports them, so tests can prove that
nothing executes remote code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from frankmerge.testbed.tiny import TinyTriple, build_tiny_triple

REMOTE_CODE = "from pathlib import Path\nPath(__file__).with_name('REMOTE_CODE_WAS_EXECUTED').touch()\n"
MARKER = "REMOTE_CODE_WAS_EXECUTED"

# Llama names -> InternLM2 names (q/k/v are fused into ``attention.wqkv`` separately).
_INTERNLM2_RENAMES = {
    "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.up_proj": "feed_forward.w3",
    "mlp.down_proj": "feed_forward.w2",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
    "embed_tokens": "tok_embeddings",
}


def _load(directory: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        state.update(load_file(path))
    return state


def _save(directory: Path, state: dict[str, torch.Tensor]) -> None:
    for path in directory.glob("model*.safetensors*"):
        path.unlink()
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})


def _to_internlm2(state: dict[str, torch.Tensor], prefix: str, heads: int, kv_heads: int) -> dict[str, torch.Tensor]:
    """Rename a Llama decoder to InternLM2's names, fusing q/k/v per KV head as ``(h gs d)``."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not name.startswith(prefix) and not name.endswith("lm_head.weight"):
            out[name] = tensor
            continue
        if ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            continue
        if ".self_attn.q_proj." in name:
            q, k, v = (state[name.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj"))
            per = heads // kv_heads
            head_dim = q.shape[0] // heads
            groups = [
                torch.cat(
                    [
                        q[(g * per) * head_dim : (g + 1) * per * head_dim],
                        k[g * head_dim : (g + 1) * head_dim],
                        v[g * head_dim : (g + 1) * head_dim],
                    ]
                )
                for g in range(kv_heads)
            ]
            out[name.replace("self_attn.q_proj", "attention.wqkv")] = torch.cat(groups)
            if name.endswith(".bias"):  # InternLM2's one `bias` flag also gives wo a bias (zero here)
                hidden = state[name.replace("q_proj.bias", "o_proj.weight")].shape[0]
                out[name.replace("self_attn.q_proj", "attention.wo")] = torch.zeros(hidden, dtype=tensor.dtype)
            continue
        new = name.replace("lm_head.weight", "output.weight")
        for old, replacement in _INTERNLM2_RENAMES.items():
            new = new.replace(f".{old}.", f".{replacement}.")
        out[new] = tensor
    return out


def _text_to_internlm2(directory: Path) -> None:
    config = json.loads((directory / "config.json").read_text())
    original = _load(directory)
    state = _to_internlm2(original, "model.", config["num_attention_heads"], config["num_key_value_heads"])
    _save(directory, state)
    config.update(
        bias=any(name.endswith("q_proj.bias") for name in original),
        model_type="internlm2",
        architectures=["InternLM2ForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_internlm2.InternLM2Config",
            "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
        },
    )
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "modeling_internlm2.py").write_text(REMOTE_CODE)


# transformers' InternVLVision names -> InternViT's (the inverse of transformers' converter).
_CHAT_VISION_NAMES = (
    (".encoder.layer.", ".encoder.layers."),
    ("embeddings.cls_token", "embeddings.class_embedding"),
    ("embeddings.position_embeddings", "embeddings.position_embedding"),
    ("embeddings.patch_embeddings.projection.", "embeddings.patch_embedding."),
    (".lambda_1", ".ls1"),
    (".lambda_2", ".ls2"),
    (".attention.projection_layer.", ".attn.proj."),
    (".attention.", ".attn."),
    (".layernorm_before.", ".norm1."),
    (".layernorm_after.", ".norm2."),
)
_CHAT_PROJECTOR = {"layer_norm.": "mlp1.0.", "linear_1.": "mlp1.1.", "linear_2.": "mlp1.3."}


def _to_chat_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A native InternVL state dict (hub layout) under ``InternVLChatModel``'s names, q/k/v fused into ``attn.qkv``."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.startswith("vision_tower."):
            if ".attention.k_proj." in name or ".attention.v_proj." in name:
                continue
            if ".attention.q_proj." in name:
                tensor = torch.cat([state[name.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")])
                name = name.replace("q_proj", "qkv")
            name = "vision_model." + name.removeprefix("vision_tower.")
            for old, new in _CHAT_VISION_NAMES:
                name = name.replace(old, new)
        elif name.startswith("multi_modal_projector."):
            rest = name.removeprefix("multi_modal_projector.")
            prefix = next(p for p in _CHAT_PROJECTOR if rest.startswith(p))
            name = _CHAT_PROJECTOR[prefix] + rest.removeprefix(prefix)
        out[name] = tensor
    return out


def _legacy_rope(config: dict[str, object]) -> dict[str, object]:
    """A transformers-5 text config with RoPE as the hub's chat checkpoints write it (``rope_theta``)."""
    out = dict(config)
    rope = out.pop("rope_parameters", None)
    if isinstance(rope, dict):
        out["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return out


def _intern_vit_config(native: dict[str, object]) -> dict[str, object]:
    """An InternViT ``vision_config`` (the keys ``InternVisionConfig`` uses) for a native vision config."""
    return {
        "architectures": ["InternVisionModel"],
        "model_type": "intern_vit_6b",
        "hidden_size": native["hidden_size"],
        "intermediate_size": native["intermediate_size"],
        "num_attention_heads": native["num_attention_heads"],
        "num_hidden_layers": native["num_hidden_layers"],
        "num_channels": native["num_channels"],
        "image_size": native["image_size"][0],  # type: ignore[index]
        "patch_size": native["patch_size"][0],  # type: ignore[index]
        "hidden_act": native["hidden_act"],
        "layer_norm_eps": native["layer_norm_eps"],
        "norm_type": native["norm_type"],
        "qkv_bias": native["attention_bias"],
        "qk_normalization": native["use_qk_norm"],
        "initializer_factor": 1.0,
        "drop_path_rate": 0.0,
        "use_flash_attn": False,
    }


def build_internvl_chat(root: Path, *, llm: str = "qwen2") -> TinyTriple:
    """An InternVL chat triple: the VLM in ``InternVLChatModel`` layout, the LLMs as Qwen2 or InternLM2."""
    source = build_tiny_triple(root / "source", "internvl", layout="hub")
    triple = TinyTriple(root / "vlm", root / "reasoner", root / "base", "internvl_chat")
    for role in ("reasoner", "base"):
        shutil.copytree(getattr(source, role), getattr(triple, role))
    text_config = json.loads((triple.base / "config.json").read_text())
    shutil.copytree(source.vlm, triple.vlm)
    state = _load(triple.vlm)
    native_vlm = json.loads((triple.vlm / "config.json").read_text())
    renamed = _to_chat_names(state)
    vision_config = _intern_vit_config(native_vlm["vision_config"])
    llm_config = _legacy_rope(text_config)
    if "language_model.lm_head.weight" not in renamed:  # InternVL chat never ties
        renamed["language_model.lm_head.weight"] = renamed["language_model.model.embed_tokens.weight"].clone()
    architecture = "Qwen2ForCausalLM"
    if llm == "internlm2":
        renamed = _to_internlm2(
            renamed, "language_model.model.", text_config["num_attention_heads"], text_config["num_key_value_heads"]
        )
        for role in ("reasoner", "base"):
            _text_to_internlm2(getattr(triple, role))
        architecture = "InternLM2ForCausalLM"
        llm_config["bias"] = any(name.endswith("q_proj.bias") for name in state)
    _save(triple.vlm, renamed)
    config = {
        "architectures": ["InternVLChatModel"],
        "auto_map": {
            "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel",
            "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
        },
        "model_type": "internvl_chat",
        "template": "internvl2_5",
        "downsample_ratio": 0.5,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "force_image_size": vision_config["image_size"],
        "ps_version": "v2",
        "select_layer": -1,
        "dynamic_image_size": True,
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "use_thumbnail": True,
        "llm_config": {**llm_config, "architectures": [architecture], "tie_word_embeddings": False},
        "vision_config": vision_config,
    }
    (triple.vlm / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("configuration_internvl_chat.py", "modeling_internvl_chat.py"):
        (triple.vlm / name).write_text(REMOTE_CODE)
    shutil.rmtree(root / "source")
    return triple


def build_nvila(root: Path) -> TinyTriple:
    """An NVILA triple: the VLM as ``llm/`` + ``vision_tower/`` + ``mm_projector/``, no root weights."""
    source = build_tiny_triple(root / "source", "qwen2_vl")
    triple = TinyTriple(root / "vlm", root / "reasoner", root / "base", "nvila")
    for role in ("reasoner", "base"):
        shutil.copytree(getattr(source, role), getattr(triple, role))
    state = _load(source.vlm)
    llm = shutil.copytree(source.reasoner, triple.vlm / "llm")  # config and tokenizer of a Qwen2 LLM
    _save(llm, {k: v for k, v in state.items() if not k.startswith("visual.")})
    tower = triple.vlm / "vision_tower"
    tower.mkdir()
    save_file(
        {"vision_model." + k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")},
        tower / "model.safetensors",
    )
    (tower / "config.json").write_text(json.dumps({"architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model"}))
    projector = triple.vlm / "mm_projector"
    projector.mkdir()
    generator = torch.Generator().manual_seed(0)
    save_file({f"layers.{i}.weight": torch.randn(8, 8, generator=generator) for i in (1, 2, 4)}, projector / "model.safetensors")
    (projector / "config.json").write_text(
        json.dumps({"architectures": ["MultimodalProjector"], "mm_projector_type": "mlp_downsample"})
    )
    llm_config = json.loads((llm / "config.json").read_text())
    root_config = {
        "architectures": ["LlavaLlamaModel"],
        "model_type": "llava_llama",
        "llm_cfg": llm_config,
        "chat_template": None,
    }
    (triple.vlm / "config.json").write_text(json.dumps(root_config, indent=2))
    (triple.vlm / "trainer_state.json").write_text("{}")
    shutil.rmtree(root / "source")
    return triple

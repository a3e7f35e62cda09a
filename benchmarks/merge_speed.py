#!/usr/bin/env python
"""Merge speed and memory: frankmerge vs mergekit vs a plain copy, on Qwen2.5-1.5B-shaped checkpoints.

Builds (once, cached) three synthetic bf16 checkpoints with the exact tensor names and shapes of
Qwen2.5-1.5B — a text ``base``, a ``reasoner`` (base + a small seeded perturbation) and a Qwen2-VL
``vlm`` in hub layout (same text tensors, perturbed differently, plus a small ``visual.*`` tower) —
then times, each in a fresh subprocess, under ``/usr/bin/time -v`` (wall time and peak RSS):

  a. ``frankmerge merge --no-prior`` (FRANK, per-block closed-form λ_V, λ_R);
  b. mergekit's ``task_arithmetic`` on the text triple (base, reasoner, a text-only copy of the VLM's
     decoder) with per-layer weights equal to frankmerge's λ_V, λ_R — the same merge
     θ0 + λ_V τ_V + λ_R τ_R — run from its own venv ``benchmarks/.venv-mergekit``;
  c. ``cp -r`` of one role's checkpoint directory (the I/O floor).

Warm page cache: nothing is dropped; each command runs once as a warm-up, then ``--repeats`` times,
and the median is reported. Results go to ``benchmarks/results/merge_speed.json``.

    python benchmarks/merge_speed.py [--skip-mergekit] [--repeats 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CACHE = HERE / ".cache"
RESULTS = HERE / "results" / "merge_speed.json"
MERGEKIT_VENV = HERE / ".venv-mergekit"
MERGEKIT_REQUIREMENTS = HERE / "requirements-mergekit.txt"
MERGEKIT_TORCH = "torch==2.13.0"  # a CPU build from local files; an unpinned torch pulls a CUDA build

# Qwen2.5-1.5B's text decoder.
LAYERS = 28
HIDDEN = 1536
INTERMEDIATE = 8960
HEADS = 12
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS  # 128
VOCAB = 151936
TEXT_CONFIG = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=INTERMEDIATE,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    num_key_value_heads=KV_HEADS,
    hidden_act="silu",
    max_position_embeddings=32768,
    max_window_layers=21,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    use_sliding_window=False,
    tie_word_embeddings=True,
    bos_token_id=151643,
    eos_token_id=151643,
)
# A small Qwen2-VL vision tower (names as in the hub checkpoints, ``visual.*``); its merger projects
# to the text hidden size like the real one.
VISION_CONFIG = dict(
    depth=2, embed_dim=64, hidden_size=HIDDEN, num_heads=2, mlp_ratio=2, patch_size=14,
    spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
)
BLOCK_SUFFIXES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("input_layernorm.weight", (HIDDEN,)),
    ("self_attn.q_proj.weight", (HEADS * HEAD_DIM, HIDDEN)),
    ("self_attn.q_proj.bias", (HEADS * HEAD_DIM,)),
    ("self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
    ("self_attn.k_proj.bias", (KV_HEADS * HEAD_DIM,)),
    ("self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
    ("self_attn.v_proj.bias", (KV_HEADS * HEAD_DIM,)),
    ("self_attn.o_proj.weight", (HIDDEN, HEADS * HEAD_DIM)),
    ("post_attention_layernorm.weight", (HIDDEN,)),
    ("mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
    ("mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
    ("mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)),
)
TEXT_SHARD_SPLIT = LAYERS // 2  # shard 1: embeddings + blocks [0, 14); shard 2: blocks [14, 28) + final norm
WEIGHT_STD = 0.02
BUILD_VERSION = 1  # bump when the generated data changes
CHECK_BLOCKS = (0, LAYERS // 2, LAYERS - 1)  # blocks compared between the two merges
TARGET_WALL_RATIO = 0.4
TARGET_RSS_GB = 1.5
GB = 1e9


# ---------------------------------------------------------------------------------------------
# Synthetic checkpoints
# ---------------------------------------------------------------------------------------------
def delta_scale(role: str, name: str) -> float:
    """Relative RMS (of WEIGHT_STD) of a role's task vector: the reasoner's grows with depth, the VLM's shrinks."""
    match = re.match(r"model\.layers\.(\d+)\.", name)
    if match is None:  # embeddings, final norm
        return 0.05
    depth = int(match.group(1)) / (LAYERS - 1)
    return 0.05 * (1 + depth) if role == "reasoner" else 0.05 * (2 - depth)


def _generator(tag: str):  # type: ignore[no-untyped-def]
    import torch

    return torch.Generator().manual_seed(zlib.crc32(tag.encode()) & 0x7FFFFFFF)


def base_values(name: str, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    """θ0 for one tensor, float32, deterministic in its name (norm weights around 1)."""
    import torch

    values = torch.empty(shape, dtype=torch.float32).normal_(0.0, WEIGHT_STD, generator=_generator(f"base/{name}"))
    if name.endswith("norm.weight"):
        values.add_(1.0)
    return values


def role_tensor(role: str, name: str, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    """The bf16 tensor ``name`` of ``role``: θ0, plus a seeded perturbation for reasoner and VLM."""
    import torch

    values = base_values(name, shape)
    if role != "base":
        noise = torch.empty(shape, dtype=torch.float32).normal_(0.0, 1.0, generator=_generator(f"{role}/{name}"))
        values.add_(noise, alpha=delta_scale(role, name) * WEIGHT_STD)
        del noise
    return values.to(torch.bfloat16)


def text_shards() -> list[list[tuple[str, tuple[int, ...]]]]:
    """The text tensors, split into the two shards they are stored in."""
    def block(i: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"model.layers.{i}.{suffix}", shape) for suffix, shape in BLOCK_SUFFIXES]

    first = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(TEXT_SHARD_SPLIT):
        first += block(i)
    second = []
    for i in range(TEXT_SHARD_SPLIT, LAYERS):
        second += block(i)
    second.append(("model.norm.weight", (HIDDEN,)))
    return [first, second]


def vision_tensors() -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the Qwen2-VL vision tower for VISION_CONFIG, from transformers on the meta device."""
    import torch
    import transformers as tf
    from transformers.models.qwen2_vl import modeling_qwen2_vl

    config = tf.Qwen2VLConfig(text_config=TEXT_CONFIG, vision_config=VISION_CONFIG).vision_config
    with torch.device("meta"):
        tower = modeling_qwen2_vl.Qwen2VisionTransformerPretrainedModel._from_config(config)
    return [(f"visual.{name}", tuple(t.shape)) for name, t in tower.state_dict().items()]


def shard_name(index: int, count: int) -> str:
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def write_index(directory: Path, weight_map: dict[str, str]) -> None:
    total = 0
    for file in sorted(set(weight_map.values())):
        total += _safetensors_data_bytes(directory / file, [n for n, f in weight_map.items() if f == file])
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _safetensors_data_bytes(path: Path, names: list[str]) -> int:
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    return sum(header[n]["data_offsets"][1] - header[n]["data_offsets"][0] for n in names)


def text_config_object():  # type: ignore[no-untyped-def]
    import torch
    import transformers as tf

    return tf.Qwen2Config(**TEXT_CONFIG, architectures=["Qwen2ForCausalLM"], dtype=torch.bfloat16)


def vlm_config_object():  # type: ignore[no-untyped-def]
    import torch
    import transformers as tf

    return tf.Qwen2VLConfig(
        text_config=TEXT_CONFIG,
        vision_config=VISION_CONFIG,
        tie_word_embeddings=True,
        architectures=["Qwen2VLForConditionalGeneration"],
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        dtype=torch.bfloat16,
    )


def build_role(role: str, target: Path) -> None:
    """Write one role's checkpoint into ``target`` (atomically: built beside it, then renamed)."""
    from safetensors.torch import save_file

    staging = target.parent / f".build-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shards = text_shards()
    if role == "vlm":
        shards.append(vision_tensors())
    weight_map: dict[str, str] = {}
    for index, tensors in enumerate(shards):
        file = shard_name(index, len(shards))
        if role == "vlm" and index == len(shards) - 1:
            data = {name: _vision_tensor(name, shape) for name, shape in tensors}
        else:
            data = {name: role_tensor(role, name, shape) for name, shape in tensors}
        save_file(data, str(staging / file), metadata={"format": "pt"})
        del data
        weight_map.update({name: file for name, _ in tensors})
    write_index(staging, weight_map)
    (vlm_config_object() if role == "vlm" else text_config_object()).save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _vision_tensor(name: str, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    import torch

    values = torch.empty(shape, dtype=torch.float32).normal_(0.0, WEIGHT_STD, generator=_generator(f"vlm/{name}"))
    if ".norm" in name or "ln_q" in name:
        values.add_(1.0) if name.endswith("weight") else values.zero_()
    return values.to(torch.bfloat16)


def build_vlm_text(vlm: Path, target: Path) -> None:
    """The VLM's text decoder as a Qwen2ForCausalLM checkpoint: the same shard files (hard links when
    possible, so no extra disk and a shared page cache), an index without ``visual.*`` and a text config."""
    staging = target.parent / f".build-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    weight_map = json.loads((vlm / "model.safetensors.index.json").read_text())["weight_map"]
    text_map = {name: file for name, file in weight_map.items() if not name.startswith("visual.")}
    for file in sorted(set(text_map.values())):
        try:
            os.link(vlm / file, staging / file)
        except OSError:
            shutil.copy2(vlm / file, staging / file)
    # every tensor of a text shard is a text tensor, so the byte totals carry over
    write_index(staging, text_map)
    text_config_object().save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def build_spec() -> dict[str, object]:
    return {
        "version": BUILD_VERSION,
        "text_config": TEXT_CONFIG,
        "vision_config": VISION_CONFIG,
        "blocks": [list(map(str, s)) for s in BLOCK_SUFFIXES],
        "weight_std": WEIGHT_STD,
        "split": TEXT_SHARD_SPLIT,
    }


def ensure_checkpoints(cache: Path) -> tuple[dict[str, Path], float | None]:
    """The four checkpoint directories; build them when the cache lacks them. Returns (paths, build seconds)."""
    roles = {role: cache / role for role in ("base", "reasoner", "vlm", "vlm_text")}
    spec_file = cache / "spec.json"
    spec = json.dumps(build_spec(), sort_keys=True)
    complete = all((p / "model.safetensors.index.json").is_file() and (p / "config.json").is_file() for p in roles.values())
    if complete and spec_file.is_file() and spec_file.read_text() == spec:
        print(f"checkpoints: cached in {cache}")
        return roles, None
    print(f"checkpoints: building base, reasoner, vlm in {cache} (about 3.1 GB each) ...", flush=True)
    started = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    spec_file.unlink(missing_ok=True)
    for role in ("base", "reasoner", "vlm"):
        t0 = time.perf_counter()
        build_role(role, roles[role])
        print(f"  {role}: {time.perf_counter() - t0:.1f} s", flush=True)
    build_vlm_text(roles["vlm"], roles["vlm_text"])
    _check_configs(roles)
    spec_file.write_text(spec)
    elapsed = time.perf_counter() - started
    print(f"checkpoints: built in {elapsed:.1f} s", flush=True)
    return roles, elapsed


def _check_configs(roles: dict[str, Path]) -> None:
    from transformers import AutoConfig

    vlm = AutoConfig.from_pretrained(roles["vlm"])
    assert vlm.model_type == "qwen2_vl", vlm.model_type
    assert vlm.get_text_config().num_hidden_layers == LAYERS
    for role in ("base", "reasoner", "vlm_text"):
        config = AutoConfig.from_pretrained(roles[role])
        assert config.model_type == "qwen2" and config.num_hidden_layers == LAYERS and config.tie_word_embeddings


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------
_WRAPPER = (
    "import json,resource,subprocess,sys\n"
    "rc=subprocess.call(sys.argv[2:])\n"
    "json.dump({'rc':rc,'maxrss_kb':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss},open(sys.argv[1],'w'))\n"
    "sys.exit(rc)\n"
)


@dataclass
class Run:
    wall_s: float
    peak_rss_bytes: int | None
    rc: int
    log: Path


def measure(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` in a fresh child; wall time around it and the child's peak RSS (GNU time, else a
    fresh Python wrapper reading RUSAGE_CHILDREN)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("r", suffix=".rusage", delete=False) as handle:
        stats_file = Path(handle.name)
    gnu_time = Path("/usr/bin/time")
    if gnu_time.is_file():
        wrapped = [str(gnu_time), "-v", "-o", str(stats_file), *cmd]
    else:
        wrapped = [sys.executable, "-c", _WRAPPER, str(stats_file), *cmd]
    with log.open("w") as out:
        started = time.perf_counter()
        rc = subprocess.call(wrapped, stdout=out, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - started
    text = stats_file.read_text()
    stats_file.unlink(missing_ok=True)
    rss_kb: int | None = None
    if gnu_time.is_file():
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        rss_kb = int(found.group(1)) if found else None
    elif text:
        rss_kb = int(json.loads(text)["maxrss_kb"])
    return Run(wall, rss_kb * 1024 if rss_kb is not None else None, rc, log)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Series:
    name: str
    command: list[str]
    runs: list[Run] = field(default_factory=list)
    warmup: Run | None = None
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        walls = [r.wall_s for r in self.runs]
        rss = [r.peak_rss_bytes for r in self.runs if r.peak_rss_bytes is not None]
        return {
            "command": " ".join(self.command),
            "ok": self.error is None and bool(self.runs),
            "error": self.error,
            "wall_s": {
                "median": statistics.median(walls) if walls else None,
                "runs": [round(w, 3) for w in walls],
                "warmup": round(self.warmup.wall_s, 3) if self.warmup else None,
            },
            "peak_rss_bytes": max(rss) if rss else None,
            "peak_rss_bytes_runs": rss,
            **self.extra,
        }


def run_series(series: Series, repeats: int, prepare, after, env=None, logs: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    """One warm-up, then ``repeats`` measured runs; ``prepare`` before each, ``after(run, last)`` after."""
    assert logs is not None
    for attempt in range(repeats + 1):
        prepare()
        os.sync()  # earlier runs' writes are not flushed on this run's clock
        label = "warmup" if attempt == 0 else f"run{attempt}"
        run = measure(series.command, logs / f"{series.name}-{label}.log", env=env)
        status = "ok" if run.rc == 0 else f"FAILED rc={run.rc}"
        rss = f"{run.peak_rss_bytes / GB:.2f} GB" if run.peak_rss_bytes else "?"
        print(f"  {series.name} {label}: {run.wall_s:.1f} s, peak RSS {rss} [{status}]", flush=True)
        if run.rc != 0:
            series.error = f"exit status {run.rc}; last lines of {run.log}:\n{_tail(run.log)}"
            print(series.error, flush=True)
            return
        if attempt == 0:
            series.warmup = run
        else:
            series.runs.append(run)
        after(run, attempt == 0, attempt == repeats)


# ---------------------------------------------------------------------------------------------
# mergekit
# ---------------------------------------------------------------------------------------------
def ensure_mergekit() -> Path:
    exe = MERGEKIT_VENV / "bin" / "mergekit-yaml"
    if exe.is_file():
        return exe
    print(f"mergekit: creating {MERGEKIT_VENV} ...", flush=True)
    if not (MERGEKIT_VENV / "bin" / "python").is_file():
        subprocess.check_call([sys.executable, "-m", "venv", str(MERGEKIT_VENV)])
    pip = [str(MERGEKIT_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.check_call([*pip, MERGEKIT_TORCH])
    subprocess.check_call([*pip, "-r", str(MERGEKIT_REQUIREMENTS)])
    return exe


def mergekit_versions() -> dict[str, str]:
    code = "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in ('mergekit', 'torch', 'transformers', 'safetensors')}))"
    out = subprocess.run([str(MERGEKIT_VENV / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mergekit_config(roles: dict[str, Path], lambda_v: list[float], lambda_r: list[float]) -> str:
    """task_arithmetic θ0 + Σ w_i (θ_i − θ0), with one weight per layer.

    mergekit interpolates a list-valued parameter over the layers of a slice (t = i / (L − 1),
    value = list[t · (len − 1)]), so a list of exactly L values gives layer i its own value.
    Embeddings and the final norm get the list's first value (t = 0): they are not compared.
    """
    import yaml  # pyyaml: a frankmerge dependency

    config = {
        "merge_method": "task_arithmetic",
        "base_model": str(roles["base"]),
        "models": [
            {"model": str(roles["vlm_text"]), "parameters": {"weight": [float(x) for x in lambda_v]}},
            {"model": str(roles["reasoner"]), "parameters": {"weight": [float(x) for x in lambda_r]}},
        ],
        "parameters": {"normalize": False, "lambda": 1.0},
        "dtype": "bfloat16",
        "out_dtype": "bfloat16",
    }
    return yaml.safe_dump(config, sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Sanity check
# ---------------------------------------------------------------------------------------------
def _open_model(directory: Path) -> dict[str, Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return {n: directory / f for n, f in json.loads(index.read_text())["weight_map"].items()}
    files: dict[str, Path] = {}
    from safetensors import safe_open

    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            files.update({n: path for n in handle.keys()})  # noqa: SIM118
    return files


def extract_blocks(directory: Path, target: Path, blocks: tuple[int, ...] = CHECK_BLOCKS) -> None:
    """Save the compared blocks of a merge output (so the output itself can be deleted right away)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    where = _open_model(directory)
    data = {}
    for index in blocks:
        for suffix, _ in BLOCK_SUFFIXES:
            name = f"model.layers.{index}.{suffix}"
            with safe_open(str(where[name]), "pt") as handle:
                data[name] = handle.get_tensor(name).clone()
    save_file(data, str(target))


def compare_blocks(roles: dict[str, Path], frank_file: Path, mergekit_file: Path | None, lambdas: list[tuple[float, float]]) -> dict[str, object]:
    """Max |difference| between the two merges, and of each to θ0 + λV τV + λR τR computed in float64."""
    import torch
    from safetensors import safe_open

    inputs = {role: _open_model(roles[role]) for role in ("vlm", "reasoner", "base")}

    def load(path: Path, name: str) -> torch.Tensor:
        with safe_open(str(path), "pt") as handle:
            return handle.get_tensor(name)

    result: dict[str, object] = {"blocks": list(CHECK_BLOCKS), "per_block": {}}
    worst = {"frank_vs_mergekit": 0.0, "frank_vs_ref64": 0.0, "mergekit_vs_ref64": 0.0}
    for index in CHECK_BLOCKS:
        lv, lr = lambdas[index]
        block = {"lambda_v": lv, "lambda_r": lr, "frank_vs_mergekit": 0.0, "frank_vs_ref64": 0.0, "mergekit_vs_ref64": 0.0,
                 "frank_ne_mergekit_fraction": 0.0, "max_abs_value": 0.0}
        numel_total = differing = 0
        for suffix, _ in BLOCK_SUFFIXES:
            name = f"model.layers.{index}.{suffix}"
            theta = {role: load(inputs[role][name], name).double() for role in inputs}
            ref = theta["base"] + lv * (theta["vlm"] - theta["base"]) + lr * (theta["reasoner"] - theta["base"])
            frank = load(frank_file, name)
            block["frank_vs_ref64"] = max(block["frank_vs_ref64"], float((frank.double() - ref).abs().max()))
            block["max_abs_value"] = max(block["max_abs_value"], float(ref.abs().max()))
            if mergekit_file is not None:
                merged = load(mergekit_file, name)
                block["frank_vs_mergekit"] = max(block["frank_vs_mergekit"], float((frank.double() - merged.double()).abs().max()))
                block["mergekit_vs_ref64"] = max(block["mergekit_vs_ref64"], float((merged.double() - ref).abs().max()))
                differing += int((frank != merged).sum())
            numel_total += frank.numel()
        block["frank_ne_mergekit_fraction"] = differing / numel_total if mergekit_file is not None else None
        if mergekit_file is None:
            block["frank_vs_mergekit"] = block["mergekit_vs_ref64"] = None
        else:
            for key in worst:
                worst[key] = max(worst[key], block[key])  # type: ignore[arg-type]
        if mergekit_file is None:
            worst["frank_vs_ref64"] = max(worst["frank_vs_ref64"], block["frank_vs_ref64"])
        result["per_block"][str(index)] = block  # type: ignore[index]
    result["max_abs_diff"] = worst if mergekit_file is not None else {"frank_vs_ref64": worst["frank_vs_ref64"]}
    return result


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def machine_info(cache: Path) -> dict[str, object]:
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").is_file() else ""
    total_kb = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "ram_bytes": int(total_kb.group(1)) * 1024 if total_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "disk_free_bytes": shutil.disk_usage(cache).free,
    }


def main_versions() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("frankmerge", "torch", "transformers", "safetensors")}


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-mergekit", action="store_true", help="time frankmerge and cp only")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per command after one warm-up [3]")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"checkpoints and scratch outputs [{DEFAULT_CACHE}]")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"results JSON [{RESULTS}]")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    started = time.perf_counter()
    cache: Path = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    logs = cache / "logs"
    roles, build_s = ensure_checkpoints(cache)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    frank_out, mergekit_out, cp_out = cache / "out-frankmerge", cache / "out-mergekit", cache / "out-cp"
    frank_check, mergekit_check = cache / "check-frankmerge.safetensors", cache / "check-mergekit.safetensors"
    for stale in (frank_out, mergekit_out, cp_out):
        shutil.rmtree(stale, ignore_errors=True)

    # a. frankmerge --------------------------------------------------------------------------
    frankmerge = Path(sys.executable).parent / "frankmerge"
    frank_cmd = [str(frankmerge) if frankmerge.is_file() else "frankmerge", "merge", "--vlm", str(roles["vlm"]),
                 "--reasoner", str(roles["reasoner"]), "--base", str(roles["base"]), "--out", str(frank_out),
                 "--no-prior", "--overwrite", "-q"]
    frank = Series("frankmerge", frank_cmd)
    lambdas: list[tuple[float, float]] = []
    self_reported: list[dict[str, object]] = []

    def frank_after(run: Run, warmup: bool, last: bool) -> None:
        report = json.loads((frank_out / "merge_report.json").read_text())
        if warmup:
            blocks = sorted(report["blocks"], key=lambda b: b["index"])
            lambdas[:] = [(float(b["lambda_v"]), float(b["lambda_r"])) for b in blocks]
        else:
            self_reported.append({"wall_time_s": report.get("wall_time_s"), "peak_rss_bytes": report.get("peak_rss_bytes")})
        if last:
            extract_blocks(frank_out, frank_check)
        shutil.rmtree(frank_out, ignore_errors=True)

    print("frankmerge:", " ".join(frank_cmd), flush=True)
    run_series(frank, args.repeats, lambda: shutil.rmtree(frank_out, ignore_errors=True), frank_after, env=env, logs=logs)
    frank.extra["self_reported"] = self_reported
    frank.extra["lambdas"] = [{"index": i, "lambda_v": v, "lambda_r": r} for i, (v, r) in enumerate(lambdas)]

    # b. mergekit ----------------------------------------------------------------------------
    mergekit: Series | None = None
    mk_versions: dict[str, str] | None = None
    if not args.skip_mergekit:
        exe = ensure_mergekit()
        mk_versions = mergekit_versions()
        weights_v = [v for v, _ in lambdas] or [0.5] * LAYERS  # λs are only known if frankmerge ran
        weights_r = [r for _, r in lambdas] or [0.5] * LAYERS
        config_file = cache / "mergekit-task-arithmetic.yml"
        config_file.write_text(mergekit_config(roles, weights_v, weights_r))
        mk_cmd = [str(exe), str(config_file), str(mergekit_out), "--lazy-unpickle", "--no-copy-tokenizer", "--quiet"]
        mergekit = Series("mergekit", mk_cmd)
        mergekit.extra["config"] = config_file.read_text()
        mergekit.extra["weights_from_frankmerge"] = bool(lambdas)

        def mk_after(run: Run, warmup: bool, last: bool) -> None:
            if last:
                extract_blocks(mergekit_out, mergekit_check)
            shutil.rmtree(mergekit_out, ignore_errors=True)

        print("mergekit:", " ".join(mk_cmd), flush=True)
        run_series(mergekit, args.repeats, lambda: shutil.rmtree(mergekit_out, ignore_errors=True), mk_after, env=env, logs=logs)

    # c. cp -r -------------------------------------------------------------------------------
    cp = Series("cp", ["cp", "-r", str(roles["base"]), str(cp_out)])
    print("cp:", " ".join(cp.command), flush=True)
    run_series(cp, args.repeats, lambda: shutil.rmtree(cp_out, ignore_errors=True),
               lambda run, warmup, last: shutil.rmtree(cp_out, ignore_errors=True), env=env, logs=logs)

    # sanity check ---------------------------------------------------------------------------
    check: dict[str, object] | None = None
    if frank_check.is_file() and lambdas:
        mk_file = mergekit_check if (mergekit is not None and mergekit_check.is_file() and lambdas) else None
        check = compare_blocks(roles, frank_check, mk_file, lambdas)
    for leftover in (frank_check, mergekit_check):
        leftover.unlink(missing_ok=True)

    # results --------------------------------------------------------------------------------
    fs, ms, cs = frank.summary(), mergekit.summary() if mergekit else None, cp.summary()
    f_wall, m_wall = fs["wall_s"]["median"], (ms["wall_s"]["median"] if ms else None)  # type: ignore[index]
    ratio = f_wall / m_wall if f_wall and m_wall else None
    f_rss_gb = fs["peak_rss_bytes"] / GB if fs["peak_rss_bytes"] else None  # type: ignore[operator]
    results = {
        "benchmark": "merge_speed",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "warm_cache": True,
        "repeats": args.repeats,
        "model": {"shape": "Qwen2.5-1.5B", "layers": LAYERS, "hidden": HIDDEN, "intermediate": INTERMEDIATE,
                  "vocab": VOCAB, "dtype": "bfloat16", "tied_embeddings": True,
                  "bytes_per_role": {role: sum(p.stat().st_size for p in roles[role].glob("*.safetensors")) for role in ("base", "reasoner", "vlm")}},
        "machine": machine_info(cache),
        "versions": {"main": main_versions(), "mergekit_venv": mk_versions},
        "build_s": build_s,
        "frankmerge": fs,
        "mergekit": ms,
        "cp": cs,
        "ratio_wall_frankmerge_over_mergekit": ratio,
        "frankmerge_peak_rss_gb": f_rss_gb,
        "targets": {
            "wall_ratio_max": TARGET_WALL_RATIO,
            "wall_ratio_pass": None if ratio is None else ratio <= TARGET_WALL_RATIO,
            "frankmerge_peak_rss_gb_max": TARGET_RSS_GB,
            "frankmerge_peak_rss_pass": None if f_rss_gb is None else f_rss_gb <= TARGET_RSS_GB,
        },
        "sanity_check": check,
        "total_s": None,
    }
    results["total_s"] = round(time.perf_counter() - started, 1)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")

    print()
    print(f"{'command':<12} {'wall median':>12} {'runs (s)':<28} {'peak RSS':>10}")
    for label, s in (("frankmerge", fs), ("mergekit", ms), ("cp -r", cs)):
        if s is None:
            continue
        runs = ", ".join(f"{w:.1f}" for w in s["wall_s"]["runs"]) or ("FAILED" if s["error"] else "-")  # type: ignore[index]
        rss = s["peak_rss_bytes"]
        print(f"{label:<12} {fmt(s['wall_s']['median'], ' s', 1):>12} {runs:<28} {fmt(rss / GB if rss else None, ' GB'):>10}")  # type: ignore[index,operator]
    ok = {True: "PASS", False: "FAIL", None: "n/a"}
    print(f"wall frankmerge/mergekit: {fmt(ratio, 'x', 3)}  (target <= {TARGET_WALL_RATIO}x: {ok[results['targets']['wall_ratio_pass']]})")  # type: ignore[index]
    print(f"frankmerge peak RSS: {fmt(f_rss_gb, ' GB')}  (target <= {TARGET_RSS_GB} GB: {ok[results['targets']['frankmerge_peak_rss_pass']]})")  # type: ignore[index]
    if check is not None:
        diffs = check["max_abs_diff"]
        print("max |diff| over blocks " + ", ".join(map(str, CHECK_BLOCKS)) + ": " + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))  # type: ignore[union-attr]
    print(f"results: {args.results}  (total {results['total_s']} s)")
    return 0 if frank.error is None and (mergekit is None or mergekit.error is None) else 1


if __name__ == "__main__":
    sys.exit(main())

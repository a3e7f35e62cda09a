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
import math
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

GB = 1e9
BUILD_VERSION = 2  # bump when the generated data changes
WEIGHT_STD = 0.02
SHARD_BYTES = 2 * 10**9  # text shards of at most ~2 GB, as the hub's Qwen2.5 checkpoints


@dataclass(frozen=True)
class Shape:
    """A Qwen2.5 text decoder's dimensions, and the targets the benchmark checks at that size."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    max_positions: int
    target_wall_ratio: float
    target_rss_gb: float

    def role_bytes(self) -> int:
        """bf16 bytes of one text checkpoint (the VLM's small vision tower aside)."""
        head = self.hidden // self.heads
        block = 2 * self.hidden + (self.heads + 2 * self.kv_heads) * head * (self.hidden + 1)
        block += self.heads * head * self.hidden + 3 * self.hidden * self.intermediate
        shared = self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden
        return 2 * (self.layers * block + shared)


SHAPES = {
    "1.5b": Shape("Qwen2.5-1.5B", 28, 1536, 8960, 12, 2, 151936, True, 32768, 0.30, 1.0),
    "3b": Shape("Qwen2.5-3B", 36, 2048, 11008, 16, 2, 151936, True, 32768, 0.35, 1.5),
    "7b": Shape("Qwen2.5-7B", 28, 3584, 18944, 28, 4, 152064, False, 131072, 0.35, 1.5),
}


def use_shape(shape: Shape) -> None:
    """Set the module's dimensions (read by the build, extraction and check functions) to ``shape``'s."""
    global SHAPE, LAYERS, HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM, VOCAB, TEXT_CONFIG, VISION_CONFIG
    global BLOCK_SUFFIXES, CHECK_BLOCKS, TARGET_WALL_RATIO, TARGET_RSS_GB
    SHAPE = shape
    LAYERS, HIDDEN, INTERMEDIATE, HEADS, KV_HEADS = shape.layers, shape.hidden, shape.intermediate, shape.heads, shape.kv_heads
    HEAD_DIM, VOCAB = HIDDEN // HEADS, shape.vocab
    TEXT_CONFIG = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        hidden_act="silu",
        max_position_embeddings=shape.max_positions,
        max_window_layers=21 if shape.name == "Qwen2.5-1.5B" else LAYERS,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        use_sliding_window=False,
        tie_word_embeddings=shape.tied,
        bos_token_id=151643,
        eos_token_id=151643,
    )
    # A small Qwen2-VL vision tower (names as in the hub checkpoints, ``visual.*``); its merger
    # projects to the text hidden size like the real one.
    VISION_CONFIG = dict(
        depth=2,
        embed_dim=64,
        hidden_size=HIDDEN,
        num_heads=2,
        mlp_ratio=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
    )
    BLOCK_SUFFIXES = (
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
    CHECK_BLOCKS = (0, LAYERS // 2, LAYERS - 1)  # blocks compared between the two merges
    TARGET_WALL_RATIO, TARGET_RSS_GB = shape.target_wall_ratio, shape.target_rss_gb


SHAPE: Shape
LAYERS = HIDDEN = INTERMEDIATE = HEADS = KV_HEADS = HEAD_DIM = VOCAB = 0
TEXT_CONFIG: dict[str, object] = {}
VISION_CONFIG: dict[str, object] = {}
BLOCK_SUFFIXES: tuple[tuple[str, tuple[int, ...]], ...] = ()
CHECK_BLOCKS: tuple[int, ...] = ()
TARGET_WALL_RATIO = TARGET_RSS_GB = 0.0
use_shape(SHAPES["1.5b"])


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
    """The text tensors, in shards of at most ~SHARD_BYTES: embeddings first, then blocks, then the
    final norm and (untied) lm_head."""

    def block(i: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"model.layers.{i}.{suffix}", shape) for suffix, shape in BLOCK_SUFFIXES]

    tensors = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(LAYERS):
        tensors += block(i)
    tensors.append(("model.norm.weight", (HIDDEN,)))
    if not SHAPE.tied:
        tensors.append(("lm_head.weight", (VOCAB, HIDDEN)))
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensors:
        nbytes = 2 * math.prod(shape)
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


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
        tie_word_embeddings=SHAPE.tied,
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
        "shard_bytes": SHARD_BYTES,
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
    print(f"checkpoints: building base, reasoner, vlm in {cache} (about {SHAPE.role_bytes() / GB:.1f} GB each) ...", flush=True)
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
        assert config.model_type == "qwen2" and config.num_hidden_layers == LAYERS
        assert config.tie_word_embeddings == SHAPE.tied


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------
_WRAPPER = (
    "import json,resource,subprocess,sys\n"
    "rc=subprocess.call(sys.argv[2:])\n"
    "u=resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "json.dump({'rc':rc,'maxrss_kb':u.ru_maxrss,'cpu_s':u.ru_utime+u.ru_stime},open(sys.argv[1],'w'))\n"
    "sys.exit(rc)\n"
)


@dataclass
class Run:
    wall_s: float
    peak_rss_bytes: int | None
    rc: int
    log: Path
    cpu_s: float | None = None  # the child's user + system CPU time
    other_cpu_s: float | None = None  # CPU the rest of the machine used meanwhile (contention)
    inputs_resident: float | None = None  # share of the inputs' bytes in the page cache when it started

    @property
    def contended(self) -> bool | None:
        """Other processes used more than a quarter of a core on average during the run."""
        return None if self.other_cpu_s is None else self.other_cpu_s > 0.25 * self.wall_s

    def as_dict(self) -> dict[str, object]:
        return {
            "wall_s": round(self.wall_s, 3),
            "contended": self.contended,
            "peak_rss_bytes": self.peak_rss_bytes,
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 2),
            "other_cpu_s": None if self.other_cpu_s is None else round(self.other_cpu_s, 2),
            "inputs_resident": None if self.inputs_resident is None else round(self.inputs_resident, 3),
        }


def busy_cpu_seconds() -> float | None:
    """Machine-wide non-idle CPU time from /proc/stat (user, nice, system, irq, softirq, steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


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
        busy_before = busy_cpu_seconds()
        started = time.perf_counter()
        rc = subprocess.call(wrapped, stdout=out, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - started
        busy_after = busy_cpu_seconds()
    text = stats_file.read_text()
    stats_file.unlink(missing_ok=True)
    rss_kb: int | None = None
    cpu_s: float | None = None
    if gnu_time.is_file():
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        rss_kb = int(found.group(1)) if found else None
        user = re.search(r"User time \(seconds\): ([\d.]+)", text)
        system = re.search(r"System time \(seconds\): ([\d.]+)", text)
        cpu_s = float(user.group(1)) + float(system.group(1)) if user and system else None
    elif text:
        stats = json.loads(text)
        rss_kb, cpu_s = int(stats["maxrss_kb"]), float(stats["cpu_s"])
    other = None
    if cpu_s is not None and busy_before is not None and busy_after is not None:
        other = max(0.0, busy_after - busy_before - cpu_s)
    return Run(wall, rss_kb * 1024 if rss_kb is not None else None, rc, log, cpu_s, other)


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
            "contended_runs": sum(bool(r.contended) for r in self.runs),
            "runs": [r.as_dict() for r in self.runs],
            "warmup_run": self.warmup.as_dict() if self.warmup else None,
            **self.extra,
        }


def wait_idle(limit_s: float, threshold: float = 0.25, sample_s: float = 2.0) -> float:
    """Wait (at most ``limit_s``) until other processes use less than ``threshold`` of a core; return the wait."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        before = busy_cpu_seconds()
        time.sleep(sample_s)
        after = busy_cpu_seconds()
        if before is None or after is None or (after - before) / sample_s < threshold:
            break
    return time.perf_counter() - started


def run_series(  # type: ignore[no-untyped-def]
    series: Series,
    repeats: int,
    prepare,
    after,
    env=None,
    logs: Path | None = None,
    idle_s: float = 0.0,
    inputs: list[Path] | None = None,
    space_under: Path | None = None,
) -> None:
    """One warm-up, then ``repeats`` measured runs; ``prepare`` before each, ``after(run, last)`` after
    (``space_under``: wait before each run until an output fits there)."""
    assert logs is not None
    for attempt in range(repeats + 1):
        prepare()
        os.sync()  # earlier runs' writes are not flushed on this run's clock
        if space_under is not None:
            wait_for_space(space_under)
        if idle_s > 0:
            waited = wait_idle(idle_s)
            if waited > 3:
                print(f"  (waited {waited:.0f} s for other processes to go idle)", flush=True)
        label = "warmup" if attempt == 0 else f"run{attempt}"
        resident = resident_fraction(inputs or [])
        run = measure(series.command, logs / f"{series.name}-{label}.log", env=env)
        run.inputs_resident = resident
        status = "ok" if run.rc == 0 else f"FAILED rc={run.rc}"
        rss = f"{run.peak_rss_bytes / GB:.2f} GB" if run.peak_rss_bytes else "?"
        cpu = f"CPU {run.cpu_s:.1f} s" if run.cpu_s is not None else "CPU ?"
        other = f", other processes {run.other_cpu_s:.1f} CPU-s" if run.other_cpu_s is not None else ""
        busy = " CONTENDED" if run.contended else ""
        cached = f", inputs {resident:.0%} in page cache" if resident is not None else ""
        print(f"  {series.name} {label}: {run.wall_s:.1f} s, peak RSS {rss}, {cpu}{other}{cached} [{status}]{busy}", flush=True)
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
    packages = ("mergekit", "torch", "transformers", "safetensors")
    code = f"import importlib.metadata as m, json; print(json.dumps({{p: m.version(p) for p in {packages!r}}}))"
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


def extract_blocks(directory: Path, target: Path, blocks: tuple[int, ...] | None = None) -> None:
    """Save the compared blocks of a merge output (so the output itself can be deleted right away)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    where = _open_model(directory)
    data = {}
    for index in CHECK_BLOCKS if blocks is None else blocks:
        for suffix, _ in BLOCK_SUFFIXES:
            name = f"model.layers.{index}.{suffix}"
            with safe_open(str(where[name]), "pt") as handle:
                data[name] = handle.get_tensor(name).clone()
    save_file(data, str(target))


def compare_blocks(
    roles: dict[str, Path], frank_file: Path, mergekit_file: Path | None, lambdas: list[tuple[float, float]]
) -> dict[str, object]:
    """Max |difference| between the two merges, and of each to θ0 + λV τV + λR τR computed in float64."""
    import torch
    from safetensors import safe_open

    inputs = {role: _open_model(roles[role]) for role in ("vlm", "reasoner", "base")}

    def load(path: Path, name: str) -> torch.Tensor:
        with safe_open(str(path), "pt") as handle:
            return handle.get_tensor(name)

    def spacing(magnitude: torch.Tensor) -> torch.Tensor:
        """bf16's spacing of representable values (1 ulp) at ``magnitude``, floored at the smallest normal's."""
        _, exponent = torch.frexp(magnitude.clamp_min(2.0**-126))
        return torch.ldexp(torch.ones_like(magnitude), exponent - 8)

    keys = ["frank_vs_ref64"] + (["mergekit_vs_ref64", "frank_vs_mergekit"] if mergekit_file is not None else [])
    per_block: dict[str, dict[str, object]] = {}
    for index in CHECK_BLOCKS:
        lv, lr = lambdas[index]
        diffs = dict.fromkeys(keys, 0.0)
        ulps = dict.fromkeys(keys, 0.0)
        matrices = dict.fromkeys(keys, 0.0)  # 2-D weights only: values ~0.02, far from the norms' ~1
        max_abs = 0.0
        numel = differing = 0
        for suffix, _ in BLOCK_SUFFIXES:
            name = f"model.layers.{index}.{suffix}"
            theta = {role: load(inputs[role][name], name).double() for role in inputs}
            ref = theta["base"] + lv * (theta["vlm"] - theta["base"]) + lr * (theta["reasoner"] - theta["base"])
            # ulps at the inputs' magnitude: bf16 arithmetic rounds intermediates of that size, so a result
            # near 0 (cancellation) can be off by one ulp of the inputs, not of itself
            ulp = spacing(torch.stack([ref.abs(), *(t.abs() for t in theta.values())]).amax(0))
            del theta
            frank = load(frank_file, name).double()
            pairs = {"frank_vs_ref64": (frank, ref)}
            if mergekit_file is not None:
                merged = load(mergekit_file, name).double()
                pairs.update(mergekit_vs_ref64=(merged, ref), frank_vs_mergekit=(frank, merged))
                differing += int((frank != merged).sum())
            for key, (a, b) in pairs.items():
                delta = (a - b).abs()
                diffs[key] = max(diffs[key], float(delta.max()))
                ulps[key] = max(ulps[key], float((delta / ulp).max()))
                if ref.dim() == 2:
                    matrices[key] = max(matrices[key], float(delta.max()))
            max_abs = max(max_abs, float(ref.abs().max()))
            numel += frank.numel()
        per_block[str(index)] = {
            "lambda_v": lv,
            "lambda_r": lr,
            "max_abs_value": max_abs,
            "max_abs_diff": diffs,
            "max_abs_diff_2d_weights": matrices,
            "max_diff_bf16_ulps": ulps,
            "frank_ne_mergekit_fraction": differing / numel if mergekit_file is not None else None,
        }

    def worst(field: str) -> dict[str, float]:
        return {key: max(float(b[field][key]) for b in per_block.values()) for key in keys}  # type: ignore[index]

    return {
        "blocks": list(CHECK_BLOCKS),
        "note": "ref64 = θ0 + λV (θV − θ0) + λR (θR − θ0) in float64 from the bf16 inputs; ulps are bf16 spacings "
        "at max(|ref64|, |θ0|, |θV|, |θR|) per element (norm weights ~1: 2^-7 = 0.0078; 2-D weights ~0.02-0.1: "
        "1.2e-4 to 4.9e-4)",
        "max_abs_diff": worst("max_abs_diff"),
        "max_abs_diff_2d_weights": worst("max_abs_diff_2d_weights"),
        "max_diff_bf16_ulps": worst("max_diff_bf16_ulps"),
        "per_block": per_block,
    }


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


def disk_needed(cache: Path, mergekit: bool) -> int:
    """Bytes the run still needs under ``cache``: the three checkpoints unless built, plus the
    largest outputs that exist at once (frankmerge's or mergekit's, and the copy of the floor)."""
    role = SHAPE.role_bytes()
    built = (cache / "spec.json").is_file() and (cache / "spec.json").read_text() == json.dumps(build_spec(), sort_keys=True)
    # Each output is deleted right after its run (and the next run waits for its space to come
    # back, see wait_for_space), so one output at a time, plus 2 % of slack.
    return int(((0 if built else 3 * role) + role) * 1.02)


def wait_for_space(cache: Path, limit_s: float = 120.0) -> None:
    """Before a run, wait until an output fits: some filesystems free a deleted output's blocks lazily."""
    deadline = time.monotonic() + limit_s
    while shutil.disk_usage(cache).free < SHAPE.role_bytes() * 1.02:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"--shape {SHAPE.name}: {shutil.disk_usage(cache).free / GB:.1f} GB free under {cache} after "
                f"{limit_s:.0f} s, an output needs {SHAPE.role_bytes() / GB:.1f} GB; free some space or pass --cache DIR"
            )
        time.sleep(1.0)


def check_disk(cache: Path, mergekit: bool) -> str | None:
    """One line saying what is missing, or None when the free space suffices."""
    needed, free = disk_needed(cache, mergekit), shutil.disk_usage(cache).free
    if free >= needed:
        return None
    return (
        f"--shape {SHAPE.name}: needs {needed / GB:.0f} GB free under {cache} (checkpoints of {SHAPE.role_bytes() / GB:.1f} GB "
        f"x 3 and the outputs), has {free / GB:.0f} GB; pass --cache DIR on a larger disk"
    )


def resident_fraction(directories: list[Path]) -> float | None:
    """Share of the safetensors bytes under ``directories`` that sit in the page cache (util-linux
    ``fincore``; None without it)."""
    files = sorted({p.resolve() for d in directories for p in d.glob("*.safetensors")})
    if not files or shutil.which("fincore") is None:
        return None
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE", *map(str, files)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return None
    resident = total = 0
    for line in out.stdout.split("\n"):
        parts = line.split()
        if len(parts) == 2:
            resident, total = resident + int(parts[0]), total + int(parts[1])
    return resident / total if total else None


def main_versions() -> dict[str, str]:
    import importlib.metadata as md

    import torch

    versions = {p: md.version(p) for p in ("frankmerge", "torch", "transformers", "safetensors", "numba")}
    versions["torch_build"] = torch.__version__  # e.g. "+cu130": a CUDA build maps ~0.7 GB more at import
    return versions


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


PHASES = (  # frankmerge's merge_report.json "timings_s", in the order they happen
    ("startup", "start-up: process start to the first block (interpreter, imports, inputs, pair check)"),
    ("open_inputs", "  of which: opening the inputs (configs, headers, layouts)"),
    ("pair_check", "  of which: the pair doctor"),
    ("other_tensors", "  of which: the VLM's other tensors (vision tower), checked and copied"),
    ("blocks_wall", "decoder blocks, wall"),
    ("statistics", "  statistics pass (thread-seconds)"),
    ("merge", "  merge pass incl. handing chunks to the writer (thread-seconds)"),
    ("writes", "  writes (writer thread-seconds)"),
    ("shared_tensors", "embeddings / final norm / lm_head: finiteness check and copy"),
    ("copies", "  of which: kernel file-to-file copies"),
    ("close", "closing the last shard, index"),
)


def print_phases(frank: dict[str, object], floor: dict[str, object]) -> None:
    """Medians of frankmerge's own phase timings over the measured runs, and the floor beside them."""
    runs = [r.get("timings_s") or {} for r in frank.get("self_reported", [])]  # type: ignore[union-attr]
    if not any(runs):
        return
    wall = frank["wall_s"]["median"]  # type: ignore[index]
    print(f"where frankmerge's time goes (medians of {len(runs)} runs; wall {fmt(wall, ' s', 1)}):")
    for key, label in PHASES:
        values = [r[key] for r in runs if key in r]
        if values:
            print(f"  {statistics.median(values):>7.2f} s  {label}")
    print("  (the rest of the wall: verification, side files, report, process exit)")
    print(f"  floor: cp -r of the VLM's checkpoint {fmt(floor['wall_s']['median'], ' s', 2)}")  # type: ignore[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.5b", help="Qwen2.5 size to imitate [1.5b]")
    parser.add_argument("--skip-mergekit", action="store_true", help="time frankmerge and cp only")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per command after one warm-up [3]")
    parser.add_argument("--cache", type=Path, help=f"checkpoints and scratch outputs [{DEFAULT_CACHE}/SHAPE]")
    parser.add_argument("--results", type=Path, help=f"results JSON [{RESULTS.parent}/merge_speed_SHAPE.json]")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each run, wait up to S seconds for other processes to leave the CPUs idle [0: do not wait]",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="frankmerge --threads N, and OMP_NUM_THREADS/MKL_NUM_THREADS=N for mergekit [every core, both tools]",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    use_shape(SHAPES[args.shape])
    started = time.perf_counter()
    cache: Path = (args.cache or DEFAULT_CACHE / args.shape).resolve()
    results_file: Path = args.results or RESULTS.parent / f"merge_speed_{args.shape}.json"
    cache.mkdir(parents=True, exist_ok=True)
    refusal = check_disk(cache, not args.skip_mergekit)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 2
    logs = cache / "logs"
    roles, build_s = ensure_checkpoints(cache)
    child_env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    if args.threads:
        child_env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    # this checkout's frankmerge, whichever one the venv's console script was installed from
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **child_env}
    frank_out, mergekit_out, cp_out = cache / "out-frankmerge", cache / "out-mergekit", cache / "out-cp"
    frank_check, mergekit_check = cache / "check-frankmerge.safetensors", cache / "check-mergekit.safetensors"
    for stale in (frank_out, mergekit_out, cp_out):
        shutil.rmtree(stale, ignore_errors=True)

    # a. frankmerge --------------------------------------------------------------------------
    frankmerge = Path(sys.executable).parent / "frankmerge"
    frank_cmd = [
        str(frankmerge) if frankmerge.is_file() else "frankmerge",
        "merge",
        "--vlm",
        str(roles["vlm"]),
        "--reasoner",
        str(roles["reasoner"]),
        "--base",
        str(roles["base"]),
        "--out",
        str(frank_out),
        "--no-prior",
        "--overwrite",
        "-q",
        *(["--threads", str(args.threads)] if args.threads else []),
    ]
    frank = Series("frankmerge", frank_cmd)
    lambdas: list[tuple[float, float]] = []
    self_reported: list[dict[str, object]] = []

    def frank_after(run: Run, warmup: bool, last: bool) -> None:
        report = json.loads((frank_out / "merge_report.json").read_text())
        if warmup:
            blocks = sorted(report["blocks"], key=lambda b: b["index"])
            lambdas[:] = [(float(b["lambda_v"]), float(b["lambda_r"])) for b in blocks]
        else:
            self_reported.append(
                {
                    "wall_time_s": report.get("wall_time_s"),
                    "peak_rss_bytes": report.get("peak_rss_bytes"),
                    "timings_s": report.get("timings_s"),
                }
            )
        if last:
            extract_blocks(frank_out, frank_check)
        shutil.rmtree(frank_out, ignore_errors=True)

    print("frankmerge:", " ".join(frank_cmd), flush=True)
    run_series(
        frank,
        args.repeats,
        lambda: shutil.rmtree(frank_out, ignore_errors=True),
        frank_after,
        env=env,
        logs=logs,
        idle_s=args.wait_idle,
        space_under=cache,
        inputs=[roles["vlm"], roles["reasoner"], roles["base"]],
    )
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
        run_series(
            mergekit,
            args.repeats,
            lambda: shutil.rmtree(mergekit_out, ignore_errors=True),
            mk_after,
            env=env,
            logs=logs,
            idle_s=args.wait_idle,
            space_under=cache,
            inputs=[roles["vlm_text"], roles["reasoner"], roles["base"]],
        )

    # c. cp -r -------------------------------------------------------------------------------
    cp = Series("cp", ["cp", "-r", str(roles["vlm"]), str(cp_out)])  # the floor: the VLM's bytes, copied
    print("cp:", " ".join(cp.command), flush=True)
    run_series(
        cp,
        args.repeats,
        lambda: shutil.rmtree(cp_out, ignore_errors=True),
        lambda run, warmup, last: shutil.rmtree(cp_out, ignore_errors=True),
        env=env,
        logs=logs,
        idle_s=args.wait_idle,
        space_under=cache,
        inputs=[roles["vlm"]],
    )

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
    fitted = {  # every measured run started with (almost) all of its inputs in the page cache
        s.name: None if any(r.inputs_resident is None for r in s.runs) else all(r.inputs_resident >= 0.99 for r in s.runs)  # type: ignore[operator]
        for s in (frank, mergekit, cp)
        if s is not None and s.runs
    }
    results = {
        "benchmark": "merge_speed",
        "shape": args.shape,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", *sys.argv]),
        "warm_cache": True,
        "child_env": child_env,
        "wait_idle_s": args.wait_idle,
        "repeats": args.repeats,
        "model": {
            "shape": SHAPE.name,
            "layers": LAYERS,
            "hidden": HIDDEN,
            "intermediate": INTERMEDIATE,
            "vocab": VOCAB,
            "dtype": "bfloat16",
            "tied_embeddings": SHAPE.tied,
            "bytes_per_role": {
                role: sum(p.stat().st_size for p in roles[role].glob("*.safetensors")) for role in ("base", "reasoner", "vlm")
            },
        },
        "machine": machine_info(cache),
        "versions": {"main": main_versions(), "mergekit_venv": mk_versions},
        "build_s": build_s,
        "frankmerge": fs,
        "mergekit": ms,
        "cp": cs,
        "ratio_wall_frankmerge_over_mergekit": ratio,
        "frankmerge_peak_rss_gb": f_rss_gb,
        "inputs_fitted_page_cache": fitted,
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
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results, indent=2) + "\n")

    print()
    print(f"{'command':<12} {'wall median':>12} {'runs (s)':<24} {'peak RSS':>10} {'contended':>10}")
    for label, s in (("frankmerge", fs), ("mergekit", ms), ("cp -r", cs)):
        if s is None:
            continue
        runs = ", ".join(f"{w:.1f}" for w in s["wall_s"]["runs"]) or ("FAILED" if s["error"] else "-")  # type: ignore[index]
        rss = s["peak_rss_bytes"]
        busy = f"{s['contended_runs']}/{len(s['runs'])}"  # type: ignore[arg-type]
        wall = fmt(s["wall_s"]["median"], " s", 1)  # type: ignore[index]
        print(f"{label:<12} {wall:>12} {runs:<24} {fmt(rss / GB if rss else None, ' GB'):>10} {busy:>10}")  # type: ignore[operator]
    if any(s and s["contended_runs"] for s in (fs, ms, cs)):
        print("note: 'contended' runs shared the CPUs with other processes (> 0.25 core); their times are not clean")
    ok = {True: "PASS", False: "FAIL", None: "n/a"}
    targets: dict[str, object] = results["targets"]  # type: ignore[assignment]
    wall_verdict, rss_verdict = ok[targets["wall_ratio_pass"]], ok[targets["frankmerge_peak_rss_pass"]]  # type: ignore[index]
    print(f"wall frankmerge/mergekit: {fmt(ratio, 'x', 3)}  (target <= {TARGET_WALL_RATIO}x: {wall_verdict})")
    print(f"frankmerge peak RSS: {fmt(f_rss_gb, ' GB')}  (target <= {TARGET_RSS_GB} GB: {rss_verdict})")
    if check is not None:
        blocks = ", ".join(map(str, CHECK_BLOCKS))
        for field, unit in (("max_abs_diff", ""), ("max_abs_diff_2d_weights", ""), ("max_diff_bf16_ulps", " ulp")):
            values = ", ".join(f"{k} {v:.3g}{unit}" for k, v in check[field].items())  # type: ignore[union-attr]
            print(f"sanity, blocks {blocks}, {field}: {values}")
    print(f"inputs in the page cache at the start of every measured run: {fitted}")
    print_phases(fs, cs)
    print(f"results: {results_file}  (total {results['total_s']} s)")
    return 0 if frank.error is None and (mergekit is None or mergekit.error is None) else 1


if __name__ == "__main__":
    sys.exit(main())

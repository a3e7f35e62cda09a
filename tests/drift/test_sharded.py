"""Guidance on FSDP2-sharded parameters: equal to the single-process step guidance, one collective per step.

The two-process check runs ``fsdp_toy_worker.py`` under torchrun on CPU (gloo): real
``fully_shard`` parameters with empty and uneven shards, three AdamW steps per variant.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from frankmerge.drift.errors import PriorFormatError
from frankmerge.drift.guidance import VARIANTS
from frankmerge.drift.prior_file import META_KEY, PriorEntry, PriorMetadata, load_prior
from frankmerge.drift.sharding import row_shard, unsupported_sharding

WORKER = Path(__file__).with_name("fsdp_toy_worker.py")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[list[dict[str, object]]]:
    out = tmp_path_factory.mktemp("fsdp-toy")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    root = str(Path(__file__).resolve().parents[2])
    env = {**__import__("os").environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    command = [torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, env=env, cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_fsdp2_weights_equal_single_process_step_guidance(two_ranks) -> None:
    for rank in two_ranks:
        assert [r["variant"] for r in rank] == list(VARIANTS)
        for result in rank:
            assert result["sharded"]
            assert result["max_abs_diff"] <= 1e-6, result  # also assert_close'd per tensor in the worker
            assert result["guidance_effect"] > 0.05, result  # the guidance did change the weights
            assert result["guided_gradients"] == result["reference_guided_gradients"]
            if result["variant"] == "adaptive":
                assert result["mean_cos"] == pytest.approx(result["reference_mean_cos"], abs=1e-6)


def test_empty_and_uneven_shards_are_covered(two_ranks) -> None:
    shapes = [two_ranks[r][0]["local_shapes"] for r in range(2)]
    expected = {  # dim 0 across two ranks: 1 → 1 + 0 (empty), 3 → 2 + 1, 5 → 3 + 2
        "model.layers.0.mlp.down_proj.weight": ([1, 3], [0, 3]),
        "model.layers.0.mlp.up_proj.weight": ([2, 4], [1, 4]),
        "model.layers.1.mlp.up_proj.bias": ([3], [2]),
    }
    for name, (first, second) in expected.items():
        assert (shapes[0][name], shapes[1][name]) == (first, second)


def test_one_collective_per_step(two_ranks) -> None:
    for rank in two_ranks:
        for result in rank:
            expected = 0 if result["variant"] == "absolute" else 1  # absolute needs no norm or dot
            assert result["collectives_per_step"] == [expected] * 3, result
            assert result["hook_collectives"] == 3 * expected


def test_each_rank_holds_and_reads_only_its_rows(two_ranks) -> None:
    for index in range(len(VARIANTS)):
        per_rank = [two_ranks[r][index] for r in range(2)]
        whole = per_rank[0]["reference_delta_bytes"]  # float32 Δ of the unsharded copy
        assert sum(r["delta_bytes"] for r in per_rank) == whole
        assert all(r["delta_bytes"] < whole for r in per_rank)
        assert sum(r["delta_bytes_read"] for r in per_rank) == whole // 2  # the file is bf16: read once in total


def _prior(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    entries = {n: PriorEntry("mlp", tuple(t.shape), n, n, float(t.double().norm()), 1.0) for n, t in tensors.items()}
    meta = PriorMetadata(modules=("mlp",), dtype="bfloat16", num_blocks=1, entries=entries)
    path = tmp_path / "prior.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", META_KEY: meta.to_json()})
    return path


def test_rows_reads_exactly_the_row_range(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "layers.0.mlp.up_proj.weight": torch.randn(7, 5, generator=gen).to(torch.bfloat16),
        "layers.0.mlp.up_proj.bias": torch.randn(7, generator=gen),
        "layers.0.mlp.down_proj.weight": torch.randn(1, 3, generator=gen),
    }
    prior = load_prior(_prior(tmp_path, tensors))
    wanted = [("layers.0.mlp.up_proj.weight", 2, 6), ("layers.0.mlp.up_proj.bias", 4, 7), ("layers.0.mlp.down_proj.weight", 1, 1)]
    got = dict(prior.rows(wanted))
    for name, start, stop in wanted:
        assert torch.equal(got[name], tensors[name][start:stop])
    assert got["layers.0.mlp.down_proj.weight"].shape == (0, 3)
    assert prior.bytes_read == 4 * 5 * 2 + 3 * 4
    with pytest.raises(PriorFormatError, match="rows 5:9"):
        list(prior.rows([("layers.0.mlp.up_proj.bias", 5, 9)]))


def test_plain_tensors_are_one_whole_shard_and_refusals_name_the_alternative() -> None:
    shard = row_shard(torch.nn.Parameter(torch.zeros(3, 2)))
    assert (shard.start, shard.stop, shard.group) == (0, 3, None)

    class Zero3:
        ds_shape = (3, 2)

    class FlatParameter:
        pass

    assert "FSDP2" in (unsupported_sharding(Zero3()) or "")
    assert "fsdp_version: 2" in (unsupported_sharding(FlatParameter()) or "")
    assert unsupported_sharding(torch.zeros(1)) is None

"""The streaming writer and lazy reader round-trip tensors exactly and fail loudly."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from frankmerge.checkpoints.dtypes import as_dtype, to_torch
from frankmerge.checkpoints.reader import COPY_BELOW, Checkpoint
from frankmerge.checkpoints.writer import PlannedTensor, ShardedWriter, parse_size
from frankmerge.errors import CorruptCheckpointError, UnsafeCheckpointError


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(33, 7, generator=generator).to(torch.bfloat16),
        "b.bias": torch.randn(5, generator=generator),
        "c.scalar": torch.tensor(3.0, dtype=torch.float16),
        "d.ids": torch.arange(10, dtype=torch.int64),
        "e.empty": torch.zeros(0, 4),
    }


@pytest.mark.parametrize("mode", ["sync", "background", "background_lent"])
def test_writer_shards_and_round_trips(tmp_path: Path, mode: str):
    """Synchronous, background with copied chunks (tiny slots: chunks split, the ring reused many
    times), and background with chunks filled in lent slots: the same files."""
    tensors = _tensors()
    plan = [PlannedTensor(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    options = {} if mode == "sync" else {"background": True, "slot_bytes": 24, "slots": 2}
    writer = ShardedWriter(tmp_path, plan, max_shard_bytes=200, **options)  # type: ignore[arg-type]
    for name, tensor in tensors.items():
        flat = tensor.reshape(-1)
        for start in range(0, max(flat.numel(), 1), 4):  # several chunks per tensor
            chunk = flat[start : start + 4]
            if mode == "background_lent":  # filled in place: the writer gets its own slot back
                lent = writer.buffer(chunk.numel(), chunk.dtype)
                to_torch(lent, as_dtype(chunk.dtype)).copy_(chunk)
                chunk = lent
            writer.write(name, chunk)
    weight_map = writer.close()
    assert len(set(weight_map.values())) > 1
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == weight_map
    loaded = {k: v for shard in set(weight_map.values()) for k, v in load_file(tmp_path / shard).items()}
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor) and loaded[name].dtype == tensor.dtype


def test_background_write_error_surfaces_on_the_callers_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from frankmerge.errors import DiskFullError
    from tests.fakes import full_disk

    monkeypatch.setattr("frankmerge.checkpoints.writer.io.FileIO", full_disk(100))
    plan = [PlannedTensor("x", torch.float32, (4096,))]
    writer = ShardedWriter(tmp_path, plan, 1 << 20, background=True, slot_bytes=64, slots=2)
    with pytest.raises(DiskFullError, match="disk full"):
        for _ in range(0, 4096, 16):
            writer.write("x", torch.zeros(16))
        writer.close()
    writer.abort()  # stops the thread; a second abort is harmless
    writer.abort()


def test_writer_rejects_out_of_order_tensors(tmp_path: Path):
    plan = [PlannedTensor("x", torch.float32, (2,)), PlannedTensor("y", torch.float32, (2,))]
    writer = ShardedWriter(tmp_path, plan, 1 << 20)
    with pytest.raises(RuntimeError, match="expected tensor 'x'"):
        writer.write("y", torch.zeros(2))


def test_reader_reads_chunks_of_any_size(tmp_path: Path):
    tensors = _tensors()
    save_file(tensors, tmp_path / "model.safetensors")
    with Checkpoint(tmp_path) as checkpoint:
        assert set(checkpoint.names()) == set(tensors)
        for name, tensor in tensors.items():
            info = checkpoint.info(name)
            assert (info.dtype.torch, info.shape) == (tensor.dtype, tuple(tensor.shape))
            pieces = [chunk.clone() for _, chunk in checkpoint.chunks(name, 4)]
            joined = torch.cat(pieces) if pieces else torch.empty(0, dtype=tensor.dtype)
            assert torch.equal(joined, tensor.reshape(-1))


def test_reads_survive_a_kernel_without_madv_populate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Prefaulting is an optimisation: where madvise rejects it, reads fault pages in as before."""
    import frankmerge.checkpoints.reader as reader

    mapped = COPY_BELOW // 4 + 1000  # float32 elements: a read this long is a view of the mapping
    tensor = torch.randn(2 * mapped, dtype=torch.float32)
    save_file({"w": tensor}, tmp_path / "model.safetensors")
    monkeypatch.setattr(reader, "_MADV_POPULATE_READ", 0x7FFF)  # no such advice: EINVAL
    monkeypatch.setattr(reader, "_populate_works", True)
    with Checkpoint(tmp_path) as checkpoint:
        assert torch.equal(checkpoint.read_chunk("w", 0, 2 * mapped), tensor)
        assert reader._populate_works is False  # tried once, then no more syscalls
        assert torch.equal(checkpoint.read_chunk("w", 1000, mapped), tensor[1000 : 1000 + mapped])


def test_truncated_file_is_reported(tmp_path: Path):
    save_file(_tensors(), tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-20])
    with pytest.raises(CorruptCheckpointError, match="past the end of the file"):
        Checkpoint(tmp_path)


def test_index_pointing_to_wrong_shard(tmp_path: Path):
    save_file({"a": torch.zeros(2)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b": torch.zeros(2)}, tmp_path / "model-00002-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00002-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptCheckpointError, match="'a' is listed in shard"):
        Checkpoint(tmp_path)


def test_pickles_refused_by_default(tmp_path: Path):
    torch.save({"a": torch.ones(3)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="--allow-pickle"):
        Checkpoint(tmp_path)
    with Checkpoint(tmp_path, allow_pickle=True) as checkpoint:
        assert torch.equal(checkpoint.load("a"), torch.ones(3))


def test_pickle_with_code_is_not_executed(tmp_path: Path):
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"a": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CorruptCheckpointError, match="weights_only"):
        Checkpoint(tmp_path, allow_pickle=True)
    assert not (tmp_path / "pwned").exists()


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("200KB") == 200_000
    assert parse_size("1GiB") == 2**30
    assert parse_size(123) == 123


def test_verify_output_catches_a_dropped_tensor(tmp_path: Path):
    from frankmerge.checkpoints.output import verify_output
    from frankmerge.errors import IncompleteOutputError

    plan = [PlannedTensor("kept", torch.float32, (2,))]
    writer = ShardedWriter(tmp_path, plan, 1 << 20)
    writer.write("kept", torch.zeros(2))
    writer.close()
    verify_output(tmp_path, plan, ["kept"])
    with pytest.raises(IncompleteOutputError, match="vision.weight"):
        verify_output(tmp_path, plan, ["kept", "vision.weight"])
    with pytest.raises(IncompleteOutputError, match="expected bfloat16"):
        verify_output(tmp_path, [PlannedTensor("kept", torch.bfloat16, (2,))], ["kept"])


def test_reader_handles_tensors_at_unaligned_offsets(tmp_path: Path):
    """A writer that does not pad its header leaves bfloat16 data at an odd byte offset."""
    values = torch.arange(6, dtype=torch.float32).to(torch.bfloat16)
    data = values.view(torch.uint8).numpy().tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, len(data)]}}).encode()
    if len(header) % 2 == 0:
        header += b" "
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + data)
    with Checkpoint(tmp_path) as checkpoint:
        assert checkpoint.info("w").offset % 2 == 1
        assert torch.equal(checkpoint.load("w"), values.reshape(2, 3))
        assert torch.equal(checkpoint.read_chunk("w", 1, 4), values[1:5])


def test_chunks_are_writable_views_that_never_change_the_file(tmp_path: Path):
    tensors = {**_tensors(), "big": torch.randn(COPY_BELOW // 2, dtype=torch.bfloat16)}
    save_file(tensors, tmp_path / "model.safetensors")
    before = (tmp_path / "model.safetensors").read_bytes()
    name, count = "big", COPY_BELOW // 2  # bfloat16: COPY_BELOW bytes, a view (smaller reads are copies)
    with Checkpoint(tmp_path) as checkpoint:
        chunk = checkpoint.read_chunk(name, 0, count)
        chunk.fill_(7)  # copy-on-write: this process sees it, the file does not
        assert bool((checkpoint.read_chunk(name, 0, count) == 7).all())
    assert (tmp_path / "model.safetensors").read_bytes() == before
    with Checkpoint(tmp_path) as checkpoint:
        assert torch.equal(checkpoint.load(name), tensors[name])

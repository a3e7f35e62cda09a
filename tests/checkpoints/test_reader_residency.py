"""Reads leave no checkpoint pages resident in the process: the bound behind the merge's flat peak RSS.

The merge's peak RSS at 1.5B rose from 0.83 to 1.14 GB because the pair doctor's lineage read
~14,000 single rows through the memory map, and each fault mapped a 64 KiB window around its page
that ``release`` could not drop. These tests count the pages of the checkpoint file that are
mapped in this process (``/proc/self/smaps``), not the process's RSS, so nothing else running in
the test process moves them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from frankmerge import MergeRecipe, Prior
from frankmerge.checkpoints.reader import COPY_BELOW, Checkpoint
from frankmerge.doctor import check_pair
from frankmerge.errors import CorruptCheckpointError
from frankmerge.inputs import open_inputs

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="needs Linux /proc/self/smaps")

ROWS, WIDTH = 4096, 1536  # a 12 MiB bfloat16 matrix, an MLP projection's width at 1.5B


def mapped_resident_bytes(path: Path) -> int:
    """Bytes of ``path``'s pages that are resident in this process's mappings."""
    total, inside = 0, False
    target = str(path.resolve())
    with open("/proc/self/smaps") as handle:
        for line in handle:
            head = line.split(maxsplit=5)
            if len(head) >= 5 and "-" in head[0] and ":" in head[3]:  # a mapping's first line
                inside = len(head) == 6 and head[5].strip() == target
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


def matrix_values() -> torch.Tensor:
    return torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)


@pytest.fixture
def matrix(tmp_path: Path) -> Path:
    save_file({"w": matrix_values()}, str(tmp_path / "model.safetensors"))
    with open(tmp_path / "model.safetensors", "rb") as handle:  # in the page cache, as on a warm merge
        handle.read()
    return tmp_path


def test_scattered_row_reads_leave_nothing_mapped(matrix: Path):
    """The pair doctor's pattern: 64 evenly spaced rows of a matrix, each read and released."""
    checkpoint = Checkpoint(matrix)
    whole = matrix_values().reshape(-1)
    for index in range(64):
        row = round(index * (ROWS - 1) / 63)
        values = checkpoint.read_chunk("w", row * WIDTH, WIDTH)
        assert torch.equal(values, whole[row * WIDTH : (row + 1) * WIDTH])
        checkpoint.release("w", row * WIDTH, WIDTH)
    assert mapped_resident_bytes(matrix / "model.safetensors") == 0
    checkpoint.close()


def test_chunked_pass_leaves_at_most_a_window_mapped(matrix: Path):
    """The merge's pattern: the whole tensor in chunks above ``COPY_BELOW`` (views), each released."""
    checkpoint = Checkpoint(matrix)
    chunk = 1 << 20  # elements: 2 MiB of bfloat16, as the merge reads them
    assert chunk * 2 >= COPY_BELOW
    numel = ROWS * WIDTH
    total = 0.0
    for start in range(0, numel, chunk):
        count = min(chunk, numel - start)
        total += float(checkpoint.read_chunk("w", start, count).float().sum())
        checkpoint.release("w", start, count)
    left = mapped_resident_bytes(matrix / "model.safetensors")
    # A fault-around window at each end at most, not the 12 MiB read.
    assert left <= 2 * COPY_BELOW, left
    checkpoint.close()


def test_small_reads_are_copies_and_truncation_is_named(matrix: Path):
    checkpoint = Checkpoint(matrix)
    first = checkpoint.read_chunk("w", 0, 8)
    first.fill_(0)  # a copy: the next read sees the file's values
    assert not bool((checkpoint.read_chunk("w", 0, 8) == 0).all())
    file = matrix / "model.safetensors"
    os.truncate(file, file.stat().st_size - 4096)  # after opening: the header said the bytes were there
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors: tensor 'w' ends past the end of the file"):
        checkpoint.read_chunk("w", ROWS * WIDTH - 8, 8)
    checkpoint.close()


def test_the_pair_check_leaves_no_input_pages_mapped(tiny_triple):
    """The merge's first step reads rows of every role (lineage); none of them may stay mapped."""
    triple = tiny_triple("qwen2_vl", dtype="bfloat16")
    recipe = MergeRecipe(vlm=str(triple.vlm), reasoner=str(triple.reasoner), base=str(triple.base), prior=Prior(kind="none"))
    inputs = open_inputs(recipe)
    try:
        pair = check_pair(inputs)
        assert pair.lineage is not None and pair.lineage.to_base["vlm"].per_block  # rows were read
        files = [file for item in inputs.values() for file in item.checkpoint.files]
        assert files and sum(mapped_resident_bytes(file) for file in files) == 0
    finally:
        for item in inputs.values():
            item.checkpoint.close()

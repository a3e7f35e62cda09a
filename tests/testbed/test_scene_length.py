"""The scene-length diagnosis (benchmarks/testbed_scene_length.py) scores the base on the words the
alignment term aims the image tokens at: 16 scene words at scale 1, 64 patch words at scale 2."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from frankmerge.testbed.trained.config import QUICK
from frankmerge.testbed.trained.encode import Encoder
from frankmerge.testbed.trained.models import new_base
from tests.benchmark_scripts import import_benchmark

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scene_length() -> Any:
    return import_benchmark("testbed_scene_length")


def test_the_text_form_has_one_word_per_patch(scene_length: Any, monkeypatch: pytest.MonkeyPatch, one_thread) -> None:
    scene_words: list[int] = []
    original = Encoder.batch

    def spy(self, examples, loss_on_prompt=False):  # type: ignore[no-untyped-def]
        assert all(e.image is None and e.prompt.split()[: len(e.cell_words)] == list(e.cell_words) for e in examples)
        scene_words.extend(len(e.cell_words) for e in examples)
        return original(self, examples, loss_on_prompt)

    monkeypatch.setattr(Encoder, "batch", spy)
    base = new_base(QUICK.size, 3).eval()
    for scale, words in ((1, 16), (2, 64)):
        scene_words.clear()
        loss = scene_length.text_form_loss(base, Encoder(), scale, batches=1, batch=4)
        assert math.isfinite(loss) and loss > 0 and set(scene_words) == {words}


def test_a_missing_base_is_named_with_the_fix(tmp_path: Path) -> None:
    script = REPO / "benchmarks" / "testbed_scene_length.py"
    result = subprocess.run(
        [sys.executable, str(script), "--seeds", "0", "--cache-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "no cached base for seed 0" in result.stderr and "frankmerge demo --seed 0" in result.stderr

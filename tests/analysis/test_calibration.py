"""The bundled calibration set ships with the package and loads offline; other image sources."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from frankmerge.analysis import CalibrationError, bundled_calibration_set, image_directory, parquet_dataset
from frankmerge.analysis.calibration import BUNDLED_COUNT, bundled_directory, generate_calibration_set

REPO = Path(__file__).resolve().parents[2]


def test_bundled_set_loads_offline():
    images = bundled_calibration_set()
    assert len(images) == BUNDLED_COUNT and images.kind == "bundled" and not images.skipped
    for image in images:
        loaded = image.load()
        assert loaded.mode == "RGB" and loaded.size == (224, 224)
    total = sum(p.stat().st_size for p in bundled_directory().iterdir())
    assert total < 3 * 2**20


def test_bundled_set_is_package_data():
    text = (REPO / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert 'frankmerge = ["data/calibration/*"]' in section
    assert bundled_directory().resolve() == (REPO / "frankmerge" / "data" / "calibration").resolve()


def test_generator_reproduces_the_bundled_set(tmp_path: Path):
    generate_calibration_set(tmp_path, count=3)
    for name in ("calib_000.png", "calib_001.png", "calib_002.png"):
        ours = image_directory(tmp_path).images[int(name[6:9])].load()
        shipped = next(i for i in bundled_calibration_set() if i.name == name).load()
        assert ours.tobytes() == shipped.tobytes()


def test_subset_is_seeded():
    images = bundled_calibration_set()
    first = [i.name for i in images.subset(5, seed=3)]
    assert first == [i.name for i in images.subset(5, seed=3)] and len(set(first)) == 5
    assert images.subset(None) is images and images.subset(100) is images
    with pytest.raises(CalibrationError):
        images.subset(0)


def _png(index: int) -> bytes:
    buffer = io.BytesIO()
    next(i for i in bundled_calibration_set() if i.name == f"calib_{index:03d}.png").load().save(buffer, format="PNG")
    return buffer.getvalue()


def test_parquet_dataset_as_hf_datasets_exports_it(tmp_path: Path):
    rows = [{"bytes": _png(i), "path": f"{i}.png"} for i in range(3)] + [{"bytes": b"junk", "path": "x.png"}]
    table = pa.table({"caption": ["a", "b", "c", "d"], "image": rows})
    pq.write_table(table, tmp_path / "train-00000.parquet")
    images = parquet_dataset(tmp_path)
    assert [i.name for i in images] == [f"train-00000.parquet#{i}" for i in range(3)]
    assert images.skipped == ("train-00000.parquet#3",) and images.images[0].load().size == (224, 224)
    assert len(parquet_dataset(tmp_path / "train-00000.parquet", "image")) == 3
    with pytest.raises(CalibrationError, match="no image column 'photo'"):
        parquet_dataset(tmp_path, "photo")
    with pytest.raises(CalibrationError, match="no parquet file"):
        parquet_dataset(tmp_path / "missing.parquet")

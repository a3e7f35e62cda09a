"""Calibration images for the attention profile: the bundled set, a directory, or a parquet dataset.

Images are listed and checked (header only) up front, so that an unusable source fails before a
model is loaded, and decoded one at a time while profiling, so that 1000 MSCOCO images never sit
in memory together. The bundled set is generated (``generate_calibration_set``), public domain,
and ships with the package so that ``frankmerge profile --vlm X`` runs offline.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from frankmerge.analysis.errors import CalibrationError
from frankmerge.errors import one_line

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
BUNDLED_COUNT = 32
BUNDLED_SIZE = 224


@dataclass(frozen=True)
class CalibrationImage:
    """One image, decoded on demand."""

    name: str
    _open: Callable[[], Image.Image]

    def load(self) -> Image.Image:
        """The image as RGB; a decoding failure is a CalibrationError naming the image."""
        try:
            with self._open() as image:
                return image.convert("RGB")
        except (OSError, ValueError, UnidentifiedImageError) as exc:
            raise CalibrationError(f"calibration image {self.name}: cannot decode ({one_line(exc)})") from exc


@dataclass(frozen=True)
class CalibrationSet:
    """Where the images came from, which ones were used and which were skipped as unreadable."""

    kind: Literal["bundled", "directory", "dataset"]
    source: str
    images: tuple[CalibrationImage, ...]
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[CalibrationImage]:
        return iter(self.images)

    def subset(self, count: int | None, seed: int = 0) -> CalibrationSet:
        """A seeded random subset of ``count`` images (all of them when ``count`` is None or larger)."""
        if count is None or count >= len(self.images):
            return self
        if count < 1:
            raise CalibrationError(f"--num-images must be at least 1, got {count}")
        chosen = sorted(random.Random(seed).sample(range(len(self.images)), count))
        return CalibrationSet(self.kind, self.source, tuple(self.images[i] for i in chosen), self.skipped)


def bundled_directory() -> Path:
    return Path(str(resources.files("frankmerge") / "data" / "calibration"))


def bundled_calibration_set() -> CalibrationSet:
    """The generated images that ship inside the package."""
    directory = bundled_directory()
    images = image_directory(directory)
    return CalibrationSet("bundled", "frankmerge/data/calibration", images.images, images.skipped)


def image_directory(directory: Path) -> CalibrationSet:
    """Every readable image file directly inside ``directory`` (sorted by name); unreadable ones are skipped."""
    if not directory.is_dir():
        raise CalibrationError(f"--images {directory}: no such directory")
    candidates = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    images, skipped = [], []
    for path in candidates:
        if _readable(lambda p=path: Image.open(p)):
            images.append(CalibrationImage(path.name, lambda p=path: Image.open(p)))
        else:
            skipped.append(path.name)
    if skipped:
        log.warning("skipped %d unreadable image(s) in %s: %s", len(skipped), directory, ", ".join(skipped[:5]))
    if not images:
        found = f"{len(candidates)} image file(s), none readable" if candidates else "no image files"
        raise CalibrationError(
            f"--images {directory}: {found} ({'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}); "
            "pass a directory of images, or leave --images out to use the bundled calibration set"
        )
    return CalibrationSet("directory", str(directory), tuple(images), tuple(skipped))


def parquet_dataset(path: Path, column: str | None = None) -> CalibrationSet:
    """Images stored in a parquet file (or a directory of them), as Hugging Face datasets export them.

    The image column holds encoded bytes, either directly or as a ``{bytes, path}`` struct;
    without ``column`` the first such column is used.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise CalibrationError(f"--dataset {path}: no parquet file found; pass a .parquet file or a directory of them")
    images: list[CalibrationImage] = []
    skipped: list[str] = []
    for file in files:
        try:
            schema = pq.read_schema(file)
            name = column or next((f.name for f in schema if _is_image_field(f.type, pa)), None)
            if name is None or name not in schema.names:
                raise CalibrationError(
                    f"--dataset {file}: no image column{f' {column!r}' if column else ''} "
                    f"(columns: {', '.join(schema.names)}); pass --image-column"
                )
            values = pq.read_table(file, columns=[name]).column(name).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise CalibrationError(f"--dataset {file}: not a readable parquet file ({one_line(exc)})") from exc
        for row, value in enumerate(values):
            data = value.get("bytes") if isinstance(value, dict) else value
            label = f"{file.name}#{row}"
            if isinstance(data, bytes) and _readable(lambda d=data: Image.open(io.BytesIO(d))):
                images.append(CalibrationImage(label, lambda d=data: Image.open(io.BytesIO(d))))
            else:
                skipped.append(label)
    if not images:
        raise CalibrationError(f"--dataset {path}: {len(skipped)} row(s), no readable image among them")
    return CalibrationSet("dataset", str(path), tuple(images), tuple(skipped))


def _is_image_field(field_type: object, pa: object) -> bool:
    types = pa.types  # type: ignore[attr-defined]
    if types.is_binary(field_type) or types.is_large_binary(field_type):
        return True
    return types.is_struct(field_type) and any(f.name == "bytes" for f in field_type)  # type: ignore[attr-defined]


def _readable(opener: Callable[[], Image.Image]) -> bool:
    """Header check without decoding the pixels (cheap for thousands of files)."""
    try:
        with opener() as image:
            image.verify()
        return True
    except Exception:  # PIL raises many types for damaged files
        return False


def generate_calibration_set(directory: Path, count: int = BUNDLED_COUNT, size: int = BUNDLED_SIZE, seed: int = 0) -> None:
    """Write the bundled set: seeded scenes of shapes, gradients, stripes and text-like glyph rows.

    Natural photographs would be closer to what the paper measured (MSCOCO); these are generated
    so that the package carries no third-party content. They give the VLM varied, structured
    images at a typical input resolution.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = _scene(rng, size, index % 4)
        image.save(directory / f"calib_{index:03d}.png", optimize=True)


def _scene(rng: np.random.Generator, size: int, style: int) -> Image.Image:
    def color() -> tuple[int, int, int]:
        return tuple(int(c) for c in rng.integers(0, 256, 3))  # type: ignore[return-value]

    # Background: a two-colour linear gradient in a random direction.
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2
    start, end = np.array(color(), float), np.array(color(), float)
    pixels = (start * (1 - t[..., None]) + end * t[..., None]).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    if style == 1:  # stripes
        width = int(rng.integers(6, 24))
        for x in range(-size, 2 * size, 2 * width):
            draw.polygon([(x, 0), (x + width, 0), (x + width + size // 3, size), (x + size // 3, size)], fill=color())
    if style == 2:  # checkerboard patch
        cell = int(rng.integers(8, 28))
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        for i in range(0, size // 2, cell):
            for j in range(0, size // 2, cell):
                if (i // cell + j // cell) % 2 == 0:
                    draw.rectangle([x0 + i, y0 + j, x0 + i + cell - 1, y0 + j + cell - 1], fill=color())
    for _ in range(int(rng.integers(2, 7))):  # shapes
        x0, y0 = (int(v) for v in rng.integers(0, size - 40, 2))
        w, h = (int(v) for v in rng.integers(20, size // 2, 2))
        box = [x0, y0, min(size - 1, x0 + w), min(size - 1, y0 + h)]
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse(box, fill=color(), outline=color(), width=2)
        elif kind == 1:
            draw.rectangle(box, fill=color(), outline=color(), width=2)
        else:
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=color())
    if style == 3:  # rows of glyph-like strokes, like a page of text
        ink = color()
        for row in range(int(rng.integers(3, 8))):
            y = 12 + row * 26
            x = 10
            while x < size - 20 and y < size - 14:
                glyph = int(rng.integers(4, 12))
                if rng.random() < 0.15:
                    x += 8  # word gap
                    continue
                draw.line([(x, y + int(rng.integers(0, 6))), (x + glyph // 2, y + 14)], fill=ink, width=2)
                x += glyph
    return image

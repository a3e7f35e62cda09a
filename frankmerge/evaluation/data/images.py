"""Image cells in every layout the benchmarks ship, and decoding that names the item on failure."""

from __future__ import annotations

import ast
import base64
import binascii
import io
from pathlib import Path
from typing import Any

from frankmerge.errors import one_line
from frankmerge.evaluation.data.tables import is_missing
from frankmerge.evaluation.errors import ImageDecodeError
from frankmerge.evaluation.items import ImageRef

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
_MAX_PATH_CHARS = 1024


def image_refs(value: Any, base_dir: Path, label: str) -> tuple[ImageRef, ...]:
    """References for one cell: HF image struct, raw bytes, a path, base64 text or a list of these."""
    if is_missing(value):
        return ()
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            return (ImageRef(label=label, data=bytes(data)),)
        if path:
            return (ImageRef(label=label, path=_resolve(path, base_dir)),)
        return ()
    if isinstance(value, bytes | bytearray):
        return (ImageRef(label=label, data=bytes(value)),)
    if isinstance(value, list | tuple):
        return tuple(ref for i, v in enumerate(value) for ref in image_refs(v, base_dir, f"{label}[{i}]"))
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):  # VLMEvalKit multi-image cell: a Python list literal
        try:
            return image_refs(list(ast.literal_eval(text)), base_dir, label)
        except (ValueError, SyntaxError):
            pass
    if len(text) <= _MAX_PATH_CHARS and (text.lower().endswith(_IMAGE_SUFFIXES) or (base_dir / text).is_file()):
        return (ImageRef(label=label, path=_resolve(text, base_dir)),)
    return (ImageRef(label=label, b64=text),)


def _resolve(path: str, base_dir: Path) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else base_dir / candidate


def image_bytes(ref: ImageRef) -> bytes:
    """The encoded bytes behind a reference (file, base64 or inline)."""
    if ref.data is not None:
        return ref.data
    if ref.path is not None:
        try:
            return ref.path.read_bytes()
        except OSError as exc:
            raise ImageDecodeError(f"{ref.label}: cannot read image file {ref.path} ({exc.strerror})") from exc
    try:
        return base64.b64decode(ref.b64 or "", validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(f"{ref.label}: image cell is neither a path nor valid base64") from exc


def load_image(ref: ImageRef) -> Any:
    """Decode to an RGB PIL image; any failure is an ImageDecodeError naming the item's image."""
    from PIL import Image, UnidentifiedImageError

    data = image_bytes(ref)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"{ref.label}: image cannot be decoded ({type(exc).__name__}: {one_line(exc)})") from exc

"""Output helpers shared by ``profile`` and ``analyze``: JSON-safe values and all-or-nothing writes."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """NaN and Inf are not JSON; write them as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def commit_files(files: dict[Path, bytes]) -> None:
    """Write every file to a temporary sibling first, then rename them all: no partial outputs."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            staged.append((tmp, path))
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)

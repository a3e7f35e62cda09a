"""Turn a user's model reference (local directory or hub id) into a local directory.

Hub ids are looked up in the local Hugging Face cache through ``huggingface_hub`` and never
downloaded unless the caller asks for it (``allow_download``): merges must be reproducible from
what is on disk, and these machines are often offline.
"""

from __future__ import annotations

import re
from pathlib import Path

from frankmerge.errors import CheckpointNotFoundError, one_line

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")
# Files a merge needs: weights, configs, tokenizer and processor files. No remote code is fetched
# for execution; .py files are copied as plain files only when the user's model ships them.
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "*.py"]


def resolve_checkpoint(reference: str | Path, *, role: str, allow_download: bool = False) -> Path:
    """Local directory of ``reference``; raise a one-line error naming the fix if there is none."""
    text = str(reference)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointNotFoundError(f"--{role} {text}: is a file; pass the model's directory")
        return path.resolve()
    if not _HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise CheckpointNotFoundError(f"--{role} {text}: no such directory; pass a model directory or a hub id (org/name)")
    repo_id, _, revision = text.partition("@")
    return _from_hub(repo_id, revision or None, role=role, allow_download=allow_download)


def _from_hub(repo_id: str, revision: str | None, *, role: str, allow_download: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        directory = snapshot_download(
            repo_id,
            revision=revision,
            local_files_only=not allow_download,
            allow_patterns=_DOWNLOAD_PATTERNS,
        )
    except LocalEntryNotFoundError as exc:
        raise CheckpointNotFoundError(
            f"--{role} {repo_id}: no such local directory, and not in the local Hugging Face cache as a hub id; "
            f"run `hf download {repo_id}` (or pass --download), or fix the path"
        ) from exc
    except Exception as exc:  # network, auth and repository errors from the hub client
        raise CheckpointNotFoundError(f"--{role} {repo_id}: cannot resolve ({type(exc).__name__}: {one_line(exc)})") from exc
    return Path(directory)

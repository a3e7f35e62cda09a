"""Stand-ins for what tests cannot make happen for real (a disk that fills up)."""

from __future__ import annotations

import errno
import io


def full_disk(budget: int) -> type[io.FileIO]:
    """A FileIO class whose files accept ``budget`` bytes in all and then report ENOSPC, like a full disk."""

    class FullDisk(io.FileIO):
        remaining = budget

        def write(self, data):  # type: ignore[no-untyped-def, override]
            if FullDisk.remaining <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            FullDisk.remaining -= len(data)
            return super().write(data)

    return FullDisk

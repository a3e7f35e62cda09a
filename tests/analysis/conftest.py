"""Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine threads make
them ten times slower; run this package's tests single-threaded and restore the setting after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

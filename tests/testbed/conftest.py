"""Fixtures shared by the testbed tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def one_thread():  # type: ignore[no-untyped-def]
    """Workers run one torch thread; the in-process reference must too, for bit-identical floats."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

"""Shared by every test package."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # Tiny models on a shared 2-core CPU: one thread avoids synchronisation overhead (about 10x).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

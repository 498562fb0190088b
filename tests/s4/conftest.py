"""The deep-S4 tests run torch on one CPU thread: their tensors are small, and on a busy machine several threads
spin against each other for many times the work (the same choice as the experiments' s4.threads)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

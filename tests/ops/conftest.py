"""tests/ops: run the Triton kernels on the CPU through Triton's interpreter when there is no GPU.

Triton reads TRITON_INTERPRET when a kernel is first compiled (and at import in some versions), so it is set here,
before any test module of this folder imports triton. It only affects kernels launched on CPU tensors' behalf.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _small_triton_blocks(monkeypatch):
    """Under the interpreter every program and step costs Python overhead: few, wide programs; short chunks (so the
    chunked backward is exercised) and more than one channel block in the backward."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        from stateft.ops import scan_triton

        monkeypatch.setitem(scan_triton.CONFIG, "BLOCK_D", 32)
        monkeypatch.setitem(scan_triton.CONFIG, "bwd_BLOCK_D", 16)
        monkeypatch.setitem(scan_triton.CONFIG, "BLOCK_T", 4)
        monkeypatch.setitem(scan_triton.CONFIG, "CHUNK", 8)

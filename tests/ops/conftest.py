"""tests/ops: run the Triton kernels on the CPU through Triton's interpreter when there is no GPU.

TRITON_INTERPRET itself is set in tests/conftest.py (Triton reads it at import, and other folders import it
indirectly first); here only the block sizes are shrunk for the interpreter.
"""

from __future__ import annotations

import os

import pytest


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

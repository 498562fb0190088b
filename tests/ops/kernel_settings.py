"""The kernel launch settings tests/ops runs with, and backends that carry them.

Under Triton's interpreter (no GPU: TRITON_INTERPRET=1, set in tests/conftest.py) every program and step costs Python
overhead: few, wide scan programs, short chunks (so the chunked backward is exercised) and more than one channel block
in the backward. On a GPU the defaults.
"""

from __future__ import annotations

import torch

from stateft.ops.backend import Backend, interpreting
from stateft.ops.settings import DEFAULT_SETTINGS, KernelSettings

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL_SCAN = {"BLOCK_D": 32, "bwd_BLOCK_D": 16, "BLOCK_T": 4, "CHUNK": 8}
SETTINGS: KernelSettings = DEFAULT_SETTINGS.with_(scan=SMALL_SCAN) if interpreting() else DEFAULT_SETTINGS


def backend(impl: str = "triton", device: str = DEVICE, **ops: dict) -> Backend:
    """``impl`` on ``device`` with `SETTINGS`, some ops' values replaced: ``backend(scan={"SEG": 8})``."""
    return Backend(impl=impl, device=device, settings=SETTINGS.with_(**ops))

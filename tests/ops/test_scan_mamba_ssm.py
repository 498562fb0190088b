"""The optional mamba_ssm backend (kernel + offsets and initial state around it) vs the reference."""

from __future__ import annotations

import pytest
import torch

from tests.ops.test_scan_triton import check, make_inputs

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mamba_ssm_backend(dtype):
    pytest.importorskip("selective_scan_cuda")
    # mamba_ssm's kernel passes no gradient back through the returned last state (prefill only)
    check(make_inputs(2, 64, 16, 300, dtype, "cuda", h0="expanded"), impl="mamba_ssm", grad_last=False)

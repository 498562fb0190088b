"""The fused residual add + RMSNorm (Triton) against the eager module: outputs and the gradients of the residual, the
mixer output and the weight, for each way the outputs are used. On the CPU through Triton's interpreter."""

from __future__ import annotations

import pytest
import torch

from stateft.models.norm import RMSNorm
from stateft.ops import add_rms_norm
from stateft.ops.settings import NormSettings

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def _run(fused, h0, y0, norm, use, seed):
    h = h0.clone().requires_grad_()
    y = None if y0 is None else y0.clone().requires_grad_()
    hn, x = add_rms_norm(h=h, y=y, weight=norm.weight, eps=norm.eps, backend="triton" if fused else "ref")
    g = torch.Generator().manual_seed(seed)
    loss = 0
    if "x" in use:
        loss = loss + (x.float() * torch.randn(x.shape, generator=g).to(DEVICE)).sum()
    if "h" in use:  # the residual going on to the next block
        loss = loss + (hn * torch.randn(hn.shape, generator=g).to(DEVICE)).sum()
    w_grad = norm.weight.grad
    norm.weight.grad = None
    loss.backward()
    out = (hn.detach(), x.detach(), h.grad, None if y is None else y.grad, norm.weight.grad)
    norm.weight.grad = w_grad
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# without y the function returns h itself, so only the uses of x are cases there
@pytest.mark.parametrize(("with_y", "use"), [(True, ("x", "h")), (True, ("x",)), (True, ("h",)), (False, ("x",))])
@pytest.mark.parametrize("train_weight", [True, False])
def test_fused_matches_eager(dtype, with_y, use, train_weight):
    d = 24  # not a power of two: masked lanes
    g = torch.Generator().manual_seed(1)
    h0 = torch.randn(2, 5, d, generator=g).to(DEVICE) * 3
    y0 = torch.randn(2, 5, d, generator=g).to(DEVICE, dtype) if with_y else None
    norm = RMSNorm(d).to(DEVICE, dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(d, generator=g) * 0.5 + 1)
    norm.weight.requires_grad_(train_weight)
    ref = _run(False, h0, y0, norm, use, seed=2)
    got = _run(True, h0, y0, norm, use, seed=2)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    names = ("h + y", "x", "dh", "dy", "dweight")
    for name, a, b in zip(names, got, ref, strict=True):
        if b is None:
            assert a is None, name
            continue
        assert a is not None, name
        assert (a.dtype, a.shape) == (b.dtype, b.shape), name
        assert _rel(a, b) < tol, (name, _rel(a, b))
    assert got[1].dtype == dtype  # x in the weight's dtype, as the eager module


@pytest.mark.parametrize("train_weight", [True, False])
def test_rows_past_a_program_and_zero_rows(train_weight):
    """More rows than one backward program takes (ROWS with the weight trained, 1 frozen), a row count that is not a
    multiple of it; no rows at all."""
    d = 8
    n = NormSettings().ROWS * 2 + 3
    norm = RMSNorm(d).to(DEVICE)
    norm.weight.requires_grad_(train_weight)
    g = torch.Generator().manual_seed(3)
    h0 = torch.randn(1, n, d, generator=g).to(DEVICE)
    y0 = torch.randn(1, n, d, generator=g).to(DEVICE)
    for a, b in zip(_run(True, h0, y0, norm, ("x", "h"), 4), _run(False, h0, y0, norm, ("x", "h"), 4), strict=True):
        assert (a is None) == (b is None)  # the weight's gradient, frozen
        assert a is None or _rel(a, b) < 1e-5
    empty = torch.zeros(2, 0, d, device=DEVICE)
    hn, x = add_rms_norm(h=empty, y=empty.clone(), weight=norm.weight, eps=norm.eps, backend="triton")
    assert hn.shape == x.shape == (2, 0, d)


def test_residual_must_be_fp32():
    from stateft.ops.norm_triton import add_rms_norm_triton

    with pytest.raises(ValueError, match="must be fp32"):
        add_rms_norm_triton(h=torch.zeros(2, 4, dtype=torch.bfloat16), y=None, weight=torch.ones(4), eps=1e-5)


@pytest.mark.gpu
def test_fused_matches_eager_full_size_gpu():
    """A 1.4b layer's residual (4 x 1024 x 2048 fp32, bf16 mixer output and weight), every output and gradient."""
    g = torch.Generator().manual_seed(5)
    h0 = torch.randn(4, 1024, 2048, generator=g).cuda()
    y0 = torch.randn(4, 1024, 2048, generator=g).cuda().bfloat16()
    norm = RMSNorm(2048).cuda().bfloat16()
    ref = _run(False, h0, y0, norm, ("x", "h"), seed=6)
    got = _run(True, h0, y0, norm, ("x", "h"), seed=6)
    for name, a, b in zip(("h + y", "x", "dh", "dy", "dweight"), got, ref, strict=True):
        assert _rel(a, b) < 1e-2, (name, _rel(a, b))

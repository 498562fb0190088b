"""The scan kernels' in-register block helpers (stateft/ops/triton_scan_kernels.py) for every BLOCK_T they accept:
`_flip` reverses a block along its step axis, `_shift` moves it up one step with a carried row, `_row` picks the
first or last row. The kernels themselves run with BLOCK_T 4 in the other tests."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from stateft.ops.triton_scan_kernels import _flip, _row, _shift  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _helpers(x_ptr, c_ptr, flip_ptr, shift_ptr, first_ptr, last_ptr, T: tl.constexpr, X: tl.constexpr, Y: tl.constexpr):
    ot, ox, oy = tl.arange(0, T), tl.arange(0, X), tl.arange(0, Y)
    block = ot[:, None, None] * X * Y + ox[None, :, None] * Y + oy[None, None, :]
    row = ox[:, None] * Y + oy[None, :]
    x = tl.load(x_ptr + block)
    shifted, head = _shift(x, tl.load(c_ptr + row))
    tl.store(flip_ptr + block, _flip(x))
    tl.store(shift_ptr + block, shifted)
    tl.store(first_ptr + row, head)
    tl.store(last_ptr + row, _row(x, True))


@pytest.mark.parametrize("T", [1, 2, 4, 8])
def test_flip_shift_and_rows(T):
    X, Y = 4, 8
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, X, Y, generator=g).to(DEVICE)
    c = torch.randn(X, Y, generator=g).to(DEVICE)
    flip, shift = torch.empty_like(x), torch.empty_like(x)
    first, last = torch.empty_like(c), torch.empty_like(c)
    _helpers[(1,)](x, c, flip, shift, first, last, T=T, X=X, Y=Y, num_warps=1)
    assert torch.equal(flip, x.flip(0))
    assert torch.equal(shift, torch.cat([x[1:], c[None]]))
    assert torch.equal(first, x[0])
    assert torch.equal(last, x[-1])

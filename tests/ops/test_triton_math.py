"""The kernels' softplus and sigmoid (stateft/ops/triton_math.py) against float64 torch, over the whole fp32 range
that reaches them: the series branch of softplus, its switch to log2(1 + e), the clamp at 20, overflow of exp.
On the CPU (interpreter) this checks the formulas; on the GPU the fast hardware approximations they run on there."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from stateft.ops import triton_math  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _apply(x_ptr, sp_ptr, sg_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(sp_ptr + offs, triton_math.softplus(x), mask=mask)
    tl.store(sg_ptr + offs, triton_math.sigmoid(x), mask=mask)


def _points(n_random: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    # log(1/32) = -3.4657...: where softplus switches from its series to log2(1 + e)
    edges = torch.tensor([-3.4657359, -3.4657358, -3.47, -3.46, 0.0, 19.999, 20.0, 20.001, 88.0, 89.0, -87.0, -200.0])
    spread = torch.cat([torch.linspace(-30, 30, 601), torch.randn(n_random, generator=g) * 6])
    return torch.cat([edges, spread]).float()


def _check(n_random: int) -> None:
    x = _points(n_random).to(DEVICE)
    sp, sg = torch.empty_like(x), torch.empty_like(x)
    _apply[(triton.cdiv(x.numel(), 256),)](x, sp, sg, x.numel(), BLOCK=256)
    x64 = x.double().cpu()
    want_sp, want_sg = torch.nn.functional.softplus(x64), torch.sigmoid(x64)
    # relative to the value, with a floor far below anything that matters (exp underflows to 0 below ~-87 in fp32)
    err_sp = ((sp.double().cpu() - want_sp).abs() / want_sp.clamp_min(1e-30)).max().item()
    err_sg = ((sg.double().cpu() - want_sg).abs() / want_sg.clamp_min(1e-30)).max().item()
    assert err_sp < 2e-5, f"softplus relative error {err_sp:.2e}"
    assert err_sg < 1e-5, f"sigmoid relative error {err_sg:.2e}"


def test_softplus_sigmoid_match_float64():
    _check(n_random=200)


@pytest.mark.gpu
def test_softplus_sigmoid_match_float64_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    assert triton_math.FAST, "on the GPU the kernels use the fast approximations"
    _check(n_random=100_000)

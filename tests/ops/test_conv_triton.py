"""The fused causal conv1d + SiLU (Triton) against the torch path (pad, conv1d, SiLU): output, and the gradients of
x, the weight, the bias and a learned leading window. On the CPU through Triton's interpreter (small tiles)."""

from __future__ import annotations

import pytest
import torch

from stateft.ops.conv_ref import conv_silu_ref
from stateft.ops.settings import DEFAULT_SETTINGS, ConvSettings

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# small tiles under the interpreter (several of them per test shape), the defaults on a GPU
SETTINGS = ConvSettings(BLOCK_L=16, BLOCK_C=8) if DEVICE == "cpu" else DEFAULT_SETTINGS.conv


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def _case(b, c, length, K, dtype, window, channels_last_out, bias=True, seed=0, train_conv=True):
    from stateft.ops.conv_triton import conv_silu_triton

    g = torch.Generator().manual_seed(seed)
    # x as the mixers pass it: the first half of in_proj's (b l 2c) output, viewed channels-first
    xz = torch.randn(b, length, 2 * c, generator=g).to(DEVICE, dtype).requires_grad_()
    x = xz.transpose(1, 2)[:, :c]
    w = (torch.randn(c, 1, K, generator=g) * 0.5).to(DEVICE).requires_grad_(train_conv)
    bb = torch.randn(c, generator=g).to(DEVICE).requires_grad_(train_conv) if bias else None
    win_p = torch.randn(c, K - 1, generator=g).to(DEVICE).requires_grad_()
    cot = torch.randn(b, c, length, generator=g).to(DEVICE)
    results = []
    for fn in (conv_silu_triton, conv_silu_ref):
        for t in (xz, w, bb, win_p):
            if t is not None:
                t.grad = None
        lead = win_p.to(dtype)[None].expand(b, -1, -1) if window else None
        u = fn(x=x, window=lead, weight=w, bias=bb, channels_last_out=channels_last_out, settings=SETTINGS)
        (u.float() * cot).sum().backward()
        grads = [t.grad.clone() for t in (xz, w, bb, win_p) if t is not None and t.grad is not None]
        results.append((u, grads))
    (u_fast, g_fast), (u_ref, g_ref) = results
    return u_fast, u_ref, g_fast, g_ref, xz


@pytest.mark.parametrize("window", [False, True])
@pytest.mark.parametrize("channels_last_out", [False, True])
def test_matches_torch_fp32(window, channels_last_out):
    u_fast, u_ref, g_fast, g_ref, xz = _case(2, 12, 37, 4, torch.float32, window, channels_last_out)
    assert _rel(u_fast, u_ref) < 1e-5
    assert len(g_fast) == len(g_ref) == (4 if window else 3)
    for a, r in zip(g_fast, g_ref):
        assert _rel(a, r) < 1e-5
    # u in the layout asked for; dx laid out like x (in_proj's output gets its gradient without a transposing copy)
    assert (u_fast.stride(1) == 1) == channels_last_out
    assert xz.grad.is_contiguous()


def test_frozen_conv_gets_no_gradient():
    """The PEFT case (conv weight and bias frozen): no partial sums for them; x and the window still match."""
    u_fast, u_ref, g_fast, g_ref, _ = _case(2, 12, 37, 4, torch.float32, True, False, train_conv=False)
    assert _rel(u_fast, u_ref) < 1e-5
    assert len(g_fast) == len(g_ref) == 2  # x (through in_proj's output) and the window
    for a, r in zip(g_fast, g_ref):
        assert _rel(a, r) < 1e-5


@pytest.mark.parametrize(("length", "K", "bias"), [(2, 4, True), (1, 2, False), (20, 3, True)])
def test_short_sequences_and_other_widths(length, K, bias):
    # fewer steps than the window, no bias, an odd kernel width
    u_fast, u_ref, g_fast, g_ref, _ = _case(1, 5, length, K, torch.float32, True, False, bias=bias, seed=3)
    assert _rel(u_fast, u_ref) < 1e-5
    for a, r in zip(g_fast, g_ref):
        assert _rel(a, r) < 1e-5


@pytest.mark.parametrize("used", ["both", "first", "second"])
def test_two_aliases_sum_their_gradients(used):
    """``two=True``: u twice (the mixer's projections and scan); the backward adds the two gradients as it reads them
    (one of them (b l c)-major, as a matmul's gradient arrives) and takes one alone when the other is unused."""
    from stateft.ops.conv_triton import conv_silu_triton

    g = torch.Generator().manual_seed(5)
    b, c, length, K = 2, 12, 37, 4
    xz = torch.randn(b, length, 2 * c, generator=g).to(DEVICE).requires_grad_()
    x = xz.transpose(1, 2)[:, :c]
    w = (torch.randn(c, 1, K, generator=g) * 0.5).to(DEVICE).requires_grad_()
    bb = torch.randn(c, generator=g).to(DEVICE).requires_grad_()
    cot1 = torch.randn(b, length, c, generator=g).to(DEVICE).transpose(1, 2)  # channels contiguous
    cot2 = torch.randn(b, c, length, generator=g).to(DEVICE)
    grads = []
    for two in (True, False):
        for t in (xz, w, bb):
            t.grad = None
        if two:
            u1, u2 = conv_silu_triton(x=x, window=None, weight=w, bias=bb, two=True, settings=SETTINGS)
            assert u2.data_ptr() == u1.data_ptr()
        else:
            u1 = u2 = conv_silu_ref(x=x, window=None, weight=w, bias=bb)
        loss = 0.0
        if used in ("both", "first"):
            loss = loss + (u1 * cot1).sum()
        if used in ("both", "second"):
            loss = loss + (u2 * cot2).sum()
        loss.backward()
        grads.append([t.grad.clone() for t in (xz, w, bb)])
    for a, r in zip(*grads):
        assert _rel(a, r) < 1e-5


def test_bf16():
    u_fast, u_ref, g_fast, g_ref, _ = _case(2, 16, 40, 4, torch.bfloat16, True, False)
    assert _rel(u_fast, u_ref) < 2e-2  # the torch path rounds the conv to bf16; the kernel sums in fp32
    for a, r in zip(g_fast, g_ref):
        assert _rel(a, r) < 3e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("c", "length"), [(1536, 1024), (4096, 1024), (3328, 999)])
def test_full_size_gpu(c, length):
    u_fast, u_ref, g_fast, g_ref, _ = _case(4, c, length, 4, torch.float32, True, False)
    assert _rel(u_fast, u_ref) < 1e-4
    for a, r in zip(g_fast, g_ref):
        assert _rel(a, r) < 1e-4


def test_kernel_choice():
    """The Gluon kernels only where they apply: never under the interpreter (no Gluon there), K = 4, BLOCK_L 64, the
    one-pass backward only for the frozen conv; asked for, not with kernels "triton"; a typo there is one clear
    error."""
    from stateft.ops import conv_triton
    from stateft.ops.triton_math import FAST

    default = DEFAULT_SETTINGS.conv
    assert conv_triton._gluon(default, False, 4) == FAST.value
    assert not conv_triton._gluon(default, True, 4)  # dw / d bias / window gradient wanted: two kernels
    assert not conv_triton._gluon(default, False, 3)
    assert not conv_triton._gluon(ConvSettings(BLOCK_L=32), False, 4)
    assert not conv_triton._gluon(ConvSettings(kernels="triton"), False, 4)
    with pytest.raises(ValueError, match="kernels must be"):
        ConvSettings(kernels="glon")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("c", "length", "window", "bias", "two", "channels_last_out", "dtype"),
    [
        (4096, 1024, False, True, True, False, torch.bfloat16),  # the 1.4b Mamba-1 mixer
        (1536, 1000, True, True, False, True, torch.float32),  # a cached window, a partial last tile, Mamba-2's u
        (3300, 77, False, False, True, False, torch.float32),  # a partial channel tile, no bias
        (64, 3, True, True, True, False, torch.float32),  # fewer steps than the window
    ],
)
def test_gluon_kernels_match_triton_gpu(monkeypatch, c, length, window, bias, two, channels_last_out, dtype):
    """The Gluon forward and one-pass backward (the conv frozen) against the Triton kernels: u, and dx with du from
    one or two aliases laid out as the mixer's scan and x_proj write them, x a view of in_proj's output."""
    from stateft.ops import conv_triton

    calls = []

    class _Spy:
        def __init__(self, name):
            self.name, self.k = name, getattr(conv_triton, name)

        def __getitem__(self, grid):
            calls.append(self.name)
            return self.k[grid]

    for name in ("conv_silu_fwd_gluon_kernel", "conv_silu_bwd_gluon_kernel"):
        monkeypatch.setattr(conv_triton, name, _Spy(name))
    g = torch.Generator().manual_seed(7)
    b, K = 3, 4
    xz = torch.randn(b, length, 2 * c, generator=g).cuda().to(dtype).requires_grad_()
    x = xz.transpose(1, 2)[:, :c]
    w = (torch.randn(c, 1, K, generator=g) * 0.5).cuda().to(dtype)
    bb = torch.randn(c, generator=g).cuda().to(dtype) if bias else None
    win = torch.randn(b, c, K - 1, generator=g).cuda().to(dtype) if window else None
    cot = [torch.randn(b, c, length, generator=g).cuda().to(dtype) for _ in range(2)]
    us, dxs = [], []
    for impl in ("gluon", "triton"):
        xz.grad = None
        out = conv_triton.conv_silu_triton(
            x=x, window=win, weight=w, bias=bb, channels_last_out=channels_last_out, two=two,
            settings=ConvSettings(kernels=impl),
        )  # fmt: skip
        outs = out if two else (out,)
        assert (outs[0].stride(1) == 1) == channels_last_out
        torch.autograd.backward(outs, cot[: len(outs)])
        us.append(outs[0].float())
        dxs.append(xz.grad.float())
    assert calls == ["conv_silu_fwd_gluon_kernel", "conv_silu_bwd_gluon_kernel"]  # for "gluon" only
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert _rel(us[0], us[1]) < tol
    assert _rel(dxs[0], dxs[1]) < tol

"""split_halves: the gradient of xz assembled in one buffer == autograd's own (chunk + concatenation), whether the
consumers write their halves in place, return their own gradients, or one half gets none."""

from __future__ import annotations

import torch

from stateft.ops.split_grad import SplitGrad, split_halves


class _InPlaceConsumer(torch.autograd.Function):
    """y = 2 t; the backward writes dt into half ``i`` of the SplitGrad, as the fused conv and scan do."""

    @staticmethod
    def forward(ctx, t, sg, i):
        ctx.sg, ctx.i = sg, i
        return t * 2

    written: list[int] = []  # data_ptr of half 0 (the buffer's start) when written

    @staticmethod
    def backward(ctx, dy):
        out = ctx.sg.half(ctx.i)
        out.copy_(dy * 2)
        if ctx.i == 0:
            _InPlaceConsumer.written.append(out.data_ptr())
        return out, None, None


def _xz(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 5, 6, generator=g, requires_grad=True)  # (b l 2E), E = 3


def _reference(xz, cot_x, cot_z, use_z=True):
    x, z = (t.transpose(1, 2) for t in xz.chunk(2, dim=-1))
    loss = (2 * x * cot_x).sum() + ((2 * z * cot_z).sum() if use_z else 0)
    (grad,) = torch.autograd.grad(loss, xz)
    return grad


def test_in_place_halves_are_the_gradient_without_a_copy():
    xz = _xz()
    cot_x, cot_z = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    x, z, sg = split_halves(xz)
    assert x.shape == z.shape == (2, 3, 5)
    assert torch.equal(x, xz[..., :3].transpose(1, 2))
    ref = _reference(xz, cot_x, cot_z)
    seen = []
    xz.register_hook(lambda g: seen.append(g.data_ptr()))
    _InPlaceConsumer.written.clear()
    loss = (_InPlaceConsumer.apply(x, sg, 0) * cot_x).sum() + (_InPlaceConsumer.apply(z, sg, 1) * cot_z).sum()
    loss.backward()
    assert torch.allclose(xz.grad, ref)
    assert sg.buffer is None  # handed on, not kept
    assert seen == _InPlaceConsumer.written  # xz's gradient is the buffer the halves were written into


def test_consumers_that_return_their_own_gradients_and_an_unused_half():
    xz = _xz(1)
    cot_x, cot_z = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    x, z, _ = split_halves(xz)
    ((2 * x * cot_x).sum() + (2 * z * cot_z).sum()).backward()  # plain torch consumers: copied into place
    assert torch.allclose(xz.grad, _reference(xz, cot_x, cot_z))
    xz.grad = None
    x, z, sg = split_halves(xz)
    (_InPlaceConsumer.apply(x, sg, 0) * cot_x).sum().backward()  # z unused: its half is zero
    assert torch.allclose(xz.grad, _reference(xz, cot_x, cot_z, use_z=False))
    assert torch.equal(xz.grad[..., 3:], torch.zeros(2, 5, 3))


def test_mixed_and_repeated_backward():
    """One consumer in place, the other not; backward twice through the same graph (a fresh buffer each time)."""
    xz = _xz(2)
    cot_x, cot_z = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    x, z, sg = split_halves(xz)
    loss = (_InPlaceConsumer.apply(x, sg, 0) * cot_x).sum() + (2 * z * cot_z).sum()
    first = torch.autograd.grad(loss, xz, retain_graph=True)[0].clone()
    second = torch.autograd.grad(loss, xz)[0]
    ref = _reference(xz, cot_x, cot_z)
    assert torch.allclose(first, ref)
    assert torch.allclose(second, ref)
    assert isinstance(sg, SplitGrad)

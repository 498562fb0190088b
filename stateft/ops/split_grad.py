"""A tensor split in two along its last dimension, whose gradient is assembled in place instead of concatenated.

Mamba-1's mixer splits in_proj's output xz (b l 2E) into x (to the conv) and z (to the scan's gate). Autograd would
give x and z their own gradient tensors and concatenate them for in_proj's backward: a copy of the whole (b l 2E)
gradient per layer. Here the two consumers' backwards
write into the halves of one buffer (`SplitGrad.half`, allocated by whichever runs first, in the backward, so it is not
held through the forward) and the split's backward hands that buffer on. A consumer that does not know about it (the
torch reference paths) just returns its own gradient, which is then copied into place: the same result either way.
"""

from __future__ import annotations

import torch
from torch import Tensor


class SplitGrad:
    """The gradient buffer of a (b l 2E) tensor viewed as two channels-first halves (b E l)."""

    def __init__(self, xz: Tensor) -> None:
        self.shape, self.dtype, self.device = xz.shape, xz.dtype, xz.device
        self.buffer: Tensor | None = None

    def half(self, i: int) -> Tensor:
        """Where half ``i`` (0: x, 1: z) of the gradient goes, (b E l) with the layout of the forward's view."""
        if self.buffer is None:
            self.buffer = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        e = self.shape[-1] // 2
        return self.buffer[..., i * e : (i + 1) * e].transpose(1, 2)

    def take(self) -> Tensor | None:
        buf, self.buffer = self.buffer, None
        return buf


class _SplitHalves(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, sg):
        ctx.sg = sg
        x, z = xz.chunk(2, dim=-1)
        return x.transpose(1, 2), z.transpose(1, 2)

    @staticmethod
    def backward(ctx, dx, dz):
        sg = ctx.sg
        for i, g in enumerate((dx, dz)):
            half = sg.half(i)  # (allocates the buffer if no consumer wrote into it)
            if g is None:
                half.zero_()
            elif g.data_ptr() != half.data_ptr() or g.stride() != half.stride():  # not written in place
                half.copy_(g)
        return sg.take(), None


def split_halves(xz: Tensor) -> tuple[Tensor, Tensor, SplitGrad]:
    """x, z = the halves of ``xz`` (b l 2E) along the features, viewed channels-first (b E l), and the `SplitGrad`
    their consumers' backwards may write into (``conv_silu(..., dx_into=)``, ``selective_scan(..., dz_into=)``)."""
    sg = SplitGrad(xz)
    x, z = _SplitHalves.apply(xz, sg)
    return x, z, sg

"""Memory layouts: allocating a kernel's output or gradient in the dimension order of an existing tensor, and the
channels-first matrix product W @ x that keeps x's layout."""

from __future__ import annotations

import torch
from torch import Tensor


def dim_order(x: Tensor | None) -> list[int] | None:
    """x's dimensions from the outermost in memory (what ``torch.empty_like`` keeps for a dense layout)."""
    return None if x is None else sorted(range(x.dim()), key=lambda i: -x.stride(i))


def empty_in_order(shape: torch.Size | tuple[int, ...], order: list[int] | None, like: Tensor) -> Tensor:
    """An uninitialised tensor of ``shape`` (``like``'s device and dtype) laid out with its dimensions in ``order``,
    outermost first (None: contiguous)."""
    if order is None:
        return torch.empty(shape, device=like.device, dtype=like.dtype)
    t = torch.empty([shape[i] for i in order], device=like.device, dtype=like.dtype)
    return t.permute([order.index(i) for i in range(len(order))])


def matmul_channels_first(w: Tensor, x: Tensor) -> Tensor:
    """w (out, in) @ x (b, in, l) -> (b, out, l) as one batched product over a stride-0 view of w.

    ``torch.matmul`` folds this into one 2-D product when w requires a gradient (to keep w's gradient small), which
    copies x (and its gradient) into (b l, in) order first: for the Mamba-1 mixer's u, a full activation copy each
    way per LoRA'd or trained projection. The stride-0 batch has no copy; w's gradient is summed over b.
    """
    return torch.bmm(w.expand(x.shape[0], -1, -1), x)

"""Allocating a kernel's output or gradient in a given memory layout (the dimension order of an existing tensor)."""

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

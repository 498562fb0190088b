"""The causal conv + SiLU at the start of both mixers, and where its window and the SSM state start from.

A sequence starts from the ``init_state`` slot (a learned conv window and/or H0) or from zeros; a continued one
from the cache. Leading the conv input with that window makes the depthwise conv causal and exact across chunks:
prefill, chunked prefill and step decoding all see the same K-1 previous inputs. The conv and SiLU run as the mixer's
backend says (`stateft.ops.conv_silu`: fused in Triton, x read in place, or padding, conv1d, SiLU).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stateft.models.cache import LayerCache
from stateft.ops import conv_silu as conv_silu_op
from stateft.ops.split_grad import SplitGrad


def conv_start(
    mixer: nn.Module, x: Tensor, cache: LayerCache | None, fresh: bool
) -> tuple[Tensor | None, Tensor | None]:
    """(the window leading x, (b c K-1), or None for zeros; the starting SSM state or None).

    ``mixer`` provides ``init_state`` (slot) and ``state_shape``.
    """
    b = x.shape[0]
    if not fresh:
        return cache.conv.to(x.dtype), cache.ssm
    init = mixer.init_state
    window = None
    if init is not None and getattr(init, "conv", None) is not None:
        window = init.conv.to(x.dtype)[None].expand(b, -1, -1)
    h_start = None if init is None else init.h0[None].expand(b, *init.h0.shape)
    return window, h_start


def conv_silu(
    mixer: nn.Module,
    x: Tensor,
    window: Tensor | None,
    *,
    channels_last_out: bool = False,
    dx_into: SplitGrad | None = None,
    two: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """silu(causal depthwise conv of [window, x]) with the mixer's ``conv1d`` on its ``backend``: x (b c l) -> (b c l),
    laid out (b l c)-major if ``channels_last_out``. The Triton path writes x's gradient into ``dx_into``
    (`stateft.ops.split_grad`) when given. ``two``: u twice, for two consumers (the Triton path sums their gradients
    inside its backward: `conv_triton.conv_silu_triton`)."""
    conv1d = mixer.conv1d
    return conv_silu_op(
        x=x, window=window, weight=conv1d.weight, bias=conv1d.bias, channels_last_out=channels_last_out,
        dx_into=dx_into, two=two, backend=mixer.backend,
    )  # fmt: skip


def next_window(x: Tensor, window: Tensor | None, d_conv: int, ends: Tensor | None = None) -> Tensor:
    """The K-1 latest inputs of [window, x], the cached window for what comes next: (b c K-1). ``ends`` (b,): row i's
    inputs end at position ends[i] of x (a right-padded batch): its window is the K-1 inputs before that."""
    if window is None:
        window = x.new_zeros(x.shape[0], x.shape[1], d_conv - 1)
    if ends is not None:  # [window, x] position ends[i] + j is the j-th of the K-1 inputs before x's position ends[i]
        full = torch.cat([window.to(x.dtype), x], dim=2)
        index = ends[:, None] + torch.arange(d_conv - 1, device=x.device)  # (b K-1)
        return full.gather(2, index[:, None, :].expand(-1, x.shape[1], -1))
    return torch.cat([window.to(x.dtype), x[:, :, max(x.shape[2] - (d_conv - 1), 0) :]], dim=2)[:, :, -(d_conv - 1) :]


def past_the_end(lengths: Tensor | None, length: int) -> Tensor | None:
    """(b 1 l) True at the positions of a right-padded row past its ``lengths`` (None when no row is padded)."""
    if lengths is None:
        return None
    return (torch.arange(length, device=lengths.device)[None, :] >= lengths[:, None])[:, None, :]

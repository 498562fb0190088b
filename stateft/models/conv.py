"""The causal conv at the start of both mixers, and where its window and the SSM state start from.

A sequence starts from the ``init_state`` slot (a learned conv window and/or H0) or from zeros; a continued one
from the cache. Padding the conv input with that window on the left makes the depthwise conv causal and exact
across chunks: prefill, chunked prefill and step decoding all see the same K-1 previous inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stateft.models.cache import LayerCache


def conv_input(mixer: nn.Module, x: Tensor, cache: LayerCache | None, fresh: bool) -> tuple[Tensor, Tensor | None]:
    """x (b c l) -> (the conv input led by its start window (b c K-1+l), the starting SSM state or None).

    ``mixer`` provides ``init_state`` (slot), ``conv_channels``, ``d_conv`` and ``state_shape``.
    """
    b = x.shape[0]
    if not fresh:
        window, h_start = cache.conv.to(x.dtype), cache.ssm
    else:
        init = mixer.init_state
        if init is not None and getattr(init, "conv", None) is not None:
            window = init.conv.to(x.dtype)[None].expand(b, -1, -1)
        else:
            window = x.new_zeros(b, mixer.conv_channels, mixer.d_conv - 1)
        h_start = None if init is None else init.h0[None].expand(b, *init.h0.shape)
    return torch.cat([window, x], dim=2), h_start


def causal_conv(conv1d: nn.Conv1d, x_padded: Tensor) -> Tensor:
    """Depthwise conv over an already left-padded input: (b c K-1+l) -> (b c l), before the activation."""
    bias = None if conv1d.bias is None else conv1d.bias.to(x_padded.dtype)
    return F.conv1d(x_padded, conv1d.weight.to(x_padded.dtype), bias, groups=conv1d.groups)


def last_window(x_padded: Tensor, d_conv: int) -> Tensor:
    """The K-1 latest conv inputs, the cached window for what comes next: (b c K-1)."""
    return x_padded[:, :, x_padded.shape[2] - (d_conv - 1) :]

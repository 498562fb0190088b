"""Frozen weight + trainable delta, as ``torch.nn.utils.parametrize`` parametrisations of a frozen parameter.

- ``EntryDelta``: W[rows[i], cols[i], ...] += values[i] (SDT's selected (channel, state) entries of C, log_A_real,
  A_imag; trailing dimensions such as C's real/imaginary pair come along: values (k, *trailing)). Mamba's SDT
  (``stateft.methods.selective_dims``) trains its sparse deltas on A_log and x_proj's W_B, W_C with it too.
- ``ColumnDelta``: W[:, cols] += values (SDT's update of a linear layer's input columns of the selected channels).
- ``LowRankDelta``: W += B A with A (r, in), B (out, r) (LoRA; B starts at zero, A as nn.Linear's default init, or
  standard normal as the SDT code's LoRA on the SSM tables; no scaling, as the SDT code's adapters).
- ``ComplexLowRankDelta``: the same for C, a complex (H, M) stored as its real view (H, M, 2): C += B A with complex
  B (H, r) zero and A (r, M) complex standard normal (the SDT code's LoRA on C).
- ``DenseDelta``: W += values with values of W's shape, dtype and device, starting at zero (SDT's soft mode: every
  entry may move; Mamba's SDT warm-up on A_log).
Every delta starts so that W + delta = W: the model is unchanged when a method is applied. ``add_delta`` registers
one; ``dense_delta`` is the twin the tests compare ``EntryDelta`` with (a dense zero tensor with the values written
at the same entries).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from stateft.methods.base import new_parameter


class EntryDelta(nn.Module):
    """W + delta on the entries (rows[i], cols[i]) only; ``values`` holds one trainable fp32 entry (of shape
    ``trailing``) per index pair."""

    def __init__(self, rows: Tensor, cols: Tensor, trailing: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.values = new_parameter(torch.zeros(rows.numel(), *trailing, device=rows.device))

    def forward(self, weight: Tensor) -> Tensor:
        return weight.index_put((self.rows, self.cols), self.values.to(weight.dtype), accumulate=True)


class ColumnDelta(nn.Module):
    def __init__(self, out_features: int, cols: Tensor) -> None:
        super().__init__()
        self.register_buffer("cols", cols, persistent=False)
        self.values = nn.Parameter(torch.zeros(out_features, cols.numel(), device=cols.device))

    def forward(self, weight: Tensor) -> Tensor:
        return weight.index_add(1, self.cols, self.values.to(weight.dtype))


class LowRankDelta(nn.Module):
    def __init__(
        self, out_features: int, in_features: int, rank: int, device: torch.device, normal: bool = False
    ) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device))
        if normal:
            nn.init.normal_(self.lora_A)
        else:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device))

    def forward(self, weight: Tensor) -> Tensor:
        return weight + (self.lora_B @ self.lora_A).to(weight.dtype)


class ComplexLowRankDelta(nn.Module):
    def __init__(self, rows: int, cols: int, rank: int, device: torch.device) -> None:
        super().__init__()
        A = torch.randn(rank, cols, dtype=torch.cfloat, device=device)
        self.lora_A = nn.Parameter(torch.view_as_real(A).clone())
        self.lora_B = nn.Parameter(torch.zeros(rows, rank, 2, device=device))

    def forward(self, weight: Tensor) -> Tensor:
        product = torch.view_as_complex(self.lora_B) @ torch.view_as_complex(self.lora_A)
        return weight + torch.view_as_real(product).to(weight.dtype)


class DenseDelta(nn.Module):
    """W + delta, delta dense, zero-initialised, of ``like``'s shape, dtype and device."""

    def __init__(self, like: Tensor) -> None:
        super().__init__()
        self.values = nn.Parameter(torch.zeros_like(like))

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.values.to(weight.dtype)


def add_delta(module: nn.Module, name: str, delta: nn.Module) -> None:
    """Parametrise ``module.<name>`` as frozen original + ``delta`` (the original stops requiring a gradient)."""
    getattr(module, name).requires_grad_(False)
    parametrize.register_parametrization(module, name, delta)
    getattr(module.parametrizations, name).original.requires_grad_(False)


def dense_delta(shape: tuple[int, ...], rows: Tensor, cols: Tensor, values: Tensor) -> Tensor:
    """The twin of ``EntryDelta``: a zero tensor of ``shape`` with ``values`` added at (rows, cols), one entry at a
    time."""
    out = torch.zeros(shape, dtype=values.dtype)
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        out[r, c] += values[i]
    return out

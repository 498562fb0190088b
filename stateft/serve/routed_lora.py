"""Per-row LoRA: a mixer linear whose rows get each their own adapter's low-rank update, the base weights shared.

``RoutedLinear`` takes a mixer linear's place (the frozen base linear inside it, as `LoRALinear` holds it) and keeps
the LoRA factors of every loaded adapter for that linear, stacked: A (adapters + 1, R, in) and B (adapters + 1, out,
R), B already scaled by the adapter's alpha / r, each zero-padded to the largest rank R of the bank; the last row
(index -1, ``NO_ADAPTER``) and the rows of adapters that leave this linear alone are zeros. An adapter's factors are
``LoRALinear.update_factors``' (all its row blocks as one pair, B zero on the rows no block covers).

What it computes follows the routing (`stateft.serve.routing`), so that every row gets what the module in this place
computes when its adapter alone is applied:

- no adapter of the call updates this linear: the base linear itself, with the views it offers (a Mamba-1
  ``Projection``'s ``channels_first`` and ``without_bias``);
- one adapter for the whole call (a prefill group) that updates it: ``LoRALinear.forward`` and ``channels_first``
  with that adapter's own (unpadded) factors;
- one adapter index per row (decoding steps), some of which update it: the base output plus, per row, the gathered
  product x A[i]^T B[i]^T (two batched matrix products; rows without an update gather zeros and add exactly 0).
  ``without_bias`` is then not offered, as ``LoRALinear`` offers none, so the mixer calls ``forward`` and hands the
  scan no bias (Mamba-1's dt_proj). The rows without an update there get what the scan adds up from
  ``without_bias`` and the bias (in fp32), so that output is fp32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stateft.methods.lora import WrappedLinear
from stateft.ops.layout import matmul_channels_first
from stateft.serve.routing import Routing


class RoutedLinear(WrappedLinear):
    """A frozen linear (``base``) plus per-row LoRA updates from stacked factor banks (`set_bank`)."""

    def __init__(self, base: nn.Module, routing: Routing) -> None:
        super().__init__()
        self.base, self.routing = base, routing
        # non-persistent buffers: they follow the model's .to() and stay out of its state dict
        self.register_buffer("A_bank", None, persistent=False)  # (adapters + 1, R, in) fp32
        self.register_buffer("B_bank", None, persistent=False)  # (adapters + 1, out, R) fp32, scaled
        self.register_buffer("updates", None, persistent=False)  # (adapters + 1,) bool: the adapter updates this
        self.ranks: list[int] = [0]  # per adapter, then 0 for the zero row; 0: no update of this linear

    def set_bank(self, A_bank: Tensor, B_bank: Tensor, ranks: list[int]) -> None:
        self.A_bank, self.B_bank, self.ranks = A_bank, B_bank, ranks
        self.updates = torch.tensor([r > 0 for r in ranks], device=A_bank.device)

    def _route(self) -> int | Tensor | None:
        """None: no row of the call is updated here; an int: that adapter for every row; a Tensor (b,): per row."""
        index = self.routing.index
        if isinstance(index, Tensor):
            return index if any(self.ranks[i] for i in self.routing.present) else None
        if index is None or not self.ranks[index]:
            return None
        return index

    def _factors(self, adapter: int) -> tuple[Tensor, Tensor]:
        """One adapter's own A (r, in) and scaled B (out, r), as its LoRALinear makes them."""
        rank = self.ranks[adapter]
        return self.A_bank[adapter, :rank], self.B_bank[adapter, :, :rank].contiguous()

    def _per_row(self, x: Tensor, index: Tensor) -> Tensor:
        """x (b, ..., in) -> each row's update (b, ..., out) with its gathered factors."""
        A = self.A_bank[index].to(x.dtype)  # (b R in); index -1 is the zero row
        B = self.B_bank[index].to(x.dtype)  # (b out R)
        rows = x.reshape(x.shape[0], -1, x.shape[-1])  # (b L in)
        update = torch.bmm(torch.bmm(rows, A.transpose(1, 2)), B.transpose(1, 2))  # (b L out)
        return update.reshape(*x.shape[:-1], update.shape[-1])

    def forward(self, x: Tensor) -> Tensor:
        route = self._route()
        out = self.base(x)
        if route is None:
            return out
        if isinstance(route, int):  # LoRALinear.forward in eval mode
            A, B = self._factors(route)
            return out + F.linear(F.linear(x, A.to(x.dtype)), B.to(x.dtype)).to(out.dtype)
        updated = out + self._per_row(x, route).to(out.dtype)
        if self.bias is None or not hasattr(self.base, "without_bias"):
            return updated
        # dt_proj: rows without an update are what the scan computes from without_bias and the bias (fp32)
        plain = self.base.without_bias(x).float() + self.bias.float()
        rows = self.updates[route].view(-1, *[1] * (x.dim() - 1))
        return torch.where(rows, updated.float(), plain)

    @property
    def channels_first(self) -> Callable[[Tensor], Tensor]:
        """The base's view (x (b in l) -> (b out l), no bias) plus the update; absent when the base has none."""
        if not hasattr(self.base, "channels_first"):
            raise AttributeError("channels_first")
        return self._channels_first

    def _channels_first(self, x: Tensor) -> Tensor:
        route = self._route()
        if route is None:
            return self.base.channels_first(x)
        if isinstance(route, int):  # LoRALinear.channels_first in eval mode
            A, B = self._factors(route)
            update = matmul_channels_first(B.to(x.dtype), matmul_channels_first(A.to(x.dtype), x))
        else:
            A, B = self.A_bank[route].to(x.dtype), self.B_bank[route].to(x.dtype)
            update = torch.bmm(B, torch.bmm(A, x))
        return matmul_channels_first(self.base.weight.to(x.dtype), x) + update

    @property
    def without_bias(self) -> Callable[[Tensor], Tensor]:
        """The base's view when no row of the call is updated here (LoRALinear offers none)."""
        if not hasattr(self.base, "without_bias") or self._route() is not None:
            raise AttributeError("without_bias")
        return self.base.without_bias

"""Batch invariance as a mode: ``with batch_invariant():`` the matrix products of the block (``aten.mm``,
``addmm``, ``bmm``: linear layers, the LM head, LoRA, einsums) run as `stateft.ops.invariant_matmul`, whose every
output row is computed the same way whatever the number of rows; every other op as usual.

`stateft.generation` enters it when asked (``batch_invariant=True``; evaluation: ``dataset.batch_invariant``), so
that a batch decodes each example to the tokens it gets alone (the other ops of the decoding step and of the prefill
are per row already). Where Triton cannot run (a CPU tensor without ``TRITON_INTERPRET=1``) the products run as
`products_row_by_row`: each row multiplied alone, the same call whatever the batch. Importing this module needs no
Triton; a product on a GPU (or under the interpreter) does.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from stateft.ops.backend import interpreting

_aten = torch.ops.aten
_state = threading.local()


def products_row_by_row(
    a: Tensor, b: Tensor, *, bias: Tensor | None = None, alpha: float = 1.0, beta: float = 1.0
) -> Tensor:
    """``invariant_matmul``'s contract without Triton: each row of a (M K) or (B M K) multiplied alone as a (1 K)
    product in fp32 (one shape whatever the batch, so one BLAS path), then alpha, beta * bias, rounded to a's dtype.
    One small call per row (the prefill's rows too: batch x prompt length): slow, for a CPU run that asks for
    batch invariance."""
    batched = a.dim() == 3
    a3 = (a if batched else a[None]).float()
    shared = b.dim() == 2  # one b for every batch entry (a linear layer's weight)
    b3 = (b[None] if shared else b).float()
    out = a3.new_empty(a3.shape[0], a3.shape[1], b3.shape[2])
    # fixed, freshly allocated operands: BLAS's vector path can depend on where an operand starts in memory
    row = a3.new_empty(1, a3.shape[2])
    other = b3[0] if shared else b3.new_empty(b3.shape[1:])
    for i in range(a3.shape[0]):
        if not shared:
            other.copy_(b3[i])
        for m in range(a3.shape[1]):
            out[i, m : m + 1] = torch.mm(row.copy_(a3[i, m : m + 1]), other)
    out = out * alpha
    if bias is not None:
        out = out + beta * bias.float()
    out = out.to(a.dtype)
    return out if batched else out[0]


def _product(a: Tensor):
    """The implementation for a product of ``a``: the Triton kernel where Triton runs, else row by row."""
    if a.is_cuda or interpreting():
        from stateft.ops.invariant_matmul import invariant_matmul

        return invariant_matmul
    return products_row_by_row


class BatchInvariant(TorchDispatchMode):
    """Inside: ``mm``, ``addmm`` and ``bmm`` run as ``invariant_matmul`` (or `products_row_by_row`, see _product)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _aten.mm.default or func is _aten.bmm.default:
            return _product(args[0])(args[0], args[1])
        if func is _aten.addmm.default:
            bias, a, b = args
            return _product(a)(a, b, bias=bias, alpha=kwargs.get("alpha", 1), beta=kwargs.get("beta", 1))
        return func(*args, **kwargs)


def batch_invariant_active() -> bool:
    """Whether this thread runs inside ``batch_invariant(True)`` (a recorded decoding step depends on it)."""
    return getattr(_state, "depth", 0) > 0


class batch_invariant:  # noqa: N801  (a context manager, like torch.no_grad)
    """``with batch_invariant(on):`` the products of the block run as ``invariant_matmul`` when ``on``."""

    def __init__(self, enabled: bool = True) -> None:
        self.mode = BatchInvariant() if enabled else None

    def __enter__(self) -> batch_invariant:
        if self.mode is not None:
            self.mode.__enter__()
            _state.depth = getattr(_state, "depth", 0) + 1
        return self

    def __exit__(self, *exc) -> None:
        if self.mode is not None:
            _state.depth -= 1
            self.mode.__exit__(*exc)

"""Batch invariance as a mode: ``with batch_invariant():`` the matrix products of the block (``aten.mm``,
``addmm``, ``bmm``: linear layers, the LM head, LoRA, einsums) run as `stateft.ops.invariant_matmul`, whose every
output row is computed the same way whatever the number of rows; every other op as usual.

`stateft.generation` enters it when asked (``batch_invariant=True``; evaluation: ``dataset.batch_invariant``), so
that a batch decodes each example to the tokens it gets alone (the other ops of the decoding step and of the prefill
are per row already). Importing this module needs no Triton; entering the mode does.
"""

from __future__ import annotations

import threading

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
_state = threading.local()


class BatchInvariant(TorchDispatchMode):
    """Inside: ``mm``, ``addmm`` and ``bmm`` run as ``invariant_matmul``."""

    def __init__(self) -> None:
        super().__init__()
        from stateft.ops.invariant_matmul import invariant_matmul

        self.matmul = invariant_matmul

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _aten.mm.default or func is _aten.bmm.default:
            return self.matmul(args[0], args[1])
        if func is _aten.addmm.default:
            bias, a, b = args
            return self.matmul(a, b, bias=bias, alpha=kwargs.get("alpha", 1), beta=kwargs.get("beta", 1))
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

"""Activation recomputation for chosen tensors: saved for the backward as the recipe that remakes them, not the data.

The Mamba-1 mixer's scan keeps u (the conv's output) and delta (dt_proj's output) for its backward, (b E l) each:
two thirds of a layer's saved activations besides in_proj's output, ~3 GB of a 1.4b training step. Both are cheap to
remake from what is kept anyway (the conv from in_proj's output, delta from x_proj's small dt rows), which is what
mamba_ssm's fused mixer does by default ("checkpoint_lvl 1"). `recompute_saved` does it without the ops knowing:
inside it, a tensor saved for the backward that is one of the given ones is stored as its recipe and remade when
the backward unpacks it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


class _Recipe:
    def __init__(self, make: Callable[[], Tensor]) -> None:
        self.make = make

    def __call__(self) -> Tensor:
        with torch.no_grad():
            return self.make()


def _key(t: Tensor) -> tuple:
    """The data and the view of it (the tensor an op saves may be another Python object for it). Keys, not the
    tensors, go into the hooks: autograd keeps the pack hook with what it packed, and a tensor there stays alive."""
    return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype


@contextmanager
def recompute_saved(recipes: list[tuple[Tensor, Callable[[], Tensor]]]) -> Iterator[None]:
    """Inside: ops that save one of the ``recipes``' tensors for their backward save its recipe instead (a function
    returning the same values in the same layout, run without autograd when the backward needs them). Nothing
    changes if the list is empty or no op saves those tensors."""
    if not recipes:
        yield
        return

    by_key = {_key(src): make for src, make in recipes}

    def pack(t: Tensor):
        make = by_key.get(_key(t))
        return t if make is None else _Recipe(make)

    def unpack(p):
        return p() if isinstance(p, _Recipe) else p

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield

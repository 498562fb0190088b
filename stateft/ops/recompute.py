"""Activation recomputation for chosen tensors: saved for the backward as the recipe that remakes them, not the data.

The Mamba-1 mixer's scan keeps u (the conv's output) and delta (dt_proj's output) for its backward, (b E l) each:
two thirds of a layer's saved activations besides in_proj's output, ~3 GB of a 1.4b training step. Both are cheap to
remake from what is kept anyway (the conv from in_proj's output, delta from x_proj's small dt rows), which is what
mamba_ssm's fused mixer does by default ("checkpoint_lvl 1"). `recompute_saved` does it without the ops knowing:
inside it, a tensor saved for the backward that has a recipe is stored as that recipe and remade when the backward
unpacks it. Code running inside may add recipes (`Recipes.add`) and derive one from another (`derive`: LoRA's dropout
output is its input, remade, times the kept mask).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


class _Maker:
    """A recipe as saved: remakes the tensor when a backward unpacks it, and keeps it until every saved copy has been
    unpacked (u is saved by the scan and, through LoRA's dropout, by x_proj: one conv recompute serves both)."""

    def __init__(self, make: Callable[[], Tensor], src: _Maker | None = None) -> None:
        self.make, self.src = make, src
        self.uses, self.value = 0, None

    def packed(self) -> _Maker:
        self.uses += 1
        if self.src is not None:  # each unpack of a derived tensor takes its source once
            self.src.packed()
        return self

    def get(self) -> Tensor:
        if self.src is not None:  # derived: cheap, not cached
            with torch.no_grad():
                return self.make()
        value = self.value
        if value is None:
            with torch.no_grad():
                value = self.make()
        self.uses -= 1
        self.value = value if self.uses > 0 else None
        return value


def _key(t: Tensor) -> tuple:
    """The data and the view of it (the tensor an op saves may be another Python object for it). Keys, not the
    tensors, go into the hooks: autograd keeps the pack hook with what it packed, and a tensor there stays alive."""
    return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype


class Recipes:
    """The recipes of an active `recompute_saved`, by tensor."""

    def __init__(self) -> None:
        self.by_key: dict[tuple, _Maker] = {}

    def add(self, t: Tensor, make: Callable[[], Tensor]) -> None:
        """From now on inside the context, ``t`` is saved as ``make`` (same values, same layout)."""
        self.by_key[_key(t)] = _Maker(make)

    def derive(self, out: Tensor, src: Tensor, fn: Callable[[Tensor], Tensor]) -> None:
        src_maker = self.by_key.get(_key(src))
        if src_maker is not None:
            self.by_key[_key(out)] = _Maker(lambda: fn(src_maker.get()), src=src_maker)


_active: list[Recipes] = []


def derive(out: Tensor, src: Tensor, fn: Callable[[Tensor], Tensor]) -> None:
    """If ``src`` has a recipe in the innermost active context, give ``out`` = fn(src) one too (fn must be
    deterministic: masks and other inputs it uses are kept by the closure). No-op outside a context."""
    if _active:
        _active[-1].derive(out, src, fn)


@contextmanager
def recompute_saved(recipes: list[tuple[Tensor, Callable[[], Tensor]]], enabled: bool = True) -> Iterator[Recipes]:
    """Inside: ops that save one of the recipes' tensors for their backward save the recipe instead (a function
    returning the same values in the same layout, run without autograd when the backward needs them). Yields the
    registry (`Recipes.add` for tensors made inside). Not ``enabled``: nothing is installed, recipes are ignored."""
    reg = Recipes()
    if not enabled:
        yield reg
        return
    for t, make in recipes:
        reg.add(t, make)
    by_key = reg.by_key

    def pack(t: Tensor):
        maker = by_key.get(_key(t))
        return t if maker is None else maker.packed()

    def unpack(p):
        return p.get() if isinstance(p, _Maker) else p

    _active.append(reg)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield reg
    finally:
        _active.pop()

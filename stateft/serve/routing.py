"""Per-row adapter selection inside the model's adapter slots, with the model unaware of it.

The mixers read their slots as always (``mixer.state_offset.h_prime()`` / ``y_prime()`` in ``forward`` and ``step``,
``mixer.init_state.h0`` / ``conv`` when a sequence starts). The modules here sit in those slots and answer from a bank
of stacked tensors: one row per loaded adapter, then a zero row (index -1, ``NO_ADAPTER``: the base model). Which
rows they answer with is set on a shared ``Routing`` by the decoder before each call (`stateft.serve.decode`):

- ``None`` or an ``int`` (one adapter for every row of the call: a prefill group): that adapter's own tensor,
  unbatched, exactly as the method's module gives it when that adapter alone is applied; ``None`` where that adapter
  fills no such slot (a y' adapter has no h'; no adapter at all), so such rows run the base model's exact path. The
  initial state is the one exception: a slot the model reads unconditionally, so rows without one start from zeros.
- a ``Tensor`` (b,) of adapter indices (decoding steps): the offsets of every row, (b, ...), gathered from the bank.
  Only the offsets take this form (the mixers' ``step`` reads per-row offsets; the initial state is a prefill slot).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

NO_ADAPTER = -1  # the bank's last row: zeros

Index = int | Tensor | None


class Routing:
    """The adapter index of the rows the model runs next: shared by every routed module of one model."""

    def __init__(self) -> None:
        self.index: Index = None

    @contextmanager
    def use(self, index: Index) -> Iterator[None]:
        """Run the block with ``index`` set (put back afterwards, also on an error)."""
        previous, self.index = self.index, index
        try:
            yield
        finally:
            self.index = previous


class _Routed(nn.Module):
    """Banks registered as non-persistent buffers (they follow the model's ``.to()``, stay out of its state dict),
    with ``has[name]``: which adapters fill that slot (one flag per adapter, then False for the zero row)."""

    def __init__(self, routing: Routing, names: tuple[str, ...]) -> None:
        super().__init__()
        self.routing = routing
        self.has: dict[str, list[bool]] = {}
        for name in names:
            self.register_buffer(name, None, persistent=False)

    def set_bank(self, name: str, bank: Tensor | None, has: list[bool]) -> None:
        setattr(self, name, bank)
        self.has[name] = has

    def _pick(self, name: str, per_row: bool) -> Tensor | None:
        bank, index = getattr(self, name), self.routing.index
        if bank is None:
            return None
        if index is None:
            index = NO_ADAPTER
        if isinstance(index, int):
            return bank[index] if self.has[name][index] else None
        if not per_row:
            raise RuntimeError(f"{type(self).__name__}.{name} is one tensor per call; route a prefill by one adapter")
        return bank[index]  # advanced indexing: -1 is the zero row


class RoutedStateOffset(_Routed):
    """The ``state_offset`` slot: h' (A+1, *state_shape) and y' (A+1, E) banks, either may be None."""

    def __init__(self, routing: Routing) -> None:
        super().__init__(routing, ("h_bank", "y_bank"))

    def h_prime(self) -> Tensor | None:
        return self._pick("h_bank", per_row=True)

    def y_prime(self) -> Tensor | None:
        return self._pick("y_bank", per_row=True)


class RoutedInitialState(_Routed):
    """The ``init_state`` slot: H0 (A+1, *state_shape) and the conv window (A+1, conv_channels, K-1) banks."""

    def __init__(self, routing: Routing) -> None:
        super().__init__(routing, ("h0_bank", "conv_bank"))

    @property
    def h0(self) -> Tensor:
        """Read unconditionally by the mixers: an adapter without an initial state starts from its zero row."""
        index = self.routing.index
        if index is not None and not isinstance(index, int):
            raise RuntimeError("the initial state is one tensor per call; route a prefill by one adapter")
        return self.h0_bank[NO_ADAPTER if index is None else index]

    @property
    def conv(self) -> Tensor | None:
        return self._pick("conv_bank", per_row=False)

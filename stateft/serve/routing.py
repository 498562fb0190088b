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

LoRA adapters are routed the same way, by modules in the mixers' linear slots (`stateft.serve.routed_lora`).

Prompt and prefix tuning change only the start of a sequence: ``model.prompt`` (virtual tokens before the prompt) and
``mixer.prefix`` (vectors before each layer's input), read in the prefill when set and skipped when None. These
``starts`` are the adapters' own modules, put in their slots for a call routed to one adapter (a prefill group) and
taken out after it; with any other index the slots stay empty (decoding steps never read them).

The banks are built lazily: loading an adapter sets ``Routing.pending`` (the bank's stacking), and the next ``use``
runs it before the call reads any bank, so N adapters loaded one after another are stacked once, and a bank is never
read without the adapters loaded since. Outside ``use`` (index None) the routed modules answer with the zero row or
nothing: the base model, whatever the banks hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn

NO_ADAPTER = -1  # the bank's last row: zeros

Index = int | Tensor | None


class Routing:
    """The adapter index of the rows the model runs next: shared by every routed module of one model."""

    def __init__(self) -> None:
        self.index: Index = None
        self._present: frozenset[int] | None = None
        # (owner, slot name, {adapter index: module}): start-of-sequence modules set for a one-adapter call
        self.starts: list[tuple[nn.Module, str, dict[int, nn.Module]]] = []
        # what must run before a routed call reads the banks (the bank's stacking of adapters loaded since); None: none
        self.pending: Callable[[], None] | None = None

    def run_pending(self) -> None:
        """Run the ``pending`` work now, if any; it stays pending if it fails."""
        if self.pending is not None:
            self.pending()
            self.pending = None

    @contextmanager
    def use(self, index: Index) -> Iterator[None]:
        """Run the block with ``index`` set, and for an int index that adapter's start modules in their slots (all
        put back afterwards, also on an error); ``pending`` work first (``run_pending``)."""
        self.run_pending()
        previous = self.index, self._present
        self.index, self._present = index, None
        filled = []
        try:
            if isinstance(index, int):
                for owner, slot, modules in self.starts:
                    if index in modules:
                        filled.append((owner, slot, getattr(owner, slot)))
                        setattr(owner, slot, modules[index])
            yield
        finally:
            for owner, slot, module in reversed(filled):
                setattr(owner, slot, module)
            self.index, self._present = previous

    @property
    def present(self) -> frozenset[int]:
        """The adapter indices the rows use (NO_ADAPTER for the base model), read once per ``use`` (a Tensor index is
        copied to the CPU on the first read): a routed linear skips the update no row of the call has."""
        if self._present is None:
            index = NO_ADAPTER if self.index is None else self.index
            self._present = frozenset(index.tolist() if isinstance(index, Tensor) else [index])
        return self._present


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

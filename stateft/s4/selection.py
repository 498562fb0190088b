"""SDT's dimension selection on S4D after the warm-up, by magnitude (the SDT code's default ``ssm_warmup_mode``
``magnitude`` with ``our_mode`` ``hard``, ``run_s4.py``).

Per layer, with the frozen model's S4D and the warmed copy's (``stateft.s4.warmup``), on (H, M) tables:
- contribution (warmed): |Cbar[h, n] Abar[h, n]^(L/2)|, Cbar = C Bbar: how much mode n of channel h still adds to
  the kernel half-way through a length-L sequence;
- change: |A_warm[h, n] - A_frozen[h, n]|, the complex modulus of how far the warm-up moved A.
Selection: the ``select_channels`` channels with the largest ||contribution[h, :]|| are kept (C is zeroed on the
others), of those the ``update_channels`` with the largest ||change[h, :]|| are updated; in each kept channel the
``select_states`` modes with the largest contribution are kept, and in each updated channel, of its kept modes, the
``update_states`` with the largest change are updated. Indices are stored ascending.

The SDT code's other modes (loss, grad, hybrid) and a random baseline: ``stateft.s4.choose``.
Where this differs from the SDT code: its contribution score builds A as the real sum -exp(log_A_real) + A_imag (an
``1j`` missing) and its change score subtracts +exp(log_A_real) of the frozen model from -exp(log_A_real) of the
warmed one; both use the complex A here, as the method describes. It zeroes the non-kept modes only in updated
channels; here in every kept channel (the same whenever select and update counts are equal, as in its examples).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from stateft.errors import UserError
from stateft.s4.kernel import complex_A
from stateft.s4.s4d import S4D


@dataclass
class LayerSelection:
    """One layer's choice; ``keep_states[i]`` belongs to ``keep_channels[i]``, ``update_states[j]`` to
    ``update_channels[j]``."""

    keep_channels: list[int]
    keep_states: list[list[int]]
    update_channels: list[int]
    update_states: list[list[int]]

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def contribution(ssm: S4D, seq_len: int) -> Tensor:
    """|Cbar Abar^(L//2)| (H, M)."""
    dtA, Bbar, C = ssm.discretized()
    return (C * Bbar * torch.exp(dtA * (seq_len // 2))).abs()


@torch.no_grad()
def change(warmed: S4D, frozen: S4D) -> Tensor:
    """|A_warm - A_frozen| (H, M)."""
    return (complex_A(warmed.log_A_real, warmed.A_imag) - complex_A(frozen.log_A_real, frozen.A_imag)).abs()


def _top(scores: Tensor, among: list[int], k: int) -> list[int]:
    """The k indices of ``among`` with the largest scores, ascending."""
    idx = torch.tensor(among, dtype=torch.long)
    best = scores[idx].topk(k).indices
    return sorted(idx[best].tolist())


def counts_of(cfg) -> dict[str, int]:
    """The four counts of an s4_sdt / s4_sdlora config."""
    return {k: getattr(cfg, k) for k in ("select_channels", "update_channels", "select_states", "update_states")}


def check_counts(H: int, M: int, counts: dict[str, int]) -> None:
    """select_* <= the layer's size, 1 <= update_* <= select_* (one line naming the bad count)."""
    for kind, size in (("channels", H), ("states", M)):
        select, update = counts[f"select_{kind}"], counts[f"update_{kind}"]
        if not 1 <= select <= size:
            unit = "channels (d_model)" if kind == "channels" else "complex modes (d_state / 2)"
            raise UserError(f"select_{kind} must be in [1, {size}] (the layer's {unit}), got {select}")
        if not 1 <= update <= select:
            raise UserError(f"update_{kind} must be in [1, select_{kind}={select}], got {update}")


def select_layer(frozen: S4D, warmed: S4D, seq_len: int, counts: dict[str, int]) -> LayerSelection:
    """The selection of one layer (``counts``: select_/update_ channels/states)."""
    check_counts(frozen.d_model, frozen.n_modes, counts)
    contrib = contribution(warmed, seq_len).float().cpu()
    moved = change(warmed, frozen).float().cpu()
    keep_channels = _top(contrib.norm(dim=1), list(range(frozen.d_model)), counts["select_channels"])
    update_channels = _top(moved.norm(dim=1), keep_channels, counts["update_channels"])
    all_modes = list(range(frozen.n_modes))
    keep_states = [_top(contrib[h], all_modes, counts["select_states"]) for h in keep_channels]
    kept = dict(zip(keep_channels, keep_states))
    update_states = [_top(moved[h], kept[h], counts["update_states"]) for h in update_channels]
    return LayerSelection(keep_channels, keep_states, update_channels, update_states)


def select_dimensions(frozen: list[S4D], warmed: list[S4D], seq_len: int, counts: dict[str, int]) -> list:
    """Every layer's ``LayerSelection`` (the S4D layers of the frozen model and of its warmed copy, in order)."""
    return [select_layer(f, w, seq_len, counts) for f, w in zip(frozen, warmed)]

"""SDT's magnitude selection: kept dimensions by contribution, updated ones by how far the warm-up moved A."""

from __future__ import annotations

import copy

import pytest
import torch

from stateft.errors import UserError
from stateft.s4.model import DeepS4, theory_config
from stateft.s4.s4d import S4D
from stateft.s4.selection import change, contribution, select_layer
from stateft.s4.warmup import warm_up

COUNTS = {"select_channels": 3, "update_channels": 2, "select_states": 2, "update_states": 1}


def constructed_pair() -> tuple[S4D, S4D]:
    """Warmed C is large on channels 0, 2, 5 at modes 1 and 3 only; A moved at (0, 1), (5, 3), (2, 1) (less), and
    at entries the kept set excludes: (4, 0) (an unkept channel) and (0, 0) (an unkept mode)."""
    torch.manual_seed(0)
    frozen = S4D(6, d_state=8)
    warmed = copy.deepcopy(frozen)
    with torch.no_grad():
        C = torch.full((6, 4), 1e-4, dtype=torch.cfloat)
        C[[0, 0, 2, 2, 5, 5], [1, 3, 1, 3, 1, 3]] = 1.0
        warmed.C.copy_(torch.view_as_real(C))
        for (h, n), shift in {(0, 1): 1.0, (5, 3): 1.0, (2, 1): 0.5, (4, 0): 10.0, (0, 0): 0.3}.items():
            warmed.A_imag[h, n] += shift
    return frozen, warmed


def test_selection_of_a_constructed_layer():
    frozen, warmed = constructed_pair()
    sel = select_layer(frozen, warmed, seq_len=4, counts=COUNTS)
    assert sel.keep_channels == [0, 2, 5]
    assert sel.keep_states == [[1, 3], [1, 3], [1, 3]]
    assert sel.update_channels == [0, 5]
    assert sel.update_states == [[1], [3]]


def test_scores():
    frozen, warmed = constructed_pair()
    moved = change(warmed, frozen)
    assert moved.shape == (6, 4)
    torch.testing.assert_close(moved[4, 0], torch.tensor(10.0))
    assert moved[1].abs().sum() == 0
    dtA, Bbar, C = warmed.discretized()
    expected = (C[2, 3] * Bbar[2, 3] * torch.exp(dtA[2, 3]) ** 5).abs()
    torch.testing.assert_close(contribution(warmed, seq_len=10)[2, 3], expected)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({**COUNTS, "select_channels": 7}, r"select_channels must be in \[1, 6\]"),
        ({**COUNTS, "update_states": 3}, r"update_states must be in \[1, select_states=2\]"),
        ({**COUNTS, "select_states": 5}, r"select_states must be in \[1, 4\] \(the layer's complex modes"),
    ],
)
def test_bad_counts(counts, message):
    frozen, warmed = constructed_pair()
    with pytest.raises(UserError, match=message):
        select_layer(frozen, warmed, 4, counts)


def test_warm_up_moves_a_copy_only():
    torch.manual_seed(1)
    model = DeepS4(theory_config(4, 2, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 8, 4)

    def loss_fn(m):
        return m(x).pow(2).mean()

    warmed = warm_up(model, loss_fn, steps=3, lr=0.01, params="ssm")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    moved = {k for k, v in warmed.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {f"layers.{i}.ssm.{p}" for i in range(2) for p in ("log_dt", "log_A_real", "A_imag", "C", "D")}
    with pytest.raises(UserError, match="unknown warm-up params 'linear'"):
        warm_up(model, loss_fn, steps=1, lr=0.01, params="linear")

"""Frozen + delta parametrisations: zero at init, the entry delta equals its dense twin, gradients reach the
deltas only."""

from __future__ import annotations

import torch
from torch import nn

from stateft.methods.deltas import ColumnDelta, DenseDelta, EntryDelta, LowRankDelta, add_delta, dense_delta


def test_entry_delta_equals_dense_twin_with_trailing_dims():
    rows, cols = torch.tensor([0, 2, 2, 3]), torch.tensor([1, 0, 3, 3])
    delta = EntryDelta(rows, cols, (2,))
    torch.manual_seed(0)
    with torch.no_grad():
        delta.values.copy_(torch.randn(4, 2))
    weight = torch.randn(4, 5, 2)
    torch.testing.assert_close(delta(weight), weight + dense_delta((4, 5, 2), rows, cols, delta.values.detach()))


def test_deltas_start_at_zero_and_only_they_train():
    torch.manual_seed(1)
    linear = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    before = linear(x).detach()
    add_delta(linear, "weight", ColumnDelta(3, torch.tensor([1, 3])))
    torch.testing.assert_close(linear(x), before)
    assert not linear.parametrizations.weight.original.requires_grad
    linear(x).pow(2).sum().backward()
    grad = linear.parametrizations.weight[0].values.grad
    assert grad.shape == (3, 2)
    assert grad.abs().sum() > 0
    assert linear.parametrizations.weight.original.grad is None
    with torch.no_grad():
        linear.parametrizations.weight[0].values.fill_(1.0)
    moved = (linear.weight - linear.parametrizations.weight.original).abs().sum(0)
    assert moved.nonzero().flatten().tolist() == [1, 3]


def test_low_rank_delta_is_b_times_a():
    torch.manual_seed(2)
    linear = nn.Linear(6, 4)
    original = linear.weight.detach().clone()
    add_delta(linear, "weight", LowRankDelta(4, 6, 2, original.device))
    torch.testing.assert_close(linear.weight, original)
    lora = linear.parametrizations.weight[0]
    with torch.no_grad():
        lora.lora_B.copy_(torch.randn(4, 2))
    torch.testing.assert_close(linear.weight, original + lora.lora_B @ lora.lora_A)
    assert torch.linalg.matrix_rank(linear.weight.detach() - original) == 2


def test_dense_delta_follows_its_weight_and_entry_values_are_fp32():
    """DenseDelta's values take the weight's shape and dtype (a float64 deep S4 keeps float64 deltas; the Mamba SDT
    warm-up passes an fp32 A_log); EntryDelta's are fp32 adapter parameters whatever the weight's dtype."""
    weight = torch.randn(3, 4, dtype=torch.float64)
    dense = DenseDelta(weight)
    assert dense.values.dtype == torch.float64
    assert dense.values.shape == weight.shape
    assert torch.equal(dense(weight), weight)
    with torch.no_grad():
        dense.values.fill_(0.5)
    torch.testing.assert_close(dense(weight), weight + 0.5)
    entries = EntryDelta(torch.tensor([0, 2]), torch.tensor([1, 1]))
    assert entries.values.dtype == torch.float32
    assert torch.equal(entries(weight), weight)

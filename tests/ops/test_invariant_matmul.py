"""The batch-invariant product (`stateft.ops.invariant_matmul`): equal to its reference twin, and every row the same
bits whatever the number of rows it is multiplied with; the mode routes a model's products to it."""

from __future__ import annotations

import pytest
import torch

from stateft.ops.invariance import batch_invariant, batch_invariant_active, products_row_by_row
from stateft.ops.invariant_matmul import invariant_matmul, invariant_matmul_ref

DTYPES = [torch.float32, torch.bfloat16]
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2}}


def _rand(*shape, dtype, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_equals_reference_mm_addmm_bmm(dtype):
    a, w, bias = _rand(37, 70, dtype=dtype, seed=0), _rand(45, 70, dtype=dtype, seed=1), _rand(45, dtype=dtype, seed=2)
    # a weight read transposed (as F.linear does), a bias broadcast over the rows
    torch.testing.assert_close(invariant_matmul(a, w.t()), invariant_matmul_ref(a, w.t()), **TOL[dtype])
    got = invariant_matmul(a, w.t(), bias=bias, alpha=0.5, beta=2.0)
    torch.testing.assert_close(got, invariant_matmul_ref(a, w.t(), bias=bias, alpha=0.5, beta=2.0), **TOL[dtype])
    a3, b3 = _rand(3, 9, 33, dtype=dtype, seed=3), _rand(3, 33, 20, dtype=dtype, seed=4)
    torch.testing.assert_close(invariant_matmul(a3, b3), invariant_matmul_ref(a3, b3), **TOL[dtype])
    assert invariant_matmul(a, w.t()).dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_is_the_same_bits_alone_and_in_any_batch(dtype):
    a, w = _rand(80, 200, dtype=dtype, seed=5), _rand(150, 200, dtype=dtype, seed=6)
    full = invariant_matmul(a, w.t())
    for rows in ([3], [0, 1, 2, 3, 4], list(range(17, 80)), [79, 3, 40]):
        assert torch.equal(invariant_matmul(a[rows], w.t()), full[rows]), rows


def test_mode_routes_linear_layers_and_nests():
    layer = torch.nn.Linear(24, 10)
    x = _rand(5, 24, dtype=torch.float32, seed=7)
    assert not batch_invariant_active()
    with batch_invariant():
        assert batch_invariant_active()
        got = layer(x)
        rows = [layer(x[i : i + 1]) for i in range(5)]
    assert not batch_invariant_active()
    torch.testing.assert_close(got, layer(x), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(r[0], got[i]) for i, r in enumerate(rows))
    with batch_invariant(False):
        assert not batch_invariant_active()


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_by_row_products_without_triton(dtype, monkeypatch):
    """Where Triton cannot run (a CPU without the interpreter) the mode multiplies row by row: equal to the
    reference, every row the same bits alone and in a batch, and no Triton kernel is asked for."""
    import stateft.ops.invariance as invariance

    a, w, bias = _rand(40, 70, dtype=dtype, seed=8), _rand(45, 70, dtype=dtype, seed=9), _rand(45, dtype=dtype, seed=10)
    got = products_row_by_row(a, w.t(), bias=bias, alpha=0.5, beta=2.0)
    torch.testing.assert_close(got, invariant_matmul_ref(a, w.t(), bias=bias, alpha=0.5, beta=2.0), **TOL[dtype])
    a3, b3 = _rand(3, 9, 33, dtype=dtype, seed=11), _rand(3, 33, 20, dtype=dtype, seed=12)
    torch.testing.assert_close(products_row_by_row(a3, b3), invariant_matmul_ref(a3, b3), **TOL[dtype])
    for rows in ([3], [0, 1, 2], list(range(11, 40))):
        assert torch.equal(
            products_row_by_row(a[rows], w.t(), bias=bias), products_row_by_row(a, w.t(), bias=bias)[rows]
        )
    monkeypatch.setattr(invariance, "interpreting", lambda: False)
    monkeypatch.setattr("stateft.ops.invariant_matmul.invariant_matmul", None)  # would fail if called
    layer = torch.nn.Linear(70, 45).to(dtype)
    with batch_invariant():
        out = layer(a)
    assert torch.equal(out, products_row_by_row(a, layer.weight.t(), bias=layer.bias))

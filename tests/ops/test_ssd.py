"""The chunked SSD reference scan (Mamba-2) against a naive sequential recurrence, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stateft.ops import ssd_scan, ssd_step


def naive_ssd(x, dt, A, B, C, D, dt_bias, initial_state=None):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T; y_t = h_t C_t + D x_t, one position at a time (fp64-free, fp32)."""
    b, length, nheads, headdim = x.shape
    rep = nheads // B.shape[2]
    B, C = B.repeat_interleave(rep, dim=2), C.repeat_interleave(rep, dim=2)  # (b l h n)
    dt = F.softplus(dt + dt_bias)  # (b l h)
    h = x.new_zeros(b, nheads, headdim, B.shape[-1]) if initial_state is None else initial_state
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, t] * A)[:, :, None, None] * h + torch.einsum("bh,bhp,bhn->bhpn", dt[:, t], x[:, t], B[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C[:, t]) + D[:, None] * x[:, t])
    return torch.stack(ys, dim=1), h


def make_inputs(b=2, length=21, nheads=4, headdim=8, ngroups=2, n=6, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    t = {
        "x": torch.randn(b, length, nheads, headdim, generator=g),
        "dt": torch.randn(b, length, nheads, generator=g),
        "A": -torch.rand(nheads, generator=g) * 2 - 0.2,
        "B": torch.randn(b, length, ngroups, n, generator=g),
        "C": torch.randn(b, length, ngroups, n, generator=g),
        "D": torch.randn(nheads, generator=g),
        "dt_bias": torch.randn(nheads, generator=g) * 0.5,
        "h0": torch.randn(b, nheads, headdim, n, generator=g),
    }
    return {k: v.requires_grad_(requires_grad) for k, v in t.items()}


def _args(t):
    """The scan's tensor arguments by name (all but the initial state)."""
    return {k: t[k] for k in ("x", "dt", "A", "B", "C", "D", "dt_bias")}


def assert_close(a, b, tol, what):
    err = (a - b).abs()
    assert err.max() <= tol * (1 + b.abs().max()), f"{what}: max diff {err.max():.3g}, mean diff {err.mean():.3g}"


@pytest.mark.parametrize("length", [1, 7, 21, 32])
@pytest.mark.parametrize("with_h0", [False, True])
def test_chunked_matches_recurrence(length, with_h0):
    t = make_inputs(length=length)
    h0 = t["h0"] if with_h0 else None
    y_ref, h_ref = naive_ssd(t["x"], t["dt"], t["A"], t["B"], t["C"], t["D"], t["dt_bias"], h0)
    for chunk in (4, 8, 64):  # 21 and 7 are multiples of none of them; 32 of all but 64
        y, h = ssd_scan(**_args(t), chunk_size=chunk, initial_state=h0, return_final_state=True, backend="ref")
        assert_close(y, y_ref, 1e-5, f"y (chunk {chunk})")
        assert_close(h, h_ref, 1e-5, f"final state (chunk {chunk})")


def test_step_matches_recurrence():
    t = make_inputs(length=9)
    y_ref, h_ref = naive_ssd(t["x"], t["dt"], t["A"], t["B"], t["C"], t["D"], t["dt_bias"], t["h0"])
    state, ys = t["h0"], []
    for i in range(9):
        step = {k: v[:, i] if k in ("x", "dt", "B", "C") else v for k, v in _args(t).items()}
        y, state = ssd_step(state=state, **step, backend="ref")
        ys.append(y)
    assert_close(torch.stack(ys, dim=1), y_ref, 1e-5, "y")
    assert_close(state, h_ref, 1e-5, "state")


def test_gradients_match_recurrence():
    names = ("x", "dt", "A", "B", "C", "D", "dt_bias", "h0")
    t = make_inputs(length=13, requires_grad=True)
    g = torch.Generator().manual_seed(5)
    dy, dh = torch.randn(2, 13, 4, 8, generator=g), torch.randn(2, 4, 8, 6, generator=g)

    y, h = naive_ssd(t["x"], t["dt"], t["A"], t["B"], t["C"], t["D"], t["dt_bias"], t["h0"])
    ref = torch.autograd.grad((y * dy).sum() + (h * dh).sum(), [t[k] for k in names])
    y, h = ssd_scan(**_args(t), chunk_size=4, initial_state=t["h0"], return_final_state=True, backend="ref")
    ours = torch.autograd.grad((y * dy).sum() + (h * dh).sum(), [t[k] for k in names])
    for name, a, b in zip(names, ours, ref):
        assert_close(a, b, 1e-4, f"d{name}")


def test_dt_limit_clamps():
    t = make_inputs(length=5)
    free = ssd_scan(**_args(t), chunk_size=4, backend="ref")
    clamped = ssd_scan(**_args(t), chunk_size=4, dt_limit=(0.0, 1e-3), backend="ref")
    fixed = {**_args(t), "dt": torch.full_like(t["dt"], 1e-3), "dt_bias": None}
    expected = ssd_scan(**fixed, chunk_size=4, dt_softplus=False, backend="ref")
    assert_close(clamped, expected, 1e-6, "clamped")
    assert (free - clamped).abs().max() > 1e-2

"""The State-offset paper's equivalences (its Appendix B), checked numerically, and Initial State Tuning's gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stateft.methods import apply_method
from stateft.models.loading import build_model
from stateft.ops import selective_scan
from tests.conftest import TINY


def _random_scan_inputs(b=2, d=6, n=4, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, length, generator=g)
    delta = torch.randn(b, d, length, generator=g) * 0.5
    A = -torch.rand(d, n, generator=g) - 0.2
    B = torch.randn(b, n, length, generator=g)
    C = torch.randn(b, n, length, generator=g)
    D = torch.randn(d, generator=g)
    z = torch.randn(b, d, length, generator=g)
    return u, delta, A, B, C, D, z


def test_iterative_suffix_tuning_equals_state_offset_h():
    """A virtual suffix token s moved to the end at every step: the state read out at step t is
    h_t + delta_s B_s u_s (its contribution, with the suffix's own decay exp(delta_s A) = I as in the appendix's
    derivation), and it never enters the recurrence. That term depends only on s: it is an h' (d, n)."""
    u, delta, A, B, C, D, z = _random_scan_inputs()
    g = torch.Generator().manual_seed(7)
    u_s, delta_s, B_s = (
        torch.randn(6, generator=g),
        F.softplus(torch.randn(6, generator=g)),
        torch.randn(4, generator=g),
    )
    # iterative suffix, written out step by step
    b, d, length = u.shape
    h = torch.zeros(b, d, 4)
    dt = F.softplus(delta)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        h_with_suffix = h + (delta_s * u_s)[None, :, None] * B_s[None, None, :]
        y = torch.einsum("bdn,bn->bd", h_with_suffix, C[:, :, t]) + D * u[:, :, t]
        ys.append(y * F.silu(z[:, :, t]))
    suffix_y = torch.stack(ys, dim=-1)
    h_prime = (delta_s * u_s)[:, None] * B_s[None, :]  # (d n): depends on the suffix only
    offset_y = selective_scan(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, h_offset=h_prime, backend="ref")
    torch.testing.assert_close(offset_y, suffix_y, rtol=1e-5, atol=1e-5)


def _start_states(model):
    """Each layer's conv window and SSM state after the start-of-sequence slots ran on no real tokens."""
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.zeros(1, 0, dtype=torch.long), cache)
    return [(layer.conv[0].clone(), layer.ssm[0].clone()) for layer in cache.layers]


def _equivalent_init_state(name: str, extra: dict) -> None:
    tuned = build_model(TINY, seed=0).eval()
    names = apply_method(name, tuned, {"name": name, **extra})
    with torch.no_grad():
        for n, p in tuned.named_parameters():
            if n in names:
                p.add_(torch.randn_like(p))
    starts = _start_states(tuned)
    twin = build_model(TINY, seed=0).eval()
    apply_method("init_state", twin, {"name": "init_state", "conv_state": True})
    with torch.no_grad():
        for mixer, (conv, ssm) in zip(twin.mixers(), starts):
            mixer.init_state.conv.copy_(conv)
            mixer.init_state.h0.copy_(ssm)
    ids = torch.randint(1, 64, (3, 11), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(twin(ids), tuned(ids), rtol=1e-5, atol=1e-5)


def test_prefix_is_an_initial_state():
    """Whatever a (per-layer affix) prefix does, an init_state H0 (+ conv window) does the same on the real tokens."""
    _equivalent_init_state("prefix", {"num_virtual_tokens": 3})


def test_prompt_is_an_initial_state():
    _equivalent_init_state("prompt", {"num_virtual_tokens": 4})


def test_init_state_gradient_matches_per_state_expansion():
    """dL/dH0 from the scan's initial-state input equals the reference code's formulation, where H0's contribution
    is built for every state dimension (all states materialised):
    y_t += sum_n C_t[n] prod_{s<=t} exp(delta_s A[:, n]) H0[:, n]."""
    u, delta, A, B, C, D, z = _random_scan_inputs(seed=3)
    H0 = torch.randn(6, 4, requires_grad=True)
    weight = torch.randn(2, 6, 9)
    y = selective_scan(
        u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, initial_state=H0[None].expand(2, -1, -1), backend="ref"
    )
    (grad_scan,) = torch.autograd.grad((y * weight).sum(), H0)

    H0_ref = H0.detach().clone().requires_grad_(True)
    y_zero = selective_scan(u=u, delta=delta, A=A, B=B, C=C, D=D, backend="ref")  # without gating, without H0
    dt = F.softplus(delta)
    decay = torch.exp(torch.cumsum(dt[:, :, None, :] * A[None, :, :, None], dim=-1))  # (b d n l): every state
    contribution = torch.einsum("bdnl,bnl,dn->bdl", decay, C, H0_ref)
    y_ref = (y_zero + contribution) * F.silu(z)
    (grad_ref,) = torch.autograd.grad((y_ref * weight).sum(), H0_ref)
    torch.testing.assert_close(y, y_ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_scan, grad_ref, rtol=1e-5, atol=1e-5)
    assert grad_scan.abs().sum() > 0

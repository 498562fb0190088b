"""Additional-scan: Mamba-2's extra states against a sequential recurrence over N+n states, the cache, the Triton path
at N+n states (interpreter on the CPU; 128 + 32 = 160 on the GPU), and what each Mamba-1 ``A_init`` starts from."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stateft.errors import UserError
from stateft.loss import lm_loss
from stateft.methods import apply_method
from stateft.methods.configs import validate_method_cfg
from stateft.models.loading import build_model
from stateft.ops import ssd_scan
from stateft.ops.backend import Backend
from stateft.ops.settings import DEFAULT_SETTINGS
from tests.conftest import TINY, TINY2

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # Triton runs in its interpreter on the CPU
TINY_N16 = TINY.__class__(**{**TINY.to_dict(), "d_state": 16})  # the released models' N: where sst's A is -e^16


def adapted(config, n=None, seed=0, **options):
    model = build_model(config, seed=seed)
    cfg = {"name": "additional_scan", **({} if n is None else {"n": n}), **options}
    names = apply_method("additional_scan", model, cfg)
    return model, names


def perturb(model, names, scale=0.3, seed=7):
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in names:
            params[name].add_(scale * torch.randn(params[name].shape, generator=g))


def naive_layer(mixer, hidden):
    """The Mamba-2 layer with its extra states written out step by step: in_proj, causal depthwise conv, SiLU; per
    group B' = [B, W_B x], C' = [C, W_C x]; per head h_t = exp(dt_t A) h_{t-1} + dt_t x_t B'_t^T (N+n states),
    y_t = h_t C'_t + D x_t; gated norm, out_proj. Returns the output and the last state (b H P N+n)."""
    E, H, P, G, K = mixer.d_inner, mixer.nheads, mixer.headdim, mixer.ngroups, mixer.d_conv
    GN = G * mixer.d_state
    z, xbc, dt = mixer.in_proj(hidden).split([E, E + 2 * GN, H], dim=-1)
    conv = F.conv1d(F.pad(xbc.transpose(1, 2), (K - 1, 0)), mixer.conv1d.weight, mixer.conv1d.bias, groups=E + 2 * GN)
    x, B, C = F.silu(conv).transpose(1, 2).split([E, GN, GN], dim=-1)
    extra = mixer.extra_states
    B = torch.cat([B.unflatten(-1, (G, -1)), (x @ extra.W_B.T).unflatten(-1, (G, -1))], dim=-1)  # (b l G N+n)
    C = torch.cat([C.unflatten(-1, (G, -1)), (x @ extra.W_C.T).unflatten(-1, (G, -1))], dim=-1)
    B, C = B.repeat_interleave(H // G, dim=2), C.repeat_interleave(H // G, dim=2)  # (b l H N+n)
    x = x.unflatten(-1, (H, P))
    dt = F.softplus(dt + mixer.dt_bias)
    A = -torch.exp(mixer.A_log)
    h = x.new_zeros(x.shape[0], H, P, B.shape[-1])
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t] * A)[:, :, None, None] * h
        h = h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C[:, t]) + mixer.D[:, None] * x[:, t])
    y = torch.stack(ys, dim=1).flatten(-2)
    return mixer.out_proj(mixer.norm(y, z)), h


def test_mamba2_layer_is_ssd_over_n_plus_extra_states():
    model, names = adapted(TINY2, n=3)  # 2 groups of 3 extra states, 4 heads: B'/C' rows shared per group
    perturb(model, names)
    mixer = next(model.mixers())
    assert mixer.extra_states.W_B.shape == (2 * 3, mixer.d_inner)
    hidden = torch.randn(2, 9, TINY2.d_model, generator=torch.Generator().manual_seed(0))
    cache = model.new_cache()
    with torch.no_grad():
        out = mixer(hidden, cache.layers[0])
        ref, h = naive_layer(mixer, hidden)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert cache.layers[0].ssm.shape == (2, mixer.nheads, mixer.headdim, TINY2.d_state + 3)
    torch.testing.assert_close(cache.layers[0].ssm, h, rtol=1e-4, atol=1e-5)


def test_mamba2_trains_only_the_new_rows_and_starts_as_the_base():
    base = build_model(TINY2, seed=0)
    model, names = adapted(TINY2)
    assert names == [f"backbone.layers.{i}.mixer.extra_states.{w}" for i in range(2) for w in ("W_B", "W_C")]
    assert next(model.mixers()).extra_states.W_B.shape == (TINY2.ngroups * 32, 32)  # n: null -> 32 on Mamba-2
    ids = torch.randint(1, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # W_C = 0: the new states are not read out (a longer state sum only changes the rounding)
        torch.testing.assert_close(model(ids), base(ids), rtol=0, atol=1e-6)
    lm_loss(model, ids, ids).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None for n in grads if n not in names)
    assert all(grads[n].abs().sum() > 0 for n in names if n.endswith("W_C"))
    assert all(grads[n].abs().sum() == 0 for n in names if n.endswith("W_B"))  # reaches W_B only through W_C
    model.zero_grad()
    perturb(model, [n for n in names if n.endswith("W_C")])
    lm_loss(model, ids, ids).backward()
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in names)


def test_mamba2_empty_prefill_leaves_a_zero_state_of_n_plus_extra_states():
    model, names = adapted(TINY2, n=5)
    perturb(model, names)
    model.eval()
    ids = torch.randint(1, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cache = model.new_cache()
        model(ids[:, :0], cache)
        assert cache.layers[0].ssm.shape == (2, 4, 8, TINY2.d_state + 5)
        assert not cache.layers[0].ssm.any()
        stepped = torch.stack([model.step(ids[:, t], cache) for t in range(6)], dim=1)
        torch.testing.assert_close(stepped, model(ids), rtol=1e-4, atol=1e-4)


# several chunks and channel blocks under the interpreter, exact fp32 dots
SMALL_SSD = DEFAULT_SETTINGS.with_(ssd={"BLOCK_Q": 16, "BLOCK_P": 16, "PRECISION": "ieee"})


def _ssd_inputs(b, length, nheads, headdim, n, device=DEVICE, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    t = {
        "x": torch.randn(b, length, nheads, headdim, generator=g),
        "dt": torch.randn(b, length, nheads, generator=g),
        "A": -torch.rand(nheads, generator=g) * 2 - 0.2,
        "B": torch.randn(b, length, 1, n, generator=g) / math.sqrt(n),
        "C": torch.randn(b, length, 1, n, generator=g),
        "D": torch.randn(nheads, generator=g),
        "dt_bias": torch.randn(nheads, generator=g) * 0.5,
    }
    low = ("x", "dt", "B", "C")  # in the compute dtype; A, D, dt_bias stay fp32 as in the mixer
    return {k: v.to(device, dtype if k in low else torch.float32).requires_grad_() for k, v in t.items()}


def _ssd_run(t, impl, chunk_size=64, settings=SMALL_SSD):
    return ssd_scan(x=t["x"], dt=t["dt"], A=t["A"], B=t["B"], C=t["C"], chunk_size=chunk_size, D=t["D"],
                    dt_bias=t["dt_bias"], return_final_state=True,
                    backend=Backend(impl=impl, device=t["x"].device, settings=settings))  # fmt: skip


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _compare_ssd(t, tol, settings=SMALL_SSD):
    """Triton against the reference scan: output, final state and every input's gradient."""
    out = {}
    for impl in ("ref", "triton"):
        y, h = _ssd_run(t, impl, settings=settings)
        grads = torch.autograd.grad(y.float().square().sum() + h.square().sum(), list(t.values()))
        out[impl] = (y, h, grads)
    (y_ref, h_ref, g_ref), (y, h, grads) = out["ref"], out["triton"]
    assert h.shape[-1] == t["B"].shape[-1]
    assert _rel(y, y_ref) < tol, f"y: {_rel(y, y_ref):.3g}"
    assert _rel(h, h_ref) < tol, f"final state: {_rel(h, h_ref):.3g}"
    for name, a, b in zip(t, grads, g_ref):
        assert _rel(a, b) < tol, f"d{name}: {_rel(a, b):.3g}"


def test_ssd_scans_take_160_states():
    """128 + 32 states (not a power of two: the Triton tiles are masked past 160), ref against a plain recurrence and
    Triton against ref."""
    pytest.importorskip("triton")
    t = _ssd_inputs(1, 20, 2, 16, 160)
    y, h = _ssd_run(t, "ref", chunk_size=8)
    dt = F.softplus(t["dt"] + t["dt_bias"])
    state = torch.zeros(1, 2, 16, 160, device=DEVICE)
    for i in range(20):
        state = torch.exp(dt[:, i] * t["A"])[:, :, None, None] * state
        state = state + (dt[:, i, :, None] * t["x"][:, i])[..., None] * t["B"][:, i, :, None, :]
    torch.testing.assert_close(h, state, rtol=1e-5, atol=1e-5)
    last = torch.einsum("bhpn,bn->bhp", state, t["C"][:, -1, 0]) + t["D"][:, None] * t["x"][:, -1]
    torch.testing.assert_close(y[:, -1], last, rtol=1e-5, atol=1e-5)
    _compare_ssd(t, 1e-5)


def test_mamba2_with_extra_states_on_triton_matches_reference():
    pytest.importorskip("triton")
    ids = torch.randint(1, 64, (2, 11), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    out = {}
    for impl in ("ref", "triton"):
        model, names = adapted(TINY2, n=6)  # 8 + 6 = 14 states
        perturb(model, names)
        model.to(DEVICE).set_backend(impl=impl, settings=SMALL_SSD)
        logits = model(ids)
        logits.float().square().mean().backward()
        out[impl] = (logits.detach(), {n: p.grad for n, p in model.named_parameters() if n in names})
    torch.testing.assert_close(out["triton"][0], out["ref"][0], rtol=1e-4, atol=1e-5)
    for name, grad in out["ref"][1].items():
        torch.testing.assert_close(out["triton"][1][name], grad, rtol=1e-3, atol=1e-6, msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("nheads", [24, 64], ids=["130m", "1.3b"])
@pytest.mark.parametrize(("dtype", "precision", "tol"), [(torch.float32, "ieee", 1e-4), (torch.bfloat16, "tf32", 3e-2)])
def test_ssd_triton_at_160_states_full_size(nheads, dtype, precision, tol):
    """One layer's scan with the paper's 32 extra states at model size (heads of 64, 1000 steps, default blocks): the
    backward's tiles at 256 state lanes must fit the GPU's shared memory."""
    settings = DEFAULT_SETTINGS.with_(ssd={"PRECISION": precision})
    _compare_ssd(_ssd_inputs(2, 1000, nheads, 64, 128 + 32, dtype=dtype), tol, settings)


# -- Mamba-1: what each A_init starts from ------------------------------------------------------------------------


def test_mamba1_default_continues_the_s4d_spectrum():
    model, names = adapted(TINY)
    extra = next(model.mixers()).extra_states
    N = TINY.d_state
    assert extra.A_log.shape == (TINY.expand * TINY.d_model, 8)  # n: null -> 8 on Mamba-1
    torch.testing.assert_close(extra.A_log, torch.log(torch.arange(N + 1.0, N + 9.0)).expand_as(extra.A_log))
    assert not extra.W_C.any()


def test_mamba1_sst_new_states_forget_at_once_and_their_a_does_not_learn():
    model, names = adapted(TINY_N16, A_init="sst")
    extra = next(model.mixers()).extra_states
    assert torch.equal(extra.A_log, torch.full_like(extra.A_log, 16.0))  # the raw N, not log(N)
    assert not extra.W_C.any()
    assert torch.exp(-math.exp(16.0) * torch.tensor(TINY_N16.dt_init_floor)) == 0  # exp(delta A) at the least delta
    perturb(model, [n for n in names if n.endswith("W_C")])
    ids = torch.randint(1, 64, (2, 10), generator=torch.Generator().manual_seed(4))
    lm_loss(model, ids, ids).backward()
    assert extra.W_C.grad.abs().sum() > 0
    assert extra.A_log.grad.abs().max() == 0
    other, other_names = adapted(TINY_N16)  # continue: the same run moves A_log_new
    perturb(other, [n for n in other_names if n.endswith("W_C")])
    lm_loss(other, ids, ids).backward()
    assert next(other.mixers()).extra_states.A_log.grad.abs().max() > 0


def test_mamba1_sony_copies_column_0_and_starts_both_rows_random():
    base = build_model(TINY, seed=0)
    model, _ = adapted(TINY, A_init="sony")
    ids = torch.randint(1, 64, (2, 10), generator=torch.Generator().manual_seed(5))
    bound = 1 / math.sqrt(TINY.expand * TINY.d_model)
    for mixer, base_mixer in zip(model.mixers(), base.mixers()):
        extra = mixer.extra_states
        assert torch.equal(extra.A_log, base_mixer.A_log[:, :1].expand_as(extra.A_log))
        for W in (extra.W_B, extra.W_C):
            assert W.abs().max() <= bound
            assert W.std() > bound / 4  # uniform on (-bound, bound): std bound / sqrt 3
        assert not torch.equal(extra.W_B, extra.W_C)
    with torch.no_grad():
        assert not torch.allclose(model(ids), base(ids))  # random C: the output moves at init


def test_mamba1_copy_takes_the_named_column_and_keeps_the_output():
    base = build_model(TINY, seed=0)
    model, _ = adapted(TINY, A_init="copy", copy_column=2)
    for mixer, base_mixer in zip(model.mixers(), base.mixers()):
        assert torch.equal(mixer.extra_states.A_log, base_mixer.A_log[:, 2:3].expand(-1, 8))
    ids = torch.randint(1, 64, (2, 10), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), base(ids), rtol=0, atol=1e-6)
    with pytest.raises(UserError, match="copy_column 4 is past"):
        adapted(TINY, A_init="copy", copy_column=TINY.d_state)


# -- options ------------------------------------------------------------------------------------------------------


def test_explicit_n_wins_over_the_architecture_default():
    model, _ = adapted(TINY2, n=4)
    assert next(model.mixers()).extra_states.W_C.shape == (TINY2.ngroups * 4, 32)
    model, _ = adapted(TINY, n=3)
    assert next(model.mixers()).extra_states.A_log.shape[1] == 3


def test_a_init_on_mamba2_is_refused():
    with pytest.raises(NotImplementedError, match="head's A"):  # at start-up too: tests/methods/test_option_refusals.py
        adapted(TINY2, A_init="continue")


@pytest.mark.parametrize(("options", "match"), [({"A_init": "log16"}, "unknown A_init"), ({"n": 0}, "positive")])
def test_bad_options_are_one_line_errors(options, match):
    with pytest.raises(UserError, match=match):
        validate_method_cfg({"name": "additional_scan", **options})

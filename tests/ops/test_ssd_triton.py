"""Triton SSD scan (Mamba-2) vs the chunked reference: output, final state and every gradient.

On the CPU the kernels run in Triton's interpreter on small shapes, with 16-step chunks (`SMALL`) so that several
chunks and a ragged last one run; the `gpu` test repeats the comparison at mamba2-130m/1.3b sizes.
Errors are relative Frobenius norms ||fast - ref|| / ||ref||.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from stateft.ops import ssd_scan, ssd_triton  # noqa: E402
from tests.ops.kernel_settings import DEVICE, SETTINGS, backend  # noqa: E402

NAMES = ("x", "dt", "A", "B", "C", "D", "dt_bias", "h0")
SMALL = {"BLOCK_Q": 16, "BLOCK_P": 16, "PRECISION": "ieee"}  # several chunks and channel blocks, exact fp32 dots


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite values"
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def make_inputs(b, length, nheads, headdim, ngroups, n, dtype=torch.float32, h0="batch", seed=0, device=DEVICE):
    """Random inputs; x, B, C are views into one (b l E+2GN) tensor as the mixer passes them.
    h0: none|batch|expanded."""
    g = torch.Generator().manual_seed(seed)
    E, GN = nheads * headdim, ngroups * n
    xbc = torch.randn(b, length, E + 2 * GN, generator=g).to(device, dtype)
    t = {
        "x": xbc[..., :E].unflatten(-1, (nheads, headdim)),
        "dt": torch.randn(b, length, nheads, generator=g).to(device, dtype),
        "A": (-torch.rand(nheads, generator=g) * 2 - 0.2).to(device),
        "B": xbc[..., E : E + GN].unflatten(-1, (ngroups, n)),
        "C": xbc[..., E + GN :].unflatten(-1, (ngroups, n)),
        "D": torch.randn(nheads, generator=g).to(device),
        "dt_bias": (torch.randn(nheads, generator=g) * 0.5).to(device),
        "h0": None,
    }
    if h0 == "batch":
        t["h0"] = torch.randn(b, nheads, headdim, n, generator=g).to(device)
    elif h0 == "expanded":
        t["h0"] = torch.randn(nheads, headdim, n, generator=g).to(device)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in t.items() if v is not None}
    return leaves


def run(impl, t, chunk_size=64, ssd=None):
    h0 = t.get("h0")
    if h0 is not None and h0.dim() == 3:
        h0 = h0[None].expand(t["x"].shape[0], -1, -1, -1)  # one (h p n) state for the whole batch, like init_state
    return ssd_scan(x=t["x"], dt=t["dt"], A=t["A"], B=t["B"], C=t["C"], chunk_size=chunk_size, D=t["D"],
                    dt_bias=t["dt_bias"], initial_state=h0, return_final_state=True,
                    backend=backend(impl, ssd=ssd or {}))  # fmt: skip


def compare(t, tol_y, tol_grad, seed=1, ssd=None):
    """Triton (launched with ``ssd`` changed from the tests' settings) against the reference."""
    g = torch.Generator().manual_seed(seed)
    y_ref, h_ref = run("ref", t)
    dy = torch.randn(y_ref.shape, generator=g).to(y_ref.device, y_ref.dtype)
    dh = torch.randn(h_ref.shape, generator=g).to(h_ref.device)
    names = [k for k in NAMES if k in t]
    grads_ref = torch.autograd.grad((y_ref.float() * dy).sum() + (h_ref * dh).sum(), [t[k] for k in names])
    y, h = run("triton", t, ssd=ssd)
    assert y.dtype == y_ref.dtype
    assert h.dtype == torch.float32
    grads = torch.autograd.grad((y.float() * dy).sum() + (h * dh).sum(), [t[k] for k in names])
    assert _rel(y, y_ref) < tol_y, f"y: {_rel(y, y_ref):.3g}"
    assert _rel(h, h_ref) < tol_y, f"final state: {_rel(h, h_ref):.3g}"
    for name, a, b in zip(names, grads, grads_ref):
        assert a.shape == b.shape, name
        assert _rel(a, b) < tol_grad, f"d{name}: {_rel(a, b):.3g}"


@pytest.mark.parametrize(
    ("length", "headdim", "ngroups", "n", "h0"),
    [
        (37, 16, 1, 16, "none"),  # 3 chunks of 16, the last ragged
        (37, 16, 2, 16, "batch"),
        (21, 12, 2, 10, "expanded"),  # headdim and state not powers of two: masked lanes
        (16, 32, 1, 16, "batch"),  # two channel blocks: gradients summed over blocks
    ],
)
def test_triton_matches_ref_fp32(length, headdim, ngroups, n, h0):
    compare(make_inputs(2, length, 4, headdim, ngroups, n, h0=h0), tol_y=1e-5, tol_grad=1e-5, ssd=SMALL)


def test_triton_matches_ref_bf16():
    compare(make_inputs(2, 23, 4, 16, 2, 16, dtype=torch.bfloat16), tol_y=2e-2, tol_grad=2e-2, ssd=SMALL)


def test_model_triton_matches_ref():
    from stateft.models.config import MambaConfig
    from stateft.models.loading import build_model

    config = MambaConfig(d_model=32, n_layer=2, vocab_size=64, arch="mamba2", d_state=16, headdim=16, ngroups=2)
    model = build_model(config, seed=0, device=DEVICE, backend="ref")
    ids = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    ref = model(ids)
    ref.logsumexp(-1).mean().backward()
    grads_ref = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    model.set_backend(impl="triton", settings=SETTINGS.with_(ssd=SMALL))
    out = model(ids)
    out.logsumexp(-1).mean().backward()
    assert _rel(out, ref) < 1e-5
    for k, p in model.named_parameters():
        assert _rel(p.grad, grads_ref[k]) < 1e-4, k


@pytest.mark.gpu
@pytest.mark.parametrize("size", ["130m", "1.3b"])
@pytest.mark.parametrize(
    ("dtype", "precision", "tol"),
    [(torch.float32, "ieee", 1e-4), (torch.float32, "tf32", 1e-2), (torch.bfloat16, "tf32", 3e-2)],
)
def test_triton_matches_ref_full_size(size, dtype, precision, tol):
    """One layer's scan at model size (heads of 64 channels, 128 states, 1000 steps, default blocks)."""
    nheads = {"130m": 24, "1.3b": 64}[size]
    t = make_inputs(2, 1000, nheads, 64, 1, 128, dtype=dtype, h0="expanded")
    compare(t, tol_y=tol, tol_grad=tol, ssd={"PRECISION": precision})


def test_backward_halves_the_channel_block_when_shared_memory_runs_out(monkeypatch):
    # a GPU whose shared memory cannot hold the backward's tiles at BLOCK_P 32: the backward retries at 16
    from triton.runtime.errors import OutOfResources

    monkeypatch.setattr(ssd_triton, "_BWD_BLOCK_P", {})
    real, tried = ssd_triton._ssd_backward, []

    def limited(*args):
        tried.append(args[-2])
        if args[-2] > 16:
            raise OutOfResources(245760, 232448, "shared memory")
        return real(*args)

    monkeypatch.setattr(ssd_triton, "_ssd_backward", limited)
    compare(make_inputs(2, 21, 2, 32, 1, 16, h0="batch"), tol_y=1e-5, tol_grad=1e-5, ssd={**SMALL, "BLOCK_P": 32})
    assert tried == [32, 16]
    assert list(ssd_triton._BWD_BLOCK_P.values()) == [16]  # remembered: the next backward starts at 16

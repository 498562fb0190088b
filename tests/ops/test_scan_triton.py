"""Triton selective scan vs the sequential reference: outputs, last state and every gradient.

On the CPU the kernels run in Triton's interpreter (with tests/ops/kernel_settings.py's launch settings) on small
shapes; the `gpu` tests repeat the comparison at model sizes. Errors are relative Frobenius norms,
||fast - ref|| / ||ref||, with a per-dtype table.
"""

from __future__ import annotations

import pytest
import torch

from stateft.ops import scan_triton, selective_scan
from stateft.ops.scan_ref import selective_scan_ref
from stateft.ops.settings import ScanSettings
from tests.ops.kernel_settings import DEVICE, backend

pytest.importorskip("triton")

# relative-norm tolerance per input dtype: fp32 arithmetic is fp32 throughout; bf16 rounds inputs/outputs
TOL = {torch.float32: 2e-4, torch.bfloat16: 2.5e-2}

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state", "h_offset", "y_offset")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite values"
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def make_inputs(b, d, n, length, dtype, device, *, h0="none", offsets=True, z=True, bias=True, layout="bdl", seed=0):
    """Random scan inputs; delta/z as (b l d)-major views like the mixer passes; h0 'none' | 'batch' | 'expanded'."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    def act(scale=1.0, name=""):
        # "mixed": delta (b d l)-contiguous, z a (b l d)-major view: the Mamba-1 mixer's layouts
        bld = layout == "bld" or (layout == "mixed" and name == "z")
        x = r(b, length, d, scale=scale).transpose(1, 2) if bld else r(b, d, length, scale=scale)
        return x.to(dtype)

    inp = {
        "u": act(),
        "delta": act(0.5),
        "A": -torch.exp(r(d, n, scale=0.5)),
        "B": r(b, n, length).to(dtype),
        "C": r(b, n, length).to(dtype),
        "D": r(d),
        "z": act(name="z") if z else None,
        "delta_bias": r(d, scale=0.5) - 2.0 if bias else None,
        "initial_state": None,
        "h_offset": r(d, n, scale=0.5) if offsets else None,
        "y_offset": r(d, scale=0.5) if offsets else None,
    }
    if h0 == "batch":
        inp["initial_state"] = r(b, d, n)
    elif h0 == "expanded":
        inp["initial_state"] = r(d, n)  # expanded to (b d n) in the call, as the mixer does
    return inp


def run(inp, impl, *, last=True, grad_last=True, seed=1, frozen=(), scan=None):
    """Forward + backward with a fixed random cotangent; returns outputs and grads of every tensor input (but those
    named in ``frozen``, which take no gradient). ``scan``: launch settings changed from the tests' (ScanSettings)."""
    leaves = {k: v.detach().clone().requires_grad_(k not in frozen) for k, v in inp.items() if v is not None}
    if impl == "ref":  # the reference in fp32 on the same values
        args = {k: v.float() for k, v in leaves.items()}
    else:
        args = dict(leaves)
    h0 = args.get("initial_state")
    if h0 is not None and h0.dim() == 2:
        args["initial_state"] = h0[None].expand(inp["u"].shape[0], -1, -1)
    call = (
        selective_scan_ref if impl == "ref" else lambda **k: selective_scan(**k, backend=backend(impl, scan=scan or {}))
    )
    out = call(
        u=args["u"], delta=args["delta"], A=args["A"], B=args["B"], C=args["C"], D=args.get("D"), z=args.get("z"),
        delta_bias=args.get("delta_bias"), initial_state=args.get("initial_state"), h_offset=args.get("h_offset"),
        y_offset=args.get("y_offset"), return_last_state=last,
    )  # fmt: skip
    y, h_last = out if last else (out, None)
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=g).to(y.device)
    loss = (y.float() * dy).sum()
    if last and grad_last:
        loss = loss + (h_last * torch.randn(h_last.shape, generator=g).to(y.device)).sum()
    loss.backward()
    grads = {k: v.grad for k, v in leaves.items()}
    return y, h_last, grads


def check(inp, *, last=True, grad_last=True, impl="triton", scan=None):
    dtype = inp["u"].dtype
    tol = TOL[dtype]
    y, h_last, grads = run(inp, impl, last=last, grad_last=grad_last, scan=scan)
    y_ref, h_ref, grads_ref = run(inp, "ref", last=last, grad_last=grad_last)
    assert y.dtype == dtype
    assert y.shape == y_ref.shape
    errors = {"y": _rel(y, y_ref)}
    if last:
        assert h_last.dtype == torch.float32
        errors["last_state"] = _rel(h_last, h_ref)
    for k in grads_ref:
        assert grads[k] is not None, f"no gradient for {k}"
        assert grads[k].shape == inp[k].shape, k
        assert grads[k].dtype == inp[k].dtype, k
        errors["d" + k] = _rel(grads[k], grads_ref[k])
    bad = {k: f"{v:.2e}" for k, v in errors.items() if not v <= tol}
    assert not bad, f"{dtype} tol {tol:.0e}: over tolerance {bad}; all { ({k: f'{v:.1e}' for k, v in errors.items()}) }"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_features_fp32_bf16(dtype):
    # d not a multiple of BLOCK_D, length not a multiple of BLOCK_T, n not a power of two
    check(make_inputs(2, 20, 6, 37, dtype, DEVICE, h0="batch", layout="bld"))


@pytest.mark.parametrize(
    ("b", "d", "n", "length", "h0", "offsets", "z", "bias", "layout"),
    [
        (1, 8, 4, 16, "expanded", True, True, True, "bdl"),  # exactly one chunk; one h0 expanded over the batch
        (2, 5, 16, 27, "none", False, False, False, "bdl"),  # plain scan: no optional inputs
        (1, 9, 24, 21, "expanded", True, True, False, "bld"),  # additional_scan's n = 24
        (1, 4, 3, 1, "batch", True, True, True, "bdl"),  # a single step
        (2, 11, 5, 29, "expanded", True, True, True, "mixed"),  # delta and z in different layouts (as the mixer)
    ],
)
def test_shapes_and_options(b, d, n, length, h0, offsets, z, bias, layout):
    check(make_inputs(b, d, n, length, torch.float32, DEVICE, h0=h0, offsets=offsets, z=z, bias=bias, layout=layout))


def test_without_last_state_and_random_shapes():
    g = torch.Generator().manual_seed(123)
    for seed in range(2):
        b, d, n, length = (
            int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 3), (3, 24), (2, 9), (2, 40))
        )
        inp = make_inputs(b, d, n, length, torch.float32, DEVICE, h0="expanded", seed=seed)
        check(inp, last=False)
        check(inp, last=True, grad_last=False)


def test_dispatch_returns_prefill_state_that_decoding_continues():
    from stateft.ops import selective_step

    inp = make_inputs(2, 12, 4, 20, torch.float32, DEVICE, h0="batch")
    args = {k: inp[k] for k in NAMES[:7]}
    kw = dict(delta_bias=inp["delta_bias"], h_offset=inp["h_offset"], y_offset=inp["y_offset"])
    y_all = selective_scan(**args, **kw, initial_state=inp["initial_state"], backend=backend())
    cut = 13
    head = {k: a[..., :cut] if a.dim() == 3 and k != "A" else a for k, a in args.items()}
    y_head, state = selective_scan(
        **head, **kw, initial_state=inp["initial_state"], return_last_state=True, backend=backend()
    )
    ys = [y_head]
    for t in range(cut, 20):
        step = {k: a[..., t] if a.dim() == 3 else a for k, a in args.items()}
        y_t, state = selective_step(state=state, **step, **kw, delta_softplus=True, backend=backend())
        ys.append(y_t[..., None])
    assert _rel(torch.cat(ys, dim=-1), y_all) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("b", "d", "n", "length"), [(4, 1536, 16, 1024), (2, 5120, 16, 2048), (1, 768, 24, 3000)])
def test_full_size_gpu(dtype, b, d, n, length):
    check(make_inputs(b, d, n, length, dtype, "cuda", h0="expanded", layout="bld"))


def test_strided_inputs_copied_row_major_first():
    # rows: the (b l d)-major views of delta and z (and dy) are copied row-major before the kernels (off, the
    # default, reads them in place: the other tests)
    check(make_inputs(2, 20, 6, 37, torch.bfloat16, DEVICE, h0="batch", layout="bld"), scan={"rows": True})


@pytest.mark.parametrize(
    ("seg", "chunk", "h0", "last"), [(8, 8, "batch", True), (16, 8, "none", True), (8, 4, "expanded", False)]
)
def test_segments_run_in_parallel_and_agree(seg, chunk, h0, last):
    # the sequence cut into segments (separate programs, states and adjoints carried across the boundaries):
    # several segments, a short last one (37 = 4 x 8 + 5), h_0 and the last state's gradient entering at the ends
    scan = {"SEG": seg, "CHUNK": chunk, "BLOCK_T": 4}
    check(make_inputs(2, 20, 6, 37, torch.float32, DEVICE, h0=h0, layout="bld"), last=last, scan=scan)


@pytest.mark.parametrize(("seg", "bwd_seg"), [(0, 16), (16, 0)])
def test_backward_segments_apart_from_the_forward(seg, bwd_seg):
    # the backward cut into segments with the forward in one (the states it stores are per chunk either way), and
    # the other way round
    scan = {"SEG": seg, "bwd_SEG": bwd_seg, "CHUNK": 8, "BLOCK_T": 4}
    check(make_inputs(2, 20, 6, 37, torch.float32, DEVICE, h0="batch", layout="bld"), last=True, scan=scan)


@pytest.mark.parametrize(("slots", "seg"), [(0, 0), (1, 0), (2, 16), (5, 0)])
def test_dB_dC_partials_stored_or_added_into_shared_slots(slots, seg):
    # the channel blocks' dB/dC partials stored one per block (0) or added atomically into 1, 2 or (more than the 3
    # blocks) 5 slots, with and without backward segments; channels past the last block's end (20 = 2 x 8 + 4)
    scan = {"dBC_slots": slots, "bwd_BLOCK_D": 8, "bwd_SEG": seg, "CHUNK": 8, "BLOCK_T": 4}
    check(make_inputs(2, 20, 6, 37, torch.float32, DEVICE, h0="batch", layout="bld"), last=True, scan=scan)


@pytest.mark.parametrize("slots", [-1, 1.5, True])
def test_dB_dC_slots_must_be_a_count(slots):
    with pytest.raises(ValueError, match="dBC_slots"):
        ScanSettings(dBC_slots=slots)


def test_deterministic_algorithms_store_partials_and_repeat_bitwise():
    assert scan_triton._bc_slots(3, 1) == 1
    inp = make_inputs(2, 20, 6, 21, torch.float32, DEVICE, layout="bld")
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert scan_triton._bc_slots(3, 1) == 0
        first, second = run(inp, "triton", scan={"dBC_slots": 1})[2], run(inp, "triton", scan={"dBC_slots": 1})[2]
    finally:
        torch.use_deterministic_algorithms(was)
    for k in ("B", "C"):
        assert torch.equal(first[k], second[k]), k


def test_segment_length_must_be_a_multiple_of_the_chunk():
    with pytest.raises(ValueError, match="multiple of CHUNK"):
        check(make_inputs(1, 4, 2, 30, torch.float32, DEVICE), scan={"SEG": 12, "CHUNK": 8, "BLOCK_T": 4})


def test_automatic_segments():
    assert scan_triton._n_segments(1024, 32, 768, -1) == (1024, 1)  # 4 x 1024 at E 1536: one segment (measured)
    assert scan_triton._n_segments(8192, 32, 192, -1) == (512, 16)  # one sequence of 8192: 16 x 512 (measured best)
    assert scan_triton._n_segments(1000, 32, 192, -1) == (1024, 1)  # too short to cut into >= 512-step segments
    assert scan_triton._n_segments(2048, 32, 384, -1) == (512, 4)  # 2 sequences of 2048: 8 wanted, 4 of 512 allowed


@pytest.mark.parametrize("rows", [False, True])
def test_gradients_laid_out_like_inputs_and_row_copies_saved(rows):
    # the mixer's layouts: u, delta (b d l); z half of in_proj's (b l 2d) output. The gradients come back laid out like
    # the inputs (so the ops that made them take them without copies). rows on: what the backward keeps of z is its
    # row-major copy (made once, in the forward), not the view; off (the default): z is read in place, the view
    b, d, n, length = 2, 12, 4, 20
    g = torch.Generator().manual_seed(0)
    u = torch.randn(b, d, length, generator=g).to(DEVICE).requires_grad_()
    delta = (torch.randn(b, d, length, generator=g) * 0.5).to(DEVICE).requires_grad_()
    xz = torch.randn(b, length, 2 * d, generator=g).to(DEVICE).requires_grad_()
    z = xz.transpose(1, 2)[:, d:]
    A = -torch.rand(d, n, generator=g).to(DEVICE)
    B, C = (torch.randn(b, n, length, generator=g).to(DEVICE) for _ in range(2))
    y = selective_scan(u=u, delta=delta, A=A, B=B, C=C, z=z, backend=backend(scan={"rows": rows}))
    saved = [t for t in y.grad_fn.saved_tensors if t is not None and t.dim() == 3 and t.shape == z.shape]
    views = [t for t in saved if t.untyped_storage().data_ptr() == xz.untyped_storage().data_ptr()]
    assert len(views) == (0 if rows else 1)
    grads = {}
    for name, t in (("u", u), ("delta", delta), ("z", z)):
        t.register_hook(lambda grad, name=name: grads.__setitem__(name, grad))
    y.backward(torch.randn(y.shape, generator=g).to(DEVICE))
    assert grads["u"].stride() == u.stride()
    assert grads["delta"].stride() == delta.stride()
    assert grads["z"].stride() == torch.empty_like(z).stride()  # (b l d)-major, like z
    assert xz.grad.is_contiguous()


@pytest.mark.parametrize("frozen", [("A", "D", "delta_bias"), ("A",), ("D", "delta_bias")])
def test_frozen_parameters_get_no_gradient_and_change_nothing_else(frozen):
    # A, D and the delta bias are frozen in most methods: the backward then skips their partial sums (fewer registers
    # and instructions, fewer reductions after the kernel); every other gradient must come out as before
    inp = make_inputs(2, 20, 6, 37, torch.float32, DEVICE, h0="batch", layout="bld")
    y, h_last, grads = run(inp, "triton")
    y_f, h_f, grads_f = run(inp, "triton", frozen=frozen)
    assert torch.equal(y_f, y)
    assert torch.equal(h_f, h_last)
    for k, g in grads.items():
        if k in frozen:
            assert grads_f[k] is None, k
        else:
            assert _rel(grads_f[k], g) < 1e-6, k


def test_steps_per_block_8():
    # the GPU default is 8 steps per block (the interpreter's tests run 4): a chunk of two blocks, a length that is
    # no multiple of either, h_0, both offsets and the last state's gradient
    check(make_inputs(2, 20, 6, 37, torch.float32, DEVICE, h0="batch", layout="bld"), scan={"BLOCK_T": 8, "CHUNK": 16})


def test_B_and_C_of_different_dtypes():
    # dB and dC are summed in one fp32 buffer; each comes back in its own input's dtype
    inp = make_inputs(2, 20, 6, 37, torch.float32, DEVICE, layout="bld")
    inp["B"] = inp["B"].bfloat16()  # fp32 C: its gradient must not pass through B's bf16
    _, _, grads = run(inp, "triton")
    _, _, grads_ref = run(inp, "ref")
    assert grads["B"].dtype == torch.bfloat16
    assert grads["C"].dtype == torch.float32
    assert _rel(grads["B"], grads_ref["B"]) < TOL[torch.bfloat16]
    assert _rel(grads["C"], grads_ref["C"]) < TOL[torch.float32]

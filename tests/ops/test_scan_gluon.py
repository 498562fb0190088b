"""The Gluon scan kernels (stateft/ops/gluon_scan_kernels.py) against the sequential reference and the Triton kernels.

Gluon has no interpreter: the numerical tests need a GPU (marked `gpu`); on the CPU only the dispatch is tested here,
and tests/ops/test_sass_report.py compiles the kernels for sm_90.
"""

from __future__ import annotations

import pytest
import torch

from stateft.ops import scan_triton
from stateft.ops.settings import ScanSettings
from tests.ops.test_scan_triton import _rel, check, make_inputs, run

pytest.importorskip("triton")


def test_dispatch_falls_back_where_gluon_cannot_run():
    # the launch shapes its layouts cover; anything else takes the Triton kernel
    assert scan_triton._gluon_fits(8, 16, 8, 1)
    assert scan_triton._gluon_fits(8, 4, 8, 1)
    assert scan_triton._gluon_fits(16, 16, 8, 2)  # two warps side by side
    assert not scan_triton._gluon_fits(16, 16, 8, 1)  # channels: 8 lanes per warp
    assert not scan_triton._gluon_fits(8, 16, 8, 2)
    assert not scan_triton._gluon_fits(8, 2, 8, 1)  # states: 4 lanes
    assert not scan_triton._gluon_fits(8, 16, 4, 1)  # 8 steps per block
    pick = scan_triton._pick
    pair = ("triton", "gluon")
    assert pick(*pair, "gluon", 8, 16, 8, 1) == ("gluon" if scan_triton.FAST.value else "triton")  # interpreter: Triton
    assert pick(*pair, "gluon", 16, 16, 8, 1) == "triton"
    assert pick(*pair, "triton", 8, 16, 8, 1) == "triton"
    with pytest.raises(ValueError, match="kernels must be 'gluon' or 'triton'"):
        ScanSettings(kernels="cuda")


def _gluon(**scan) -> dict:
    """The Gluon kernels with ``scan`` changed from the (GPU: default) launch settings: ``check(..., scan=)``."""
    return {"kernels": "gluon", **scan}


def _ran_gluon() -> bool:
    names = {scan_triton.LAUNCHED["fwd"].name, scan_triton.LAUNCHED["bwd"].name}
    return names == {"scan_fwd_gluon_kernel", "scan_bwd_gluon_kernel"}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("chunk", "warps"), [(64, 1), (16, 1), (8, 1), (16, 2)])
def test_all_features_gpu(dtype, chunk, warps):
    # every optional input, channels past a block's end (20 = 2 x 8 + 4), a last block and chunk cut short (37),
    # n = 6 (8 states, 2 of them padding), the last state's gradient entering at the end; the backward on 1 or 2 warps
    scan = _gluon(CHUNK=chunk, bwd_BLOCK_D=8 * warps, bwd_num_warps=warps)
    check(make_inputs(2, 20, 6, 37, dtype, "cuda", h0="batch", layout="bld"), scan=scan)
    assert _ran_gluon()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("slots", "warps", "seg"), [(1, 1, 0), (2, 1, 64), (2, 2, 0)])
def test_dB_dC_added_into_shared_slots_gpu(dtype, slots, warps, seg):
    # 3 channel blocks of 8 (the last one cut short) or 2 of 16 sharing 1 or 2 slots, with backward segments too
    scan = _gluon(CHUNK=16, bwd_BLOCK_D=8 * warps, bwd_num_warps=warps, dBC_slots=slots, bwd_SEG=seg)
    check(make_inputs(2, 20 * warps, 6, 150, dtype, "cuda", h0="batch", layout="bld"), scan=scan)
    assert _ran_gluon()


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("b", "d", "n", "length", "h0", "offsets", "z", "bias", "layout"),
    [
        (1, 8, 4, 16, "expanded", True, True, True, "bdl"),
        (2, 5, 16, 27, "none", False, False, False, "bdl"),
        (1, 9, 24, 21, "expanded", True, True, False, "bld"),
        (1, 4, 3, 1, "batch", True, True, True, "bdl"),
        (2, 11, 5, 29, "expanded", True, True, True, "mixed"),
    ],
)
def test_shapes_and_options_gpu(b, d, n, length, h0, offsets, z, bias, layout):
    inp = make_inputs(b, d, n, length, torch.float32, "cuda", h0=h0, offsets=offsets, z=z, bias=bias, layout=layout)
    check(inp, scan=_gluon(CHUNK=16))
    assert _ran_gluon()


@pytest.mark.gpu
@pytest.mark.parametrize(("seg", "chunk", "h0", "last"), [(64, 16, "batch", True), (32, 16, "none", False)])
def test_segments_gpu(seg, chunk, h0, last):
    check(
        make_inputs(2, 20, 6, 150, torch.float32, "cuda", h0=h0, layout="bld"),
        last=last,
        scan=_gluon(SEG=seg, CHUNK=chunk),
    )
    assert _ran_gluon()


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("frozen", "warps", "slots"),
    [(("A", "D", "delta_bias"), 1, 0), ((), 1, 0), ((), 2, 0), (("A", "D", "delta_bias"), 1, 16)],
)
def test_same_results_as_the_triton_kernels_gpu(frozen, warps, slots):
    # at a 130m layer's size, fp32: the same arithmetic in another order (dB/dC summed atomically in any order with
    # slots)
    inp = make_inputs(2, 1536, 16, 1000, torch.float32, "cuda", h0="expanded", layout="mixed")
    y_want, last_want, want = run(inp, "triton", frozen=frozen, scan={"kernels": "triton"})
    assert scan_triton.LAUNCHED["fwd"].name == "scan_fwd_kernel"
    assert scan_triton.LAUNCHED["bwd"].name == "scan_bwd_kernel"
    y, last, got = run(
        inp, "triton", frozen=frozen, scan=_gluon(bwd_BLOCK_D=8 * warps, bwd_num_warps=warps, dBC_slots=slots)
    )
    assert _ran_gluon()
    assert _rel(y, y_want) < 1e-5
    assert _rel(last, last_want) < 1e-5
    for k, v in want.items():
        assert (v is None) == (got[k] is None), k
        if v is not None:
            assert _rel(got[k], v) < 1e-5, k


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("b", "d", "n", "length"), [(4, 1536, 16, 1024), (1, 768, 24, 3000)])
def test_full_size_gpu(dtype, b, d, n, length):
    check(make_inputs(b, d, n, length, dtype, "cuda", h0="expanded", layout="bld"), scan=_gluon())
    assert _ran_gluon()

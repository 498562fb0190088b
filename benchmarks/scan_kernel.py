"""Time the selective-scan kernels alone (forward, forward+backward) at one layer's shape, for several Triton launch
configurations and, when installed, mamba_ssm's CUDA kernel. Used to choose the defaults of
`stateft.ops.settings.ScanSettings`.

    PYTHONPATH=. python benchmarks/scan_kernel.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import time_cuda  # noqa: E402
from stateft.ops import (  # noqa: E402
    HAS_MAMBA_SSM,
    Backend,
    scan_triton,  # noqa: E402
    selective_scan,
)
from stateft.ops.settings import DEFAULT_SETTINGS  # noqa: E402

SHAPES = {"130m": (4, 1536, 16, 1024), "1.4b": (4, 4096, 16, 1024)}
# --long: one long sequence (few programs without segments): does cutting it into segments pay?
LONG = {"130m-b1-8k": (1, 1536, 16, 8192)}
LONG_SEGS = (0, 2048, 1024, 512, -1)
KEYS = ("BLOCK_D", "BLOCK_T", "num_warps", "bwd_BLOCK_D", "bwd_num_warps", "CHUNK", "rows", "SEG")
# Also measured and dropped (benchmarks/NOTES.md, sections 4 and 5): segments of 64-256 at these shapes, 2 warps,
# BLOCK_D 4 and 16, a backward that stored every h_t of a chunk in its scratch instead of rebuilding it.
CONFIGS = [
    (8, 8, 1, 8, 1, 64, 0, -1),  # the default
    (8, 4, 1, 8, 1, 64, 0, -1),
    (8, 4, 1, 8, 1, 32, 0, -1),
    (8, 4, 1, 8, 1, 64, 1, -1),  # z and dy copied row-major first
    (8, 2, 1, 8, 1, 64, 0, -1),
    (8, 4, 1, 4, 1, 64, 0, -1),
    (8, 4, 1, 8, 1, 64, 0, 512),
    (8, 4, 1, 8, 1, 64, 0, 256),
    # the forward's own channel block (its 768 one-warp programs at 130m leave ~6 warps per SM); slower
    # in the training step (benchmarks/NOTES.md)
    (4, 4, 1, 8, 1, 64, 0, -1),
    (16, 4, 2, 8, 1, 64, 0, -1),
]


def inputs(b, d, n, length, offsets=True):
    # the Mamba-1 mixer's layouts: u and delta (b d l), z the second half of in_proj's (b l 2d) output
    def bdl():
        return torch.randn(b, d, length, device="cuda", dtype=torch.bfloat16)

    t = {
        "u": bdl(),
        "delta": bdl() * 0.5,
        "A": -torch.rand(d, n, device="cuda") * 8,
        "B": torch.randn(b, n, length, device="cuda", dtype=torch.bfloat16),
        "C": torch.randn(b, n, length, device="cuda", dtype=torch.bfloat16),
        "D": torch.ones(d, device="cuda"),
        "z": torch.randn(b, length, 2 * d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)[:, d:],
        "delta_bias": torch.rand(d, device="cuda") - 4,
        "h_offset": torch.randn(d, n, device="cuda") * 0.1 if offsets else None,
    }
    for k in ("u", "delta", "z", "h_offset"):
        if t[k] is not None:
            t[k].requires_grad_(True)
    return t


def backend(impl: str, **scan) -> Backend:
    """``impl`` on the GPU, the scan launched with the default settings but for ``scan`` (ScanSettings' names)."""
    return Backend(impl=impl, device="cuda", settings=DEFAULT_SETTINGS.with_(scan=scan))


def bench(t, backend):
    b, d, length = t["u"].shape  # dy arrives (b l d)-major, from the out projection's backward
    dy = torch.randn(b, length, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)

    def fwd():
        with torch.no_grad():
            return selective_scan(**t, backend=backend)

    def fwd_bwd():
        y = selective_scan(**t, backend=backend)
        y.backward(dy)

    return time_cuda(fwd, 3, 20)[0], time_cuda(fwd_bwd, 3, 20)[0]


def outputs(t, backend):
    """y and the gradients of u, delta, h' for one fixed cotangent: to check a config against the first one."""
    leaves = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in t.items() if v is not None}
    y = selective_scan(**leaves, backend=backend)
    y.backward(torch.ones_like(y))
    return [y.float()] + [leaves[k].grad.float() for k in ("u", "delta", "h_offset")]


def max_rel(a, b):
    return max(((x - y).norm() / y.norm().clamp_min(1e-12)).item() for x, y in zip(a, b))


def registers() -> dict:
    """Registers per thread and spilled bytes of the kernels launched last."""
    return {k: (getattr(v, "n_regs", None), getattr(v, "n_spills", None)) for k, v in scan_triton.LAUNCHED.items()}


def long_sequence() -> None:
    for name, shape in LONG.items():
        t = inputs(*shape)
        first = None
        for seg in LONG_SEGS:
            f, fb = bench(t, backend("triton", SEG=seg))
            got = outputs(t, backend("triton", SEG=seg))
            first = first or got
            row = {"shape": name, "SEG": seg, "fwd_ms": f, "fwd_bwd_ms": fb, "vs_first": max_rel(got, first),
                   "regs_spills": registers()}  # fmt: skip
            print(json.dumps(row), flush=True)


def main() -> None:
    if "--long" in sys.argv:
        long_sequence()
        return
    results = []
    for name, shape in SHAPES.items():
        t = inputs(*shape)
        b, d, n, length = shape
        first = None
        for cfg in CONFIGS:
            try:
                triton_cfg = backend("triton", **dict(zip(KEYS, cfg)))
                f, fb = bench(t, triton_cfg)
                got = outputs(t, triton_cfg)
            except Exception as err:  # a config that does not compile (registers, shared memory) is skipped
                print(name, cfg, "failed:", str(err).splitlines()[0][:200], flush=True)
                continue
            first = first or got
            err = max_rel(got, first)  # same arithmetic in another order: ~1e-6 (bf16 outputs: ~1e-2 at most)
            results.append(
                {"shape": name, "impl": "triton", "config": cfg, "fwd_ms": f, "fwd_bwd_ms": fb, "vs_first": err,
                 "regs_spills": registers()}
            )  # fmt: skip
            print(json.dumps(results[-1]), flush=True)
        if HAS_MAMBA_SSM:
            for offsets in (False, True):
                f, fb = bench(inputs(*shape, offsets=offsets), backend("mamba_ssm"))
                impl = "mamba_ssm+offset" if offsets else "mamba_ssm"
                results.append({"shape": name, "impl": impl, "fwd_ms": f, "fwd_bwd_ms": fb})
                print(json.dumps(results[-1]), flush=True)
    # the configuration with the least fwd+bwd time summed over the shapes
    totals: dict[tuple, float] = {}
    counts: dict[tuple, int] = {}
    for r in results:
        if r["impl"] == "triton" and r["vs_first"] < 5e-2:
            totals[tuple(r["config"])] = totals.get(tuple(r["config"]), 0.0) + r["fwd_bwd_ms"]
            counts[tuple(r["config"])] = counts.get(tuple(r["config"]), 0) + 1
    totals = {k: v for k, v in totals.items() if counts[k] == len(SHAPES)}  # ran (and agreed) at every shape
    best = dict(zip(KEYS, min(totals, key=totals.get)))
    print("best:", json.dumps(best))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "scan_best.json").write_text(json.dumps(best))


if __name__ == "__main__":
    main()

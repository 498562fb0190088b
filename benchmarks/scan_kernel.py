"""Time the selective-scan kernels alone (forward, forward+backward) at one layer's shape, for several Triton launch
configurations and, when installed, mamba_ssm's CUDA kernel. Used to choose `scan_triton.CONFIG`.

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
    scan_triton,  # noqa: E402
    selective_scan,
)

SHAPES = {"130m": (4, 1536, 16, 1024), "1.4b": (4, 4096, 16, 1024)}
KEYS = ("BLOCK_D", "BLOCK_T", "num_warps", "bwd_BLOCK_D", "bwd_num_warps", "CHUNK", "rows")
CONFIGS = [
    (8, 4, 1, 8, 1, 32, 1),
    (8, 4, 1, 8, 1, 32, 0),
    (16, 4, 1, 8, 1, 64, 1),
    (16, 4, 1, 8, 1, 64, 0),
    (8, 8, 1, 8, 1, 64, 0),
    (16, 8, 1, 8, 1, 64, 0),
]


def inputs(b, d, n, length, offsets=True):
    def act():  # (b l d)-major views, as the mixer passes delta and z
        return torch.randn(b, length, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)

    t = {
        "u": torch.randn(b, d, length, device="cuda", dtype=torch.bfloat16),
        "delta": act() * 0.5,
        "A": -torch.rand(d, n, device="cuda") * 8,
        "B": torch.randn(b, n, length, device="cuda", dtype=torch.bfloat16),
        "C": torch.randn(b, n, length, device="cuda", dtype=torch.bfloat16),
        "D": torch.ones(d, device="cuda"),
        "z": act(),
        "delta_bias": torch.rand(d, device="cuda") - 4,
        "h_offset": torch.randn(d, n, device="cuda") * 0.1 if offsets else None,
    }
    for k in ("u", "delta", "z", "h_offset"):
        if t[k] is not None:
            t[k].requires_grad_(True)
    return t


def bench(t, impl):
    dy = torch.randn(t["u"].shape, device="cuda", dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            return selective_scan(**t, impl=impl)

    def fwd_bwd():
        y = selective_scan(**t, impl=impl)
        y.backward(dy)

    return time_cuda(fwd, 3, 20)[0], time_cuda(fwd_bwd, 3, 20)[0]


def main() -> None:
    results = []
    for name, shape in SHAPES.items():
        t = inputs(*shape)
        b, d, n, length = shape
        for cfg in CONFIGS:
            scan_triton.CONFIG.update(zip(KEYS, cfg))
            try:
                f, fb = bench(t, "triton")
            except Exception as err:  # a config that does not compile (registers, shared memory) is skipped
                print(name, cfg, "failed:", str(err).splitlines()[0][:200], flush=True)
                continue
            results.append({"shape": name, "impl": "triton", "config": cfg, "fwd_ms": f, "fwd_bwd_ms": fb})
            print(json.dumps(results[-1]), flush=True)
        if HAS_MAMBA_SSM:
            for offsets in (False, True):
                f, fb = bench(inputs(*shape, offsets=offsets), "mamba_ssm")
                impl = "mamba_ssm+offset" if offsets else "mamba_ssm"
                results.append({"shape": name, "impl": impl, "fwd_ms": f, "fwd_bwd_ms": fb})
                print(json.dumps(results[-1]), flush=True)
    # the configuration with the least fwd+bwd time summed over the shapes
    totals: dict[tuple, float] = {}
    for r in results:
        if r["impl"] == "triton":
            totals[tuple(r["config"])] = totals.get(tuple(r["config"]), 0.0) + r["fwd_bwd_ms"]
    best = dict(zip(KEYS, min(totals, key=totals.get)))
    print("best:", json.dumps(best))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "scan_best.json").write_text(json.dumps(best))


if __name__ == "__main__":
    main()

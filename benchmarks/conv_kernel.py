"""Time the fused causal conv1d + SiLU (`stateft.ops.conv_triton`) alone: forward, and backward with the conv frozen
(every PEFT method but full/bitfit) for both kernel sets (Gluon: the backward in one pass; Triton: in two kernels) and
trained, kernel time from torch.profiler, for tile shapes around the default, at the Mamba-1 130m and 1.4b shapes
(batch 4 x 1024, bf16, x a view of in_proj's output, u used twice as in the mixer). A lower bound per row: the bytes
each pass must move at 3.35 TB/s (H100 HBM3).

    PYTHONPATH=. python benchmarks/conv_kernel.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RUNS, write_results  # noqa: E402
from stateft.ops import conv_triton  # noqa: E402
from stateft.ops.settings import ConvSettings  # noqa: E402

SHAPES = {"130m": 1536, "1.4b": 4096}  # conv channels (d_inner)
CONFIGS = [  # (BLOCK_L, BLOCK_C, backward num_warps); the first is the default (the one-pass backward: BLOCK_L 64)
    (64, 64, 4),
    (64, 32, 4),
    (64, 128, 4),
    (64, 64, 8),
    (32, 128, 4),
]
HBM = 3.35e12


def kernel_times(fn, iters: int = 20) -> dict[str, float]:
    """Mean GPU milliseconds per call of each kernel ``fn`` launches (torch.profiler): the kernels alone, not the
    Python and launch overhead that CUDA events around a ~20 us call would mostly measure."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    return {e.key: e.device_time_total / 1e3 / iters for e in prof.key_averages() if e.device_time_total > 0}


def run_one(c: int, cfg: tuple[int, int, int], train_conv: bool, kernels: str) -> dict:
    """One conv as the Mamba-1 mixer runs it: x a view of in_proj's output, u used twice (projections, scan) with
    gradients laid out as theirs are (steps contiguous); ``kernels``: ConvSettings.kernels."""
    block_l, block_c, warps = cfg
    settings = ConvSettings(BLOCK_L=block_l, BLOCK_C=block_c, num_warps=warps, kernels=kernels)
    b, length, K = 4, 1024, 4
    xz = torch.randn(b, length, 2 * c, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    x = xz.transpose(1, 2)[:, :c]
    w = (torch.randn(c, 1, K, device="cuda") * 0.5).bfloat16().requires_grad_(train_conv)
    bias = torch.randn(c, device="cuda").bfloat16().requires_grad_(train_conv)
    u1, u2 = conv_triton.conv_silu_triton(x=x, window=None, weight=w, bias=bias, two=True, settings=settings)
    du1, du2 = torch.randn_like(u1), torch.randn_like(u2)
    times = kernel_times(lambda: conv_triton.conv_silu_triton(x=x, window=None, weight=w, bias=bias, settings=settings))
    fwd = sum(v for k, v in times.items() if k.startswith("conv_silu_fwd"))
    bwd_times = kernel_times(lambda: torch.autograd.grad([u1, u2], [xz], [du1, du2], retain_graph=True))
    bwd = sum(v for k, v in bwd_times.items() if k.startswith("conv_"))  # the conv's kernels, not dw's torch sums
    n = b * length * c
    # forward: x in, u out (bf16); backward: x, du, du2 in, dx out (bf16), and for two kernels dv (fp32) out and in
    floor = (8 if conv_triton._gluon(settings, train_conv, K) else 16) * n / HBM * 1e3
    return {"fwd_ms": fwd, "bwd_ms": bwd, "kernels": {**times, **bwd_times}, "fwd_floor_ms": 4 * n / HBM * 1e3,
            "bwd_floor_ms": floor}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=RUNS)
    args = ap.parse_args()
    rows = []
    lines = [
        "| shape | BLOCK_L x BLOCK_C, warps | fwd ms Gluon | fwd ms Triton | bwd ms frozen conv: one pass (Gluon) | "
        "two kernels (Triton) | trained conv (two kernels) | floor fwd / bwd one pass / two |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in SHAPES.items():
        for cfg in CONFIGS:
            one, two = run_one(c, cfg, False, "gluon"), run_one(c, cfg, False, "triton")
            trained = run_one(c, cfg, True, "gluon")
            rows.append({"shape": name, "config": cfg, "frozen_one_pass": one, "frozen_two": two, "trained": trained})
            lines.append(
                f"| {name} | {cfg[0]} x {cfg[1]}, {cfg[2]} | {one['fwd_ms']:.3f} | {two['fwd_ms']:.3f} | "
                f"{one['bwd_ms']:.3f} | {two['bwd_ms']:.3f} | {trained['bwd_ms']:.3f} | "
                f"{one['fwd_floor_ms']:.3f} / {one['bwd_floor_ms']:.3f} / {two['bwd_floor_ms']:.3f} |"
            )
            print(lines[-1], flush=True)
    write_results("conv_kernel", {"rows": rows}, "\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()

"""GPU check of the Mamba-2 SSD scan and model: Triton vs reference correctness, scan timing, training-step timing.

    python benchmarks/mamba2_check.py                       # everything, prints a report
    python benchmarks/mamba2_check.py --out results.json    # also writes the numbers as JSON
    python benchmarks/mamba2_check.py --skip-train --sizes 130m

1. One layer's SSD scan at mamba2-130m (24 heads) and mamba2-1.3b (64 heads) sizes, headdim 64, 128 states,
   batch x seqlen tokens: relative error of the Triton output, final state and every gradient vs the PyTorch
   reference (fp32 exact dots, fp32 tf32 dots, bf16 inputs).
2. Forward and forward+backward time of that scan, reference vs Triton.
3. mamba2-130m (random init) with state_offset_h: logits Triton vs reference (fp32), then the time and peak memory of
   one training step (bf16 autocast, AdamW over the offsets) with each scan.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stateft.methods import apply_method  # noqa: E402
from stateft.models.loading import model_from_config  # noqa: E402
from stateft.ops import ssd_scan  # noqa: E402
from stateft.ops.backend import Backend  # noqa: E402
from stateft.ops.settings import DEFAULT_SETTINGS, KernelSettings  # noqa: E402

HEADS = {"130m": 24, "1.3b": 64}
REPO = Path(__file__).resolve().parents[1]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def scan_inputs(batch: int, length: int, nheads: int, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)

    def r(*shape, scale=1.0, dt=dtype):
        return (torch.randn(*shape, generator=g, device="cuda") * scale).to(dt).requires_grad_()

    return {
        "x": r(batch, length, nheads, 64), "dt": r(batch, length, nheads), "B": r(batch, length, 1, 128),
        "C": r(batch, length, 1, 128), "A": (-torch.rand(nheads, device="cuda") * 8 - 0.5).requires_grad_(),
        "D": r(nheads, dt=torch.float32), "dt_bias": r(nheads, scale=0.5, dt=torch.float32),
        "h0": r(nheads, 64, 128, scale=0.1, dt=torch.float32),
    }  # fmt: skip


def precision_settings(precision: str) -> KernelSettings:
    """The default kernel settings with the SSD kernels' fp32 dots in ``precision`` ("tf32" or "ieee")."""
    return DEFAULT_SETTINGS.with_(ssd={"PRECISION": precision})


def run_scan(t: dict[str, torch.Tensor], impl: str, precision: str = "tf32") -> tuple[torch.Tensor, torch.Tensor]:
    h0 = t["h0"][None].expand(t["x"].shape[0], -1, -1, -1)
    return ssd_scan(x=t["x"], dt=t["dt"], A=t["A"], B=t["B"], C=t["C"], chunk_size=256, D=t["D"], dt_bias=t["dt_bias"],
                    initial_state=h0, return_final_state=True,
                    backend=Backend(impl=impl, device="cuda", settings=precision_settings(precision)))  # fmt: skip


def check_scan(batch: int, length: int, size: str) -> list[dict]:
    rows = []
    for dtype, precision in ((torch.float32, "ieee"), (torch.float32, "tf32"), (torch.bfloat16, "tf32")):
        t = scan_inputs(batch, length, HEADS[size], dtype)
        results = {}
        for impl in ("ref", "triton"):
            y, h = run_scan(t, impl, precision)
            g = torch.Generator(device="cuda").manual_seed(1)
            dy, dh = torch.randn(y.shape, generator=g, device="cuda"), torch.randn(h.shape, generator=g, device="cuda")
            grads = torch.autograd.grad((y.float() * dy).sum() + (h * dh).sum(), list(t.values()))
            results[impl] = (y, h, grads)
        row = {
            "size": size,
            "dtype": str(dtype).split(".")[-1],
            "precision": precision,
            "y": rel(results["triton"][0], results["ref"][0]),
            "final": rel(results["triton"][1], results["ref"][1]),
        }
        row.update({f"d{k}": rel(a, b) for k, a, b in zip(t, results["triton"][2], results["ref"][2])})
        rows.append(row)
        print(" ".join(f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def cuda_time(fn, warmup: int = 3, iters: int = 10) -> float:
    """Milliseconds per call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / iters


def time_scan(batch: int, length: int, size: str) -> list[dict]:
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        t = scan_inputs(batch, length, HEADS[size], dtype)
        for impl in ("ref", "triton"):
            fwd = cuda_time(lambda impl=impl, t=t: run_scan(t, impl))

            def fwd_bwd(impl=impl, t=t):
                y, h = run_scan(t, impl)
                torch.autograd.grad(y.float().sum() + h.sum(), list(t.values()))

            row = {"size": size, "dtype": str(dtype).split(".")[-1], "impl": impl, "fwd_ms": fwd,
                   "fwd_bwd_ms": cuda_time(fwd_bwd)}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    return rows


def train_step_check(batch: int, length: int, steps: int) -> dict:
    cfg = OmegaConf.load(REPO / "conf/model/mamba2-130m.yaml")
    cfg.pretrained = False
    model = model_from_config(cfg, device="cuda")
    names = apply_method("state_offset_h", model, {"name": "state_offset_h", "lr": 1e-3})
    with torch.no_grad():  # non-zero offsets so the check sees them
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.02)
    ids = torch.randint(0, 50277, (batch, length + 1), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    out: dict = {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), "names": len(names)}
    with torch.no_grad():
        model.set_backend(impl="ref")
        ref = model(ids[:2, :512]).float()
        model.set_backend(impl="triton", settings=precision_settings("ieee"))
        out["logits_rel_err_fp32_ieee"] = rel(model(ids[:2, :512]).float(), ref)
        model.set_backend(settings=precision_settings("tf32"))
        out["logits_rel_err_fp32_tf32"] = rel(model(ids[:2, :512]).float(), ref)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for impl in ("ref", "triton"):
        model.set_backend(impl=impl)
        torch.cuda.reset_peak_memory_stats()
        ms = cuda_time(step, warmup=2, iters=steps)
        out[impl] = {"step_ms": ms, "tokens_per_s": batch * length / ms * 1000,
                     "peak_gib": torch.cuda.max_memory_allocated() / 2**30}  # fmt: skip
        print(impl, out[impl], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["130m", "1.3b"], choices=list(HEADS))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    report: dict = {"device": torch.cuda.get_device_name(), "config": DEFAULT_SETTINGS.as_dict()["ssd"],
                    "correctness": [], "scan_timing": []}  # fmt: skip
    for size in args.sizes:
        report["correctness"] += check_scan(2, args.seqlen, size)
        report["scan_timing"] += time_scan(args.batch, args.seqlen, size)
    if not args.skip_train:
        report["train_130m_state_offset_h"] = train_step_check(args.batch, args.seqlen, args.steps)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

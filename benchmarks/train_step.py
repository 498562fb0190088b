"""Time one training step (forward, backward, AdamW) and its peak memory: stateft vs the mamba_ssm peer.

Random-init weights (speed does not depend on them), batch 4 x 1024 tokens (the State-offset paper's Table 7), every
token a target. stateft: frozen weights bf16, trainable parameters fp32 (``full``: everything bf16), the Triton scan,
chunked cross-entropy; backend ``graph``: the same with the whole step (forward, backward, AdamW) captured once as a
CUDA graph and replayed (fixed shapes, as here). Peer: `benchmarks/peer.py`. Median of CUDA-event timings after
warm-up; peak = ``torch.cuda.max_memory_allocated`` from before the warm-up (and the capture) to the end (weights,
optimizer state, activations, a graph's pool).

    PYTHONPATH=. python benchmarks/train_step.py --sizes 130m 1.4b --methods state_offset_h lora
    PYTHONPATH=. python benchmarks/train_step.py --sizes mamba2-130m mamba2-1.3b --backends stateft   # Mamba-2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    MAMBA2_SIZES,
    RUNS,
    SIZES,
    model_config,
    model_recompute,
    time_cuda,
    write_results,
)
from stateft.methods import apply_method  # noqa: E402
from stateft.models.loading import build_model, cast_model  # noqa: E402
from stateft.ops.cross_entropy import chunked_cross_entropy  # noqa: E402
from stateft.ops.settings import DEFAULT_SETTINGS, KernelSettings  # noqa: E402

METHODS = ("state_offset_h", "state_offset_y", "init_state", "lora", "full")
# The State-offset paper, Table 7 (H100, batch 4 x 1024): seconds per step, GB.
PAPER = {
    ("130m", "state_offset_h"): (0.13, 4.2),
    ("1.4b", "state_offset_h"): (0.67, 18.77),
    ("2.8b", "state_offset_h"): (1.13, 31.49),
    ("130m", "lora"): (0.18, 5.44),
}
# Issue 6's targets: ms, GiB (init_state: within 1.15x of state_offset_h's time, same memory)
TARGETS = {
    ("130m", "state_offset_h"): (30, 2.5),
    ("130m", "state_offset_y"): (25, 2.5),
    ("130m", "lora"): (45, 3.2),
    ("1.4b", "state_offset_h"): (94, 10),
    ("1.4b", "lora"): (130, 12),
    ("2.8b", "state_offset_h"): (160, 17),
}


def kernel_settings() -> KernelSettings:
    """The default kernel settings, the Triton scan's launch values replaced by $STATEFT_SCAN_CONFIG (JSON, names of
    `ScanSettings`), e.g. scan_kernel.py's best."""
    raw = os.environ.get("STATEFT_SCAN_CONFIG")
    return DEFAULT_SETTINGS.with_(scan=json.loads(raw)) if raw else DEFAULT_SETTINGS


def stateft_loss(model, input_ids, labels):
    hidden = model.hidden_states(input_ids)[:, :-1]
    return chunked_cross_entropy(
        hidden=hidden, weight=model.lm_head.weight, labels=labels[:, 1:], backend=model.backend
    )


def build(size: str, method: str, backend: str, recompute: bool = True):
    model = build_model(model_config(size), device="cuda", dtype=torch.bfloat16, seed=0)
    names = apply_method(method, model, {"name": method, "lr": 1e-4})
    params = dict(model.named_parameters())
    trainable = [params[n] for n in names]
    model.set_backend(recompute=recompute, settings=kernel_settings())
    if backend == "peer":
        from benchmarks.peer import make_peer, peer_loss

        make_peer(model)
        return model, trainable, peer_loss
    if method == "full":  # everything bf16 like the peer (the trainable tensors came back fp32 masters)
        cast_model(model, torch.bfloat16)
    else:
        for p in trainable:  # fp32 adapters over bf16 frozen weights
            p.data = p.data.float()
    return model, trainable, stateft_loss


def graphed(step, opt):
    """The whole step (forward, backward, AdamW) captured once as a CUDA graph and replayed: no launch gaps.

    Warm-up runs on a side stream (compiles the kernels, settles the allocator); the gradients are None before the
    capture so the backward allocates them in the graph's pool and every replay writes, not adds, them.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    opt.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step(zero=False)

    def replay():
        graph.replay()
        return static_loss

    return replay


def measure(
    size: str, method: str, backend: str, batch: int, length: int, warmup: int, iters: int, recompute: bool
) -> dict:
    torch.manual_seed(0)
    model, trainable, loss_fn = build(size, method, "stateft" if backend == "graph" else backend, recompute)
    opt = torch.optim.AdamW(trainable, lr=1e-4, fused=True, capturable=backend == "graph")
    vocab = model.config.vocab_size
    input_ids = torch.randint(0, vocab, (batch, length), device="cuda")
    labels = input_ids.clone()

    def step(zero: bool = True):
        loss = loss_fn(model, input_ids, labels)
        loss.backward()
        opt.step()
        if zero:
            opt.zero_grad(set_to_none=True)
        return loss

    torch.cuda.synchronize()
    # the peak from here: a CUDA graph allocates its whole pool during the capture, not when it replays
    torch.cuda.reset_peak_memory_stats()
    if backend == "graph":
        step = graphed(step, opt)
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    ms, times = time_cuda(step, warmup=0, iters=iters)
    peak = torch.cuda.max_memory_allocated() / 2**30
    loss = float(step())
    return {"ms": ms, "times": times, "peak_gib": peak, "loss": loss}


def recompute(size: str, args) -> bool:
    """--recompute, or (``config``) the model config's default: the step a user of that size gets."""
    return model_recompute(size) if args.recompute == "config" else args.recompute == "on"


def run_one(size, method, backend, args) -> dict:
    if backend == "peer" and size in MAMBA2_SIZES:
        return {"error": "n/a"}  # the peer is the reference Mamba-1 setup on mamba_ssm's selective-scan kernel
    try:
        return measure(size, method, backend, args.batch, args.length, args.warmup, args.iters, recompute(size, args))
    except torch.cuda.OutOfMemoryError as err:
        return {"error": "OOM", "detail": str(err).splitlines()[0]}
    except Exception as err:  # report and go on: one broken cell must not lose the whole table
        return {"error": type(err).__name__, "detail": str(err).splitlines()[0] if str(err) else ""}
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def fmt(cell: dict | None) -> str:
    if not cell:
        return "-"
    if "error" in cell:
        return cell["error"]
    return f"{cell['ms']:.1f} / {cell['peak_gib']:.2f}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | method | stateft ms / GiB | graphed ms / GiB | peer ms / GiB | speed-up (best) | memory ratio "
        "| paper T7 s / GB | target ms / GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r.get("peer")
        ours = [c for c in (r.get("stateft"), r.get("graph")) if c and "error" not in c]
        best = min(ours, key=lambda c: c["ms"]) if ours else None
        ok = best and p and "error" not in p
        speed = f"{p['ms'] / best['ms']:.2f}x" if ok else "-"
        mem = f"{p['peak_gib'] / best['peak_gib']:.2f}x" if ok else "-"
        paper = PAPER.get((r["size"], r["method"]))
        target = TARGETS.get((r["size"], r["method"]))
        lines.append(
            f"| {r['size']} | {r['method']} | {fmt(r.get('stateft'))} | {fmt(r.get('graph'))} | {fmt(p)} | {speed} "
            f"| {mem} | {'-' if not paper else f'{paper[0]} / {paper[1]}'} | "
            f"{'-' if not target else f'<= {target[0]} / <= {target[1]}'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES + MAMBA2_SIZES)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    # graph: stateft with the whole step captured as one CUDA graph (fixed shapes, as in this benchmark)
    ap.add_argument("--backends", nargs="+", default=["stateft", "graph", "peer"], choices=["stateft", "graph", "peer"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RUNS)
    ap.add_argument("--name", default="train_step")
    # Mamba-1 on Triton remakes u and delta in the backward instead of keeping them (stateft/ops/recompute.py);
    # conf/model says per size (off at 130m, where keeping them costs 0.5 GiB)
    ap.add_argument("--recompute", choices=["config", "on", "off"], default="config")
    args = ap.parse_args()
    settings = kernel_settings()
    print("scan config:", settings.as_dict()["scan"], flush=True)
    rows = []
    for size in args.sizes:
        for method in args.methods:
            row = {"size": size, "method": method}
            for backend in args.backends:
                row[backend] = run_one(size, method, backend, args)
                print(json.dumps({"size": size, "method": method, "backend": backend, **row[backend]}), flush=True)
            rows.append(row)
    table = markdown(rows)
    setting = {"batch": args.batch, "length": args.length, "warmup": args.warmup, "iters": args.iters}
    setting["recompute"] = {size: recompute(size, args) for size in args.sizes}
    payload = {"setting": {**setting, "scan_config": settings.as_dict()["scan"]}}
    paths = write_results(args.name, {**payload, "rows": rows}, table, args.out)
    print(table)
    print("wrote", *paths)


if __name__ == "__main__":
    main()

"""Inference FLOPs (the State-offset paper's Table 8): GFLOP of one forward pass at L = 128..1024 tokens, for the
pretrained model, ``state_offset_h`` and ``lora``, sizes 130m..2.8b, counted by ``torch.utils.flop_counter``.

The model is built on the meta device (no memory, no arithmetic). The scan runs as the reference code computed it:
the recurrence step by step and the state offset as an einsum after it (``silu(z) * einsum(C, h')``), so the
counter sees the offset's matrix work (2 E N per token per layer). Like every FLOP counter it counts matrix products
(linear, einsum, conv) and not elementwise work. Batch 1.

    PYTHONPATH=. python benchmarks/flops.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stateft.ops as ops  # noqa: E402
from benchmarks.common import RUNS, SIZES, model_config, write_results  # noqa: E402
from stateft.methods import apply_method  # noqa: E402
from stateft.models.loading import build_model  # noqa: E402

LENGTHS = (128, 256, 512, 1024)
METHODS = ("pretrained", "state_offset_h", "lora")


def reference_style_scan(
    *, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
    initial_state=None, h_offset=None, y_offset=None, return_last_state=False, dz_into=None, backend="auto",
):  # fmt: skip
    """A FLOP-equivalent stand-in for the scan on the meta device, as the reference code computed it.

    The recurrence has one matrix product per step, the read-out C_t h_t (2 b d n FLOP; `scan_ref` does it as an
    einsum per step): here it is one einsum over all steps, on placeholder states (meta tensors hold no values). The
    state offset is added after it with an einsum, as the reference code did: 2 b d n FLOP per step more.
    """
    b, d, length = u.shape
    h = torch.empty(b, d, A.shape[1], length, device=u.device)
    y = torch.einsum("bdnl,bnl->bdl", h, C.float())
    if h_offset is not None:
        y = y + torch.einsum("bnl,dn->bdl", C.float(), h_offset.float())
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(u.dtype)
    return (y, h[..., -1]) if return_last_state else y


def count(size: str, method: str, length: int) -> float:
    model = build_model(model_config(size), device="meta")
    if method != "pretrained":
        apply_method(method, model, {"name": method, "lr": 1e-4})
    ids = torch.zeros(1, length, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids)
    return counter.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    ap.add_argument("--out", type=Path, default=RUNS)
    args = ap.parse_args()
    ops.selective_scan = reference_style_scan  # the mixer looks it up through its module
    import stateft.models.mamba1 as mamba1

    mamba1.selective_scan = reference_style_scan
    rows = []
    for size in args.sizes:
        for length in args.lengths:
            row = {"size": size, "length": length}
            for method in METHODS:
                row[method] = count(size, method, length)
            rows.append(row)
            print(row, flush=True)
    lines = [
        "| model | L | pretrained GFLOP | state_offset_h GFLOP (overhead) | lora GFLOP (overhead) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        base = r["pretrained"]
        cells = [f"{r[m]:.2f} (+{100 * (r[m] - base) / base:.3f}%)" for m in ("state_offset_h", "lora")]
        lines.append(f"| {r['size']} | {r['length']} | {base:.2f} | {cells[0]} | {cells[1]} |")
    table = "\n".join(lines) + "\n"
    write_results("flops", {"setting": {"batch": 1, "counter": "torch.utils.flop_counter"}, "rows": rows}, table,
                  args.out)  # fmt: skip
    print(table)


if __name__ == "__main__":
    main()

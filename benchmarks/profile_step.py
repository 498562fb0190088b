"""Where one training step's GPU time goes: torch.profiler's kernel table for one size/method/backend.

PYTHONPATH=. python benchmarks/profile_step.py --size 130m --method state_offset_h
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_step import build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="130m")
    ap.add_argument("--method", default="state_offset_h")
    ap.add_argument("--backend", default="stateft")
    ap.add_argument("--rows", type=int, default=30)
    args = ap.parse_args()
    model, trainable, loss_fn = build(args.size, args.method, args.backend)
    opt = torch.optim.AdamW(trainable, lr=1e-4, fused=True)
    ids = torch.randint(0, model.config.vocab_size, (4, 1024), device="cuda")

    def step():
        loss_fn(model, ids, ids).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows, max_name_column_width=70))


if __name__ == "__main__":
    main()

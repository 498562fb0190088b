"""Many adapters in one batch (`stateft.serve`) against the same requests served adapter by adapter.

A random-init base (``--size``), ``--adapters`` State-offset (h') adapters with random offsets, ``--requests``
requests spread over them round-robin (random prompts of 64-256 tokens, ``--new-tokens`` new tokens each, greedy or
``--beams``). Mixed: one ``AdapterBank.generate`` over all requests. Adapter by adapter: one
``AdapterBank.generate`` per adapter over its own requests, one after the other. Reports tokens/s, the mean request
latency of each way (a request finishes with its batch) and whether every request got the same tokens both ways.

    python benchmarks/serve.py --size 130m [--adapters 8 --requests 32 --new-tokens 64 --beams 1] [--device cuda]

On a GPU the result files go to ``--out`` (``serve_<date>_<device>.json`` / ``.md``); on a CPU it is a check of the
script (e.g. ``--size tiny --new-tokens 4``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _config(size: str):
    if size == "tiny":
        from tests.conftest import TINY

        return TINY
    from benchmarks.common import model_config

    return model_config(size)


def _adapters(config, count: int, folder: Path, device: str) -> list[Path]:
    """``count`` state_offset_h adapters of the seed-0 base, their offsets random (seeded per adapter)."""
    from stateft.adapters import save_adapter
    from stateft.methods import apply_method
    from stateft.models.loading import build_model

    paths = []
    for i in range(count):
        model = build_model(config, seed=0, device=device)
        names = apply_method("state_offset_h", model, {"name": "state_offset_h"})
        params = dict(model.named_parameters())
        g = torch.Generator().manual_seed(1000 + i)
        with torch.no_grad():
            for name in names:
                params[name].add_(0.05 * torch.randn(params[name].shape, generator=g).to(params[name].device))
        paths.append(save_adapter(folder / f"a{i}", model, base_model={"name": "bench"}))
        del model
    return paths


def _timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="130m")
    ap.add_argument("--adapters", type=int, default=8)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs")
    args = ap.parse_args()

    from stateft.models.loading import build_model
    from stateft.serve.bank import AdapterBank

    config = _config(args.size)
    folder = Path(tempfile.mkdtemp(prefix="stateft_serve_"))
    paths = _adapters(config, args.adapters, folder, "cpu")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    bank = AdapterBank(build_model(config, seed=0, device=args.device, dtype=dtype).eval())
    names = [f"a{i}" for i in range(args.adapters)]
    for name, path in zip(names, paths):
        bank.load(name, path)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(64, 257, (args.requests,), generator=g).tolist()
    prompts = [torch.randint(1, config.vocab_size, (n,), generator=g).tolist() for n in lengths]
    owners = [names[i % args.adapters] for i in range(args.requests)]
    kw = dict(max_new_tokens=args.new_tokens, num_beams=args.beams, eos_id=None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device == "cuda")

    with autocast:
        bank.generate(prompts[:2], owners[:2], **{**kw, "max_new_tokens": 2})  # compile and warm up
        mixed, mixed_s = _timed(lambda: bank.generate(prompts, owners, **kw))
        separate: list[list[int] | None] = [None] * args.requests
        finished_at: list[float] = [0.0] * args.requests
        start = time.perf_counter()
        for name in names:
            rows = [i for i, owner in enumerate(owners) if owner == name]
            out, _ = _timed(
                lambda rows=rows, name=name: bank.generate([prompts[i] for i in rows], [name] * len(rows), **kw)
            )
            for i, tokens in zip(rows, out):
                separate[i], finished_at[i] = tokens, time.perf_counter() - start
    new_tokens = sum(len(t) for t in mixed)
    row = {
        "size": args.size,
        "adapters": args.adapters,
        "requests": args.requests,
        "new_tokens": args.new_tokens,
        "beams": args.beams,
        "mixed_tokens_per_s": new_tokens / mixed_s,
        "separate_tokens_per_s": new_tokens / max(finished_at),
        "speedup": max(finished_at) / mixed_s,
        "mixed_mean_latency_s": mixed_s,
        "separate_mean_latency_s": sum(finished_at) / len(finished_at),
        "identical": mixed == separate,
        "differing": sum(a != b for a, b in zip(mixed, separate)),
    }
    print(json.dumps(row))
    table = (
        "| model | adapters | requests | mixed tokens/s | adapter by adapter | speed-up "
        "| mean latency mixed / separate s | identical |\n|---|---|---|---|---|---|---|---|\n"
        f"| {args.size} | {args.adapters} | {args.requests} | {row['mixed_tokens_per_s']:.0f} | "
        f"{row['separate_tokens_per_s']:.0f} | {row['speedup']:.2f}x | {row['mixed_mean_latency_s']:.2f} / "
        f"{row['separate_mean_latency_s']:.2f} | {row['identical']} |\n"
    )
    print(table)
    if args.device == "cuda":
        from benchmarks.common import write_results

        print(
            "written:",
            *write_results("serve", {"args": {k: str(v) for k, v in vars(args).items()}, "row": row}, table, args.out),
        )


if __name__ == "__main__":
    main()

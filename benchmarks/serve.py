"""Many adapters in one batch (`stateft.serve`) against the same requests served adapter by adapter.

A random-init base (``--size``), ``--adapters`` adapters with random trained tensors, their methods taken in turn from
``--methods`` (``state_offset_h``: h' offsets; ``lora``: LoRA on the paper's targets, per-row low-rank updates; e.g.
``state_offset_h,lora`` mixes both in one batch), ``--requests`` requests spread over them round-robin (random
prompts of 64-256 tokens, ``--new-tokens`` new tokens each, greedy or ``--beams``). Mixed: one
``AdapterBank.generate`` over all requests. Adapter by adapter: one ``AdapterBank.generate`` per adapter over its own
requests, one after the other. Reports tokens/s, the mean request latency of each way (a request finishes with its
batch) and whether every request got the same tokens both ways.

``--continuous``: greedy requests whose limits vary (``--new-tokens`` / 4 to ``--new-tokens``), all waiting at once,
served ``--max-batch`` rows at a time: by the server's worker (`stateft.serve.batcher.Batcher`: a finished row's slot
is refilled from the queue at the next step) against static batches of ``--max-batch`` requests in arrival order
(each decoded to its longest limit, the next batch starting when it ends). Reports tokens/s, mean latency and
identical outputs of both.

    python benchmarks/serve.py --size 130m [--adapters 8 --requests 32 --new-tokens 64 --beams 1] [--device cuda]
    python benchmarks/serve.py --size 130m --methods state_offset_h,lora    # a batch mixing LoRA and h' adapters
    python benchmarks/serve.py --size 130m --methods state_offset_h,lora --continuous --max-batch 8

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


METHOD_OPTIONS = {"state_offset_h": {}, "lora": {"dropout": 0.0}}


def _adapters(config, methods: list[str], count: int, folder: Path, device: str) -> list[Path]:
    """``count`` adapters of the seed-0 base, adapter i of ``methods[i % len(methods)]``, its trainable tensors moved
    off their init by seeded noise (LoRA's B starts at zero: without it the adapter would change nothing)."""
    from stateft.adapters import save_adapter
    from stateft.methods import apply_method
    from stateft.models.loading import build_model

    paths = []
    for i in range(count):
        method = methods[i % len(methods)]
        model = build_model(config, seed=0, device=device)
        names = apply_method(method, model, {"name": method, **METHOD_OPTIONS[method]})
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


def _continuous(bank, prompts: list[list[int]], owners: list[str], args, autocast) -> tuple[dict, str]:
    """Continuous batching (the server's Batcher) against static batches of the same size, greedy."""
    from stateft.serve.batcher import Batcher, Limits

    g = torch.Generator().manual_seed(1)
    limits = torch.randint(max(args.new_tokens // 4, 1), args.new_tokens + 1, (len(prompts),), generator=g).tolist()
    with autocast():  # warm up
        bank.generate(prompts[:2], owners[:2], max_new_tokens=2, eos_id=None)
        static: list[list[int]] = []
        static_done: list[float] = []
        start = time.perf_counter()
        for first in range(0, len(prompts), args.max_batch):
            rows = range(first, min(first + args.max_batch, len(prompts)))
            out, _ = _timed(
                lambda rows=rows: bank.generate(
                    [prompts[i] for i in rows], [owners[i] for i in rows], max(limits[i] for i in rows), eos_id=None
                )
            )
            static += [tokens[: limits[i]] for i, tokens in zip(rows, out)]
            static_done += [time.perf_counter() - start] * len(rows)
    batcher = Batcher(bank, Limits(max_new_tokens=max(limits), max_batch=args.max_batch), eos_id=None,
                      worker_context=autocast)  # fmt: skip
    futures = [batcher.submit(p, o, n) for p, o, n in zip(prompts, owners, limits)]
    done_at = [0.0] * len(prompts)
    for i, future in enumerate(futures):
        future.add_done_callback(lambda _, i=i: done_at.__setitem__(i, time.perf_counter() - start))
    start = time.perf_counter()
    batcher.start()
    continuous = [f.result() for f in futures]
    batcher.close()
    new_tokens = sum(len(t) for t in continuous)
    row = {
        "size": args.size,
        "adapters": args.adapters,
        "methods": args.methods,
        "requests": args.requests,
        "max_batch": args.max_batch,
        "new_tokens": f"{min(limits)}-{max(limits)}",
        "continuous_tokens_per_s": new_tokens / max(done_at),
        "static_tokens_per_s": new_tokens / max(static_done),
        "speedup": max(static_done) / max(done_at),
        "continuous_mean_latency_s": sum(done_at) / len(done_at),
        "static_mean_latency_s": sum(static_done) / len(static_done),
        "identical": continuous == static,
        "differing": sum(a != b for a, b in zip(continuous, static)),
    }
    table = (
        "| model | adapters | methods | requests | rows | continuous tokens/s | static batches | speed-up "
        "| mean latency continuous / static s | identical |\n|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {args.size} | {args.adapters} | {args.methods} | {args.requests} | {args.max_batch} | "
        f"{row['continuous_tokens_per_s']:.0f} | {row['static_tokens_per_s']:.0f} | {row['speedup']:.2f}x | "
        f"{row['continuous_mean_latency_s']:.2f} / {row['static_mean_latency_s']:.2f} | {row['identical']} |\n"
    )
    return row, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="130m")
    ap.add_argument("--adapters", type=int, default=8)
    ap.add_argument("--methods", default="state_offset_h", help=f"comma-separated, of: {', '.join(METHOD_OPTIONS)}")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--continuous", action="store_true", help="continuous batching against static batches (greedy)")
    ap.add_argument("--max-batch", type=int, default=8, help="rows at a time with --continuous")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs")
    args = ap.parse_args()

    from stateft.models.loading import build_model
    from stateft.serve.bank import AdapterBank

    methods = args.methods.split(",")
    if not set(methods) <= set(METHOD_OPTIONS) or args.adapters < 1:
        ap.error(f"--methods takes {', '.join(METHOD_OPTIONS)}, --adapters at least 1")
    if args.continuous and args.beams != 1:
        ap.error("--continuous compares greedy decoding (static beam batches cannot mix limits)")
    config = _config(args.size)
    folder = Path(tempfile.mkdtemp(prefix="stateft_serve_"))
    paths = _adapters(config, methods, args.adapters, folder, "cpu")
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

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device == "cuda")

    if args.continuous:
        _report(args, *_continuous(bank, prompts, owners, args, autocast))
        return
    with autocast():
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
        "methods": args.methods,
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
    table = (
        "| model | adapters | methods | requests | mixed tokens/s | adapter by adapter | speed-up "
        "| mean latency mixed / separate s | identical |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| {args.size} | {args.adapters} | {args.methods} | {args.requests} | {row['mixed_tokens_per_s']:.0f} | "
        f"{row['separate_tokens_per_s']:.0f} | {row['speedup']:.2f}x | {row['mixed_mean_latency_s']:.2f} / "
        f"{row['separate_mean_latency_s']:.2f} | {row['identical']} |\n"
    )
    _report(args, row, table)


def _report(args, row: dict, table: str) -> None:
    print(json.dumps(row))
    print(table)
    if args.device == "cuda":
        from benchmarks.common import write_results

        print(
            "written:",
            *write_results(
                "serve_continuous" if args.continuous else "serve",
                {"args": {k: str(v) for k, v in vars(args).items()}, "row": row},
                table,
                args.out,
            ),
        )


if __name__ == "__main__":
    main()

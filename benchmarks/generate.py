"""Decoding throughput with an adapter: greedy and beam-5 generation, new tokens per second.

Random-init weights (speed does not depend on them), bf16, ``state_offset_h`` applied (its h' is added at every
read-out, so decoding pays for it), a 128-token prompt, 128 new tokens (EOS disabled so every run is full length);
each with the eager step and with the recorded one (`stateft.decode_graph`, the default on CUDA), checked to give the
same tokens.

    PYTHONPATH=. python benchmarks/generate.py --sizes 130m 1.4b mamba2-130m mamba2-1.3b
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RUNS, model_config, write_results  # noqa: E402
from stateft.generation import generate  # noqa: E402
from stateft.methods import apply_method  # noqa: E402
from stateft.models.loading import build_model  # noqa: E402


def tokens_per_second(model, prompt: list[int], new_tokens: int, beams: int, repeats: int, graph: bool):
    """(median new tokens per second, the tokens of the last run)."""
    kw = dict(num_beams=beams, eos_id=None, cuda_graph=graph)
    generate(model, prompt, max_new_tokens=8, **kw)  # warm-up
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = generate(model, prompt, max_new_tokens=new_tokens, **kw)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    assert len(out) == new_tokens
    return new_tokens / sorted(times)[len(times) // 2], out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["130m", "1.4b"])
    ap.add_argument("--method", default="state_offset_h")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RUNS)
    ap.add_argument("--name", default="generate")
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        model = build_model(model_config(size), device="cuda", dtype=torch.bfloat16, seed=0).eval()
        apply_method(args.method, model, {"name": args.method, "lr": 1e-4})
        prompt = torch.randint(0, model.config.vocab_size, (args.prompt,), generator=torch.Generator().manual_seed(0))
        row = {"size": size, "method": args.method}
        for name, beams in (("greedy", 1), ("beam5", 5)):
            row[name], eager = tokens_per_second(model, prompt.tolist(), args.new, beams, args.repeats, False)
            row[name + "_graph"], graphed = tokens_per_second(
                model, prompt.tolist(), args.new, beams, args.repeats, True
            )
            row[name + "_same_tokens"] = eager == graphed
            print(size, name, f"eager {row[name]:.1f}, graph {row[name + '_graph']:.1f} tokens/s", flush=True)
        rows.append(row)
        del model
        torch.cuda.empty_cache()
    lines = [
        "| model | method | greedy tokens/s eager / graph | beam-5 tokens/s eager / graph | same tokens |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['size']} | {r['method']} | {r['greedy']:.1f} / {r['greedy_graph']:.1f} | {r['beam5']:.1f} / "
        f"{r['beam5_graph']:.1f} | {r['greedy_same_tokens'] and r['beam5_same_tokens']} |"
        for r in rows
    ]
    setting = {"prompt": args.prompt, "new_tokens": args.new, "batch": 1, "dtype": "bf16"}
    paths = write_results(args.name, {"setting": setting, "rows": rows}, "\n".join(lines) + "\n", args.out)
    print("\n".join(lines))
    print("wrote", *paths)


if __name__ == "__main__":
    main()

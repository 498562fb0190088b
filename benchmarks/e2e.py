"""End to end: what a user of ``train.py`` and ``eval.py`` gets, against the fixed-shape step benchmark and the peer.

For each (model, method): ``train.py`` with its defaults on a GPU (``trainer=gpu``; random-init weights; Lightning,
the data module, logging and checkpoints as a user runs them) for ``--steps`` steps on Spider-shaped rows: the real
Spider dev questions and schemas (tests/fixtures/release) as both splits, stand-in databases built from the schemas.
Then ``eval.py`` on the saved adapter over ``--examples`` validation examples with beam 5, twice: the dataset's
``eval_batch_size`` (batched decoding) and 1 (one example at a time); the predictions must be identical. Then, in
this process, the step benchmark (`benchmarks/train_step.py`: the whole step as one CUDA graph) and the peer
(mamba_ssm's kernel, `benchmarks/peer.py`) at the batch size and the mean batch length ``train.py`` saw.

    python benchmarks/e2e.py --sizes 130m 1.4b --methods state_offset_h lora [--out DIR]

Writes ``e2e_<date>_<device>.json`` / ``.md`` (one row per (model, method)): ``train_tokens_per_s`` (train.py,
the median over its logging windows after the first two), ``train_tokens_per_s_step_benchmark``,
``train_tokens_per_s_peer``, ``eval_examples_per_s`` (batched) and ``eval_examples_per_s_single``,
``predictions_identical``, ``train_peak_gib`` (train.py) and ``peak_gib_step_benchmark_longest`` (the step
benchmark at train.py's longest batch shape, which sets train.py's peak). ``--trainer default``
runs the train.py and eval.py part on the CPU (a check of the script, e.g. with ``--sizes tiny``).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RELEASE = REPO / "tests" / "fixtures" / "release" / "spider"


def spider_folder(root: Path) -> Path:
    """A Spider release layout from the repository's dev set: dev.json as both train_spider.json and dev.json,
    tables.json, and a stand-in SQLite database per schema (tests/metrics/spider_db.py)."""
    from tests.metrics.spider_db import build_all

    root.mkdir(parents=True, exist_ok=True)
    dev = gzip.decompress((RELEASE / "dev.json.gz").read_bytes())
    tables = gzip.decompress((RELEASE / "tables.json.gz").read_bytes())
    for name, data in (("dev.json", dev), ("train_spider.json", dev), ("tables.json", tables)):
        (root / name).write_bytes(data)
    used = {row["db_id"] for row in json.loads(dev)}
    build_all([t for t in json.loads(tables) if t["db_id"] in used], root / "database", rows_per_table=4)
    return root


def run(command: list[str], log: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    with log.open("w") as f:
        done = subprocess.run([sys.executable, *command], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(command[:3])} ... failed ({done.returncode}):\n" + "\n".join(tail))


def train_rates(run_dir: Path) -> dict[str, float]:
    """Medians over train.py's logging windows, the first two left out (recording, compiling)."""
    rows = list(csv.DictReader(next(run_dir.rglob("metrics.csv")).open()))
    windows = [r for r in rows if r.get("train/tokens_per_sec")]
    kept = windows[2:] or windows

    def median(key: str) -> float | None:
        values = [float(r[key]) for r in kept if r.get(key)]
        return statistics.median(values) if values else None

    tokens, samples = median("train/tokens_per_sec"), median("train/samples_per_sec")
    peaks = [float(r["train/peak_gib"]) for r in windows if r.get("train/peak_gib")]
    longest = [float(r["train/longest_batch"]) for r in windows if r.get("train/longest_batch")]
    return {
        "tokens_per_s": tokens,
        "mean_length": tokens / samples if tokens and samples else None,
        "peak_gib": max(peaks) if peaks else None,
        "longest_batch": int(max(longest)) if longest else None,
        "windows": len(windows),
    }


def evaluate(
    adapter: Path, data: Path, out: Path, batch: int | None, args, invariant: bool = False
) -> tuple[float, list[str]]:
    command = [
        "eval.py",
        f"adapter={adapter}",
        "split=validation",
        "dataset=spider",
        f"dataset.path={data}",
        f"dataset.max_eval_examples={args.examples}",
        "dataset.num_beams=5",
        f"dataset.max_new_tokens={args.new_tokens}",
        f"trainer={args.trainer}",
        f"hydra.run.dir={out}",
    ]
    if batch is not None:
        command.append(f"dataset.eval_batch_size={batch}")
    if invariant:
        command.append("dataset.batch_invariant=true")
    run(command, out.with_suffix(".log"))
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = [json.loads(line)["prediction"] for line in (out / "predictions_validation.jsonl").open()]
    return metrics["examples_per_sec"], predictions


def one(size: str, method: str, data: Path, work: Path, args) -> dict:
    model = f"mamba-{size}" if not size.startswith("mamba2-") else size
    tag = f"{size}_{method}"
    train_dir = work / f"train_{tag}"
    run(
        [
            "train.py",
            f"model={model}",
            "model.pretrained=false",
            f"method={method}",
            "dataset=spider",
            f"dataset.path={data}",
            f"trainer={args.trainer}",
            "logger=csv",
            f"trainer.max_steps={args.steps}",
            "trainer.limit_val_batches=0",
            "test=false",
            "checkpoint.every_n_train_steps=0",
            "trainer.log_every_n_steps=10",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={train_dir}",
        ],
        work / f"train_{tag}.log",
    )
    row: dict = {"size": size, "method": method, **{f"train_{k}": v for k, v in train_rates(train_dir).items()}}
    # one at a time and batched; with --invariant the same two with batch-invariant products (keys end _invariant)
    for suffix, invariant in [("", False), ("_invariant", True)][: 2 if args.invariant else 1]:
        mark = "i" if invariant else ""
        single, single_predictions = evaluate(
            train_dir / "adapter", data, work / f"eval1{mark}_{tag}", 1, args, invariant
        )
        batched, predictions = evaluate(
            train_dir / "adapter", data, work / f"eval{mark}_{tag}", args.eval_batch, args, invariant
        )
        row.update({
            f"eval_examples_per_s{suffix}": batched,
            f"eval_examples_per_s_single{suffix}": single,
            f"eval_speedup{suffix}": batched / single,
            f"predictions_identical{suffix}": predictions == single_predictions,
            f"predictions_differing{suffix}": sum(a != b for a, b in zip(predictions, single_predictions)),
        })  # fmt: skip
    return row


def step_benchmark(row: dict, args) -> dict:
    """The graphed step benchmark and the peer at (batch, train.py's mean batch length): tokens/s; and the step
    benchmark's peak at the longest shape train.py recorded (its longest batch rounded up to the 128-token bucket):
    train.py's peak is set by its longest batch, not by its mean one."""
    from benchmarks.train_step import run_one

    size, method = row["size"], row["method"]
    length = int(round(row["train_mean_length"]))
    out: dict = {"step_benchmark_length": length}
    for backend, key in (("graph", "step_benchmark"), ("peer", "peer")):
        if backend == "peer" and args.no_peer:
            continue
        opts = argparse.Namespace(batch=args.batch, length=length, warmup=2, iters=6, recompute="config")
        cell = run_one(size, method, backend, opts)
        if "error" in cell:
            out[f"train_tokens_per_s_{key}"] = cell["error"]
            continue
        out[f"train_tokens_per_s_{key}"] = args.batch * length / (cell["ms"] / 1e3)
        out[f"peak_gib_{key}"] = cell["peak_gib"]
    if row.get("train_longest_batch"):
        longest = min(-(-row["train_longest_batch"] // 128) * 128, 1536)
        opts = argparse.Namespace(batch=args.batch, length=longest, warmup=1, iters=2, recompute="config")
        cell = run_one(size, method, "graph", opts)
        out["memory_length"] = longest
        out["peak_gib_step_benchmark_longest"] = cell.get("peak_gib", cell.get("error"))
    return out


def markdown(rows: list[dict]) -> str:
    def f(v, spec=".0f"):
        return "-" if v is None or isinstance(v, str) else format(v, spec)

    lines = [
        "| model | method | train.py tokens/s | step benchmark | ratio | peer | vs peer | train.py GiB | step GiB "
        "| eval ex/s batched | one at a time | speed-up | identical |",
        "|---" * 13 + "|",
    ]
    for r in rows:
        ours, step, peer = (
            r.get("train_tokens_per_s"),
            r.get("train_tokens_per_s_step_benchmark"),
            r.get("train_tokens_per_s_peer"),
        )
        ratio = ours / step if isinstance(step, float) and ours else None
        vs_peer = ours / peer if isinstance(peer, float) and ours else None
        lines.append(
            f"| {r['size']} | {r['method']} | {f(ours)} | {f(step)} | {f(ratio, '.2f')} | {f(peer)} | "
            f"{f(vs_peer, '.2f')} | {f(r.get('train_peak_gib'), '.2f')} | "
            f"{f(r.get('peak_gib_step_benchmark_longest'), '.2f')} | "
            f"{f(r['eval_examples_per_s'], '.2f')} | {f(r['eval_examples_per_s_single'], '.2f')} | "
            f"{f(r['eval_speedup'], '.1f')}x | {r['predictions_identical']} |"
        )
    invariant = [r for r in rows if "eval_examples_per_s_invariant" in r]
    if invariant:  # dataset.batch_invariant=true: both evaluations' products batch-invariant
        lines += [
            "",
            "| model | method | invariant ex/s batched | one at a time | speed-up | identical |",
            "|---" * 6 + "|",
        ]
        for r in invariant:
            lines.append(
                f"| {r['size']} | {r['method']} | {f(r['eval_examples_per_s_invariant'], '.2f')} | "
                f"{f(r['eval_examples_per_s_single_invariant'], '.2f')} | {f(r['eval_speedup_invariant'], '.1f')}x | "
                f"{r['predictions_identical_invariant']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["130m", "1.4b"])
    ap.add_argument("--methods", nargs="+", default=["state_offset_h", "lora"])
    ap.add_argument("--steps", type=int, default=80, help="training steps per run")
    ap.add_argument("--examples", type=int, default=32, help="validation examples per evaluation")
    ap.add_argument("--new-tokens", type=int, default=64, help="dataset.max_new_tokens (random weights never stop)")
    ap.add_argument("--batch", type=int, default=4, help="the step benchmark's batch (conf/dataset/spider.yaml's)")
    ap.add_argument("--trainer", default="gpu", help="gpu, or default for a CPU check of the script")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument(
        "--eval-batch", type=int, help="dataset.eval_batch_size of the batched evaluations (default: its own)"
    )
    ap.add_argument("--invariant", action="store_true", help="also evaluate with dataset.batch_invariant=true")
    ap.add_argument("--wait-for", type=Path, help="a file to wait for before the step benchmarks (the peer's build)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stateft_e2e_"))
    data = spider_folder(work / "spider")
    rows = []
    for size in args.sizes:
        for method in args.methods:
            try:
                rows.append(one(size, method, data, work, args))
            except RuntimeError as err:  # one broken cell must not lose the table
                print(err, file=sys.stderr)
                continue
            print(json.dumps(rows[-1]), flush=True)
    if args.trainer == "gpu":  # after every train.py and eval.py run: the peer may still be compiling until here
        if args.wait_for:
            while not args.wait_for.exists():
                time.sleep(5)
        for row in rows:
            if row["train_mean_length"]:
                row.update(step_benchmark(row, args))
                print(json.dumps(row), flush=True)
    table = markdown(rows)
    print(table)
    if args.trainer == "gpu":
        from benchmarks.common import write_results

        paths = write_results(
            "e2e", {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, table, args.out
        )
        print("written:", *paths)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

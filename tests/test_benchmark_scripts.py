"""The GPU benchmark scripts still run, on the CPU with the tiny model: a broken script found on the GPU machine
costs its device time. Each checks its own answers (identical tokens / predictions both ways); the timings here
mean nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("extra", [[], ["--methods", "state_offset_h,lora"], ["--continuous", "--max-batch", "3"]])
def test_serve_benchmark_runs(extra):
    rows = _run("serve.py", "--size", "tiny", "--new-tokens", "4", "--requests", "6", "--adapters", "3", *extra)
    assert rows
    assert all(row["identical"] for row in rows)


def test_e2e_benchmark_runs(tmp_path):
    """train.py, then eval.py one at a time and batched (``--invariant`` adds two more eval.py runs of the same
    function with one more override: left out here for CI's time)."""
    rows = _run(
        "e2e.py", "--trainer", "default", "--sizes", "tiny", "--methods", "state_offset_h", "--examples", "3",
        "--steps", "2", "--new-tokens", "3", "--no-peer", "--eval-batch", "2", "--out", str(tmp_path),
    )  # fmt: skip
    assert len(rows) == 1
    row = rows[0]
    assert row["predictions_identical"]
    assert row["eval_examples_per_s"] > 0
    assert row["eval_examples_per_s_single"] > 0

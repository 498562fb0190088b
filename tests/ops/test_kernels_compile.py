"""The scan kernels compile for an H100 (sm_90) on this CPU-only machine, with Triton's bundled ptxas, for each
variant of optional inputs (`benchmarks/sass_report.py`: the Mamba-1 mixer's, every one on over four segments, none).

The other CPU tests run the kernels in Triton's interpreter, which executes their Python and so misses what only the
compiler checks: a variable typed once per scope, tensor layouts, register and shared-memory limits. (A reused `_`
of another shape inside an `if` passed the interpreter and failed to compile on the GPU.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("variant", ["model", "all", "bare"])
def test_scan_kernels_compile_for_sm90(variant, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, do not interpret
    cmd = [sys.executable, "benchmarks/sass_report.py", "--variant", variant, "--shape", "2", "64", "16", "256"]
    run = subprocess.run(
        [*cmd, "--sass", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    compiled = {line.split()[0] for line in run.stdout.splitlines() if line.endswith(tuple("0123456789"))}
    want = {"scan_fwd_kernel", "scan_bwd_kernel"} | (
        {"seg_carry_kernel", "scan_bwd_local_kernel"} if variant == "all" else set()
    )
    assert want <= compiled, run.stdout

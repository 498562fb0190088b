"""benchmarks/sass_report.py: the scan kernels compiled for an H100 (sm_90) on a machine without a GPU, through the
real launch path (in a subprocess: the tests run Triton's interpreter, which cannot compile), for each variant of
optional inputs (the Mamba-1 mixer's; every one on, over four segments; none); and the fused conv's kernels.

The other CPU tests run the kernels in the interpreter, which executes their Python and so misses what only the
compiler checks: a variable typed once per scope (a reused `_` of another shape inside an `if` passed the interpreter
and failed to compile on the GPU), layouts, registers. For the mixer's variant this also guards what the compiler
made: no spills, and no lane shuffles beyond the sums over states and channels (Triton's reverse scans shuffled ~320
times per 4-step backward block; `triton_scan_kernels._flip` replaced them). Both kernel sets: the Triton kernels and
the Gluon ones (`gluon_scan_kernels`, which only a GPU can run: this is their CPU check)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]
KERNELS = {
    "triton": {"scan_fwd_kernel", "scan_bwd_kernel"},
    "gluon": {"scan_fwd_gluon_kernel", "scan_bwd_gluon_kernel"},
}
# lane shuffles per step of a backward block: Triton's sums over n and d take ~31 (a reverse scan would add ~80); the
# Gluon kernel has none (its sums over channels and states go through the layout exchanges it makes anyway)
SHUFFLES_PER_STEP = {"triton": 50, "gluon": 1}
HAS_PTXAS = (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


def _sass_report(args: list[str], tmp_path: Path) -> tuple[str, dict[str, dict[str, int]]]:
    """Run benchmarks/sass_report.py with ``args``: (its stdout, the report of each kernel by name)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, do not interpret
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "benchmarks/sass_report.py", *args, "--sass", str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    reports = {}
    for line in run.stdout.splitlines():
        if line.startswith(("scan_", "seg_", "conv_")):
            name, rest = line.split(" ", 1)
            reports[name] = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", rest)}
    return run.stdout, reports


@pytest.mark.skipif(not HAS_PTXAS, reason="no bundled ptxas")
@pytest.mark.parametrize("kernels", ["triton", "gluon"])
@pytest.mark.parametrize("variant", ["model", "all", "bare"])
def test_scan_kernels_compile_for_sm90(variant, kernels, tmp_path):
    args = ["--variant", variant, "--shape", "2", "64", "16", "256", "--config", f'{{"kernels": "{kernels}"}}']
    stdout, reports = _sass_report(args, tmp_path)
    # "all" runs four segments: the segment kernels too
    segments = {"seg_carry_kernel", "scan_bwd_local_kernel"} if variant == "all" else set()
    assert set(reports) == KERNELS[kernels] | segments, stdout
    for name, r in reports.items():
        assert r["regs"] <= 255, (name, r)
        assert min(r["FFMA"], r["LDG"]) > 0, (name, r)
        assert (tmp_path / f"{name}.sass").stat().st_size > 0
    if variant == "model":
        for name in KERNELS[kernels]:
            assert reports[name]["spill_bytes"] == 0, (name, reports[name])
        steps = int(re.search(r"'BLOCK_T': (\d+)", stdout).group(1))  # the subprocess's (default) config
        bwd = reports["scan_bwd_kernel" if kernels == "triton" else "scan_bwd_gluon_kernel"]
        assert bwd["SHFL"] < SHUFFLES_PER_STEP[kernels] * steps, bwd


@pytest.mark.skipif(not HAS_PTXAS, reason="no bundled ptxas")
def test_conv_kernels_compile_for_sm90(tmp_path):
    """The fused conv as the mixer runs it (frozen, u used twice): the Gluon forward and one-pass backward (only a GPU
    runs them: this is their CPU check), without spills and with no lane shuffles (their shifts are renamings)."""
    stdout, reports = _sass_report(["--op", "conv", "--shape", "2", "256", "16", "256"], tmp_path)
    assert set(reports) == {"conv_silu_fwd_gluon_kernel", "conv_silu_bwd_gluon_kernel"}, stdout
    for name, r in reports.items():
        assert r["spill_bytes"] == 0, (name, r)
        assert r["regs"] <= 255, (name, r)
        assert r["SHFL"] == 0, (name, r)

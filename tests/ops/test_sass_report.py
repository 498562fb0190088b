"""benchmarks/sass_report.py: the scan kernels compiled for an H100 (sm_90) on a machine without a GPU, through the
real launch path (in a subprocess: the tests run Triton's interpreter, which cannot compile). Guards what the compiler
made of them: no spills, and no lane shuffles beyond the sums over states and channels (Triton's reverse scans
shuffled ~320 times per backward block; `triton_scan_kernels._flip` replaced them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists(), reason="no bundled ptxas"
)
def test_scan_kernels_compile_for_sm90_without_spills_or_reverse_scan_shuffles(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "benchmarks/sass_report.py", "--shape", "2", "64", "16", "64", "--sass", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=True).stdout
    reports = {}
    for line in out.splitlines():
        if line.startswith("scan_"):
            name, rest = line.split(" ", 1)
            reports[name] = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", rest)}
    assert set(reports) == {"scan_fwd_kernel", "scan_bwd_kernel"}, out
    for name, r in reports.items():
        assert r["spill_bytes"] == 0, (name, r)
        assert r["regs"] <= 255, (name, r)
        assert min(r["MUFU"], r["FFMA"], r["LDG"]) > 0, (name, r)
        assert (tmp_path / f"{name}.sass").stat().st_size > 0
    # the sums over n and d in the backward take ~120-130 shuffles per block; a reverse scan would add ~320
    assert reports["scan_bwd_kernel"]["SHFL"] < 200, reports["scan_bwd_kernel"]

"""train.py with a deep S4: an S4-only method on a Mamba, a Mamba method on an S4, a missing dataset folder and the
other mismatches each end with one ``error:`` line and exit code 2 (as a user runs it), and write no results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stateft.app.checks import compose_checked, validate_cfg
from stateft.errors import UserError
from stateft.methods import apply_method
from stateft.methods.configs import methods_for
from stateft.s4.model import DeepS4, theory_config
from stateft.s4.runner import method_entries

REPO = Path(__file__).resolve().parents[2]
S4_METHODS = "s4_frozen, s4_full, s4_lora, s4_sdt, s4_sdlora"


def _train(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "train.py", *args, f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["method=s4_sdt", "model=mamba-tiny", "dataset=demo"],
            "error: method s4_sdt on mamba-tiny: s4_sdt applies to s4d models, not to mamba1; the methods for mamba1: ",
        ),
        (
            ["experiment=sdt_s4/synthetic", "method=state_offset_h"],
            "error: method state_offset_h on s4-synthetic: state_offset_h applies to mamba1, mamba2 and vim models, "
            f"not to s4d; the methods for s4d: {S4_METHODS}",
        ),
        (
            ["experiment=sdt_s4/transfer", "dataset.path=/nonexistent/pixels"],
            "error: dataset.path /nonexistent/pixels is not a folder; put MNIST's idx files",
        ),
        (["experiment=sdt_s4/synthetic", "dataset=demo"], "error: model s4-synthetic is a deep S4, which trains on"),
        (["dataset=s4_synthetic", "model=mamba-tiny"], "error: dataset s4_synthetic is a deep-S4 task; use a deep S4"),
    ],
)
def test_one_error_line(args, message, tmp_path):
    result = _train(args, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(message), result.stderr[-2000:]
    assert not (tmp_path / "run" / "results.json").exists()


def test_apply_method_refuses_across_families():
    model = DeepS4(theory_config(4, 1, 4))
    with pytest.raises(NotImplementedError, match=f"lora applies to .* not to s4d; the methods for s4d: {S4_METHODS}$"):
        apply_method("lora", model, {"name": "lora"})
    assert methods_for("s4d") == S4_METHODS.split(", ")
    assert not set(methods_for("mamba1")) & set(methods_for("s4d"))


@pytest.mark.parametrize(
    ("compare", "message"),
    [
        ("[{label:x,method:lora}]", r"s4.compare\[0\]: method lora on s4-synthetic: lora applies to"),
        ("[{label:x,method:s4_sdt,select_by:size}]", "method s4_sdt: unknown select_by 'size'"),
        ("[{label:x,method:s4_frozen},{label:x,method:s4_full}]", "label 'x' is used twice"),
        ("[{label:x}]", r"s4.compare\[0\] must be a mapping with a method"),
    ],
)
def test_bad_compare_entries(compare, message):
    cfg = compose_checked("train", ["experiment=sdt_s4/synthetic", f"s4.compare={compare}"])
    for check in (validate_cfg, method_entries):  # at start-up, and where the runner reads them
        with pytest.raises(UserError, match=message):
            check(cfg)

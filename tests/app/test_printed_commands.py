"""The commands a run prints (evaluate, resume) run as printed, from the folder where they were printed."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from stateft.app.commands import hydra_arg
from tests.app.conftest import PYTHON, REPO, subprocess_env

# values Hydra's grammar would misread unquoted: '=' and ',' of a run folder's overrides, quotes, brackets, spaces,
# an interpolation, backslashes before quotes and before "${"
AWKWARD = [
    "outputs/glue_rte/lora/mamba-130m/2026-01-01_12-00-00_method.lr=0.1,trainer.max_epochs=1/adapter",
    "a b",
    " lead",
    "it's",
    'say "hi"',
    "x\\",
    'a\\"b',
    "${oc.env:HOME}",
    "a\\${b}",
    "a\\\\${b}",
    "[1,2]",
    "{k: v}",
    "1e-3",
    "true",
    "null",
    "~x",
    "caf\u00e9/\u2028",
]


@pytest.mark.parametrize("value", AWKWARD)
def test_a_quoted_value_reads_back_as_itself(compose, value):
    argument = hydra_arg("adapter", value)
    assert shlex.split(shlex.quote(argument)) == [argument]  # the shell hands Hydra the argument unchanged
    cfg = compose("eval", [argument, "output_dir=/tmp/x"])
    assert cfg.adapter == value


def _printed(stdout: str, label: str) -> list[str]:
    """The command after ``label`` in a run's report, split as the shell would, run with this interpreter."""
    line = next(line for line in stdout.splitlines() if line.startswith(label))
    argv = shlex.split(line.removeprefix(label))
    assert argv[0] == "python"
    return [PYTHON, *argv[1:]]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)


def test_evaluate_and_resume_commands_run_as_printed(tmp_path):
    # the default run folder carries the overrides: .../<time>_method.lr=0.1,trainer.accelerator=cpu,...
    args = [
        "model=mamba-tiny",
        "dataset=demo",
        "logger=none",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "method.lr=0.1",
        "dataset.max_eval_examples=2",
    ]
    first = _run([PYTHON, str(REPO / "train.py"), *args], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*/*/*")
    assert "=" in run_dir.name
    assert "," in run_dir.name

    evaluated = _run(_printed(first.stdout, "evaluate with:"), tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "test/accuracy=" in evaluated.stdout

    resumed = _run(_printed(first.stdout, "resume with:"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume with:" in resumed.stdout
    runs = sorted((tmp_path / "outputs").glob("glue_rte/*/*/*"))
    assert len(runs) == 2  # the resumed run has its own folder
    assert run_dir in runs  # and the first is still there

"""Learning-rate sweeps: the CLI multirun with its summary, a failing job, and the summary's ranking rules."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from stateft.app.sweep_summary import collect, launch_command, main, ranked, summary
from tests.app.conftest import FIXTURES, PYTHON, REPO, subprocess_env


def test_two_point_sweep_with_a_failing_job_reports_the_others(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "sweep=lr_grid",
        "model=mamba-tiny",
        "method=state_offset_h",
        "dataset=glue_rte",
        "lr_grid.min=1e-3",
        "lr_grid.max=2e-3",
        "trainer.accelerator=cpu",
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep_dir}",
        # the second path does not exist: those jobs fail, the sweep goes on
        f"dataset.path={FIXTURES / 'glue_rte'},{tmp_path / 'missing'}",
    ]
    result = subprocess.run(
        [PYTHON, "train.py", *args], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "ranked by final training loss" in out
    assert "chosen learning rate: 0.00" in out
    assert "full run: python train.py" in out
    jobs = collect(sweep_dir)
    assert len(jobs) == 4
    good = [j for j in jobs if j.rankable]
    assert sorted(j.lr for j in good) == [1e-3, 2e-3]
    assert all(j.status.startswith("failed") for j in jobs if not j.rankable)
    for job in good:
        metrics = json.loads((job.path / "metrics.json").read_text())
        assert metrics["lr"] == job.lr  # the ladder value reached the optimiser
        assert (job.path / "adapter" / "adapter_model.safetensors").is_file()
    best = min(good, key=lambda j: j.loss)
    assert f"chosen learning rate: {best.lr:g}" in out
    # the printed command reproduces the best job without the sweep
    command = launch_command(best)
    assert f"optim.lr={best.lr:g}" in " ".join(command) or f"optim.lr={best.lr}" in " ".join(command)
    assert not any(c.startswith(("sweep=", "lr_grid.")) for c in command)
    assert {"model=mamba-tiny", "method=state_offset_h", "dataset=glue_rte"} <= set(command)


def _job(root: Path, name: str, lr: float, loss: float | None = None, error: str | None = None) -> None:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- optim.lr={lr}\n- method=lora\n- sweep=lr_grid\n")
    if loss is not None:
        (job / "metrics.json").write_text(json.dumps({"lr": lr, "train/loss_epoch": loss}))
    if error is not None:
        (job / "error.txt").write_text(f"Traceback...\n{error}\n")


def test_summary_ranks_by_loss_and_puts_diverged_and_failed_last(tmp_path, capsys):
    _job(tmp_path, "a", 1e-3, 2.5)
    _job(tmp_path, "b", 4e-3, 1.5)
    _job(tmp_path, "c", 4e-1, float("nan"))
    _job(tmp_path, "d", 1e-1, error="RuntimeError: CUDA out of memory")
    _job(tmp_path, "e", 1e-5)  # killed: no metrics, no error
    jobs = ranked(collect(tmp_path))
    assert [j.lr for j in jobs[:2]] == [4e-3, 1e-3]
    assert [j.rankable for j in jobs] == [True, True, False, False, False]
    text, best = summary(tmp_path)
    assert best is not None
    assert best.lr == 4e-3
    assert "CUDA out of memory" in text
    assert "diverged" in text
    assert launch_command(best)[2:] == ["optim.lr=0.004", "method=lora"]
    assert main([str(tmp_path)]) == 0
    assert "chosen learning rate: 0.004" in capsys.readouterr().out


def test_summary_without_finished_jobs_chooses_nothing(tmp_path):
    _job(tmp_path, "a", 1e-3, error="boom")
    text, best = summary(tmp_path)
    assert best is None
    assert "no learning rate chosen" in text
    assert main([str(tmp_path)]) == 1


@pytest.mark.slow
def test_local_parallel_sweep_gives_each_job_its_own_gpu(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "sweep=lr_grid",
        "hydra/launcher=local_gpus",
        "gpu_pool=2",
        "model=mamba-tiny",
        "dataset=demo",
        "lr_grid.min=1e-2",
        "lr_grid.max=2e-2",
        "logger=none",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    result = subprocess.run(
        [PYTHON, "train.py", *args], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "chosen learning rate" in result.stdout
    logs = "".join(p.read_text() for p in sweep_dir.glob(".submitit/*/*.out"))
    assert sorted(line for line in logs.splitlines() if line.startswith("job on GPU")) == [
        "job on GPU 0",
        "job on GPU 1",
    ]  # both jobs ran at once, each on its own GPU of the pool

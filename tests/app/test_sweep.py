"""Learning-rate sweeps: the CLI multirun with its summary, a failing job, and the summary's ranking rules."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from stateft.app.sweep_summary import collect, launch_command, main, ranked, summary
from tests.app.conftest import FIXTURES, PYTHON, REPO, subprocess_env


def _printed(stdout: str, label: str) -> list[str]:
    """The first command after ``label`` in the output, split as the shell would, run with this interpreter."""
    line = next(line for line in stdout.splitlines() if line.startswith(label))
    argv = shlex.split(line.removeprefix(label))
    assert argv[0] == "python"
    return [PYTHON, *argv[1:]]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)


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
        "trainer.max_epochs=1",  # carried into the printed full run, which then stays short
        "dataset.max_eval_examples=2",
        f"hydra.sweep.dir={sweep_dir}",
        # the second path does not exist: those jobs fail, the sweep goes on
        f"dataset.path={FIXTURES / 'glue_rte'},{tmp_path / 'missing'}",
    ]
    # run from another folder: the printed commands must run from where they were printed
    result = _run([PYTHON, str(REPO / "train.py"), *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "ranked by final training loss" in out
    assert "chosen learning rate: 0.00" in out
    assert "full run: python " in out
    jobs = collect(sweep_dir)
    assert len(jobs) == 4
    good = [j for j in jobs if j.rankable]
    assert sorted(j.lr for j in good) == [1e-3, 2e-3]
    assert all(j.status.startswith("failed: error: dataset.path") for j in jobs if not j.rankable)
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

    # a sweep job's folder name holds '=' and ',': its printed evaluate command still runs
    evaluated = _run(_printed(out, "evaluate with:"), tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    full = _run(_printed(out, "full run:"), tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    (full_run,) = (tmp_path / "outputs").glob("glue_rte/state_offset_h/mamba-tiny/*")
    assert json.loads((full_run / "metrics.json").read_text())["lr"] == best.lr


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


def test_a_damaged_metrics_file_is_a_status_not_a_crash(tmp_path):
    _job(tmp_path, "a", 1e-3, 2.0)
    _job(tmp_path, "b", 2e-3)
    (tmp_path / "b" / "metrics.json").write_text('{"lr": 0.002, "train/lo')  # killed mid-write
    text, best = summary(tmp_path)
    assert best is not None
    assert best.lr == 1e-3
    assert "unreadable metrics.json" in text


def test_summary_without_finished_jobs_chooses_nothing(tmp_path):
    _job(tmp_path, "a", 1e-3, error="boom")
    text, best = summary(tmp_path)
    assert best is None
    assert "no learning rate chosen" in text
    assert main([str(tmp_path)]) == 1


def _sweep(root: Path, losses: dict[float, float], method: str = "lora") -> Path:
    """A finished sweep folder as Hydra leaves it (multirun.yaml, one job folder per rate)."""
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    for i, (lr, loss) in enumerate(losses.items()):
        _job(root, f"{i}_optim.lr={lr}", lr, loss)
    return root


def test_sweeps_under_one_folder_are_summarised_apart(tmp_path, capsys):
    # two sweeps of one dataset/method/model at different times, and one of another method; their best rates differ
    first = _sweep(tmp_path / "glue_rte/lora/mamba-130m/2026-01-01_10-00-00", {1e-4: 2.0, 2e-4: 1.0, 4e-4: 3.0})
    second = _sweep(tmp_path / "glue_rte/lora/mamba-130m/2026-01-02_10-00-00", {1e-3: 2.0, 2e-3: 0.5, 4e-3: 3.0})
    other = _sweep(tmp_path / "glue_rte/bitfit/mamba-130m/2026-01-01_10-00-00", {1e-2: 0.1, 2e-2: 0.2, 4e-2: 0.3})
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 sweeps under" in out
    for folder, rate in ((first, 2e-4), (second, 2e-3), (other, 1e-2)):
        part = out[out.index(f"sweep in {folder}:") :].split("\n\n")[0]
        assert "3 jobs" in part
        assert f"chosen learning rate: {rate:g}" in part
    assert out.count("chosen learning rate") == 3
    # --launch would not know which sweep to run
    assert main([str(tmp_path), "--launch"]) == 2
    assert "--launch needs one sweep" in capsys.readouterr().err


@pytest.mark.parametrize("cli", [[], ["--launch"], ["--search"]])
def test_the_cli_reads_each_jobs_files_once(tmp_path, monkeypatch, cli):
    """metrics.json and hydra.yaml are read once per job (hydra.yaml: of the jobs whose command is printed), whatever
    the summary, ranking and launch do with them."""
    from stateft.app import sweep_summary

    sweep = _sweep(tmp_path / "sweep", {1e-3: 2.0, 2e-3: 1.0, 4e-3: 3.0})
    (sweep / "multirun.yaml").write_text("optimized_metric: train/loss_epoch\ncheckpoint: {mode: min}\n")
    for job in sweep.glob("*_optim.lr=*"):
        choices = {"model": "mamba-tiny", "method": "lora", "dataset": "glue_rte"}
        (job / ".hydra" / "hydra.yaml").write_text(json.dumps({"hydra": {"runtime": {"choices": choices}}}))
    reads: dict[str, list[Path]] = {"metrics": [], "hydra": []}
    read_metrics, choices_of = sweep_summary._read_metrics, sweep_summary._choices
    monkeypatch.setattr(sweep_summary, "_read_metrics", lambda p: reads["metrics"].append(p) or read_metrics(p))
    monkeypatch.setattr(sweep_summary, "_choices", lambda p: reads["hydra"].append(p) or choices_of(p))
    launched = []
    monkeypatch.setattr(sweep_summary.subprocess, "call", lambda argv: launched.append(argv) or 0)
    assert main([*cli, str(sweep)]) == 0
    assert sorted(p.parent.name for p in reads["metrics"]) == sorted(p.name for p in sweep.glob("*_optim.lr=*"))
    assert len(reads["hydra"]) == len(set(reads["hydra"])) >= 1
    if cli == ["--launch"]:
        assert launched[0][2:] == ["model=mamba-tiny", "dataset=glue_rte", "optim.lr=0.002", "method=lora"]


@pytest.mark.parametrize(("losses", "edge"), [({1e-3: 1.0, 2e-3: 2.0}, "lowest"), ({1e-3: 2.0, 2e-3: 1.0}, "highest")])
def test_a_best_rate_on_the_grids_edge_is_flagged(tmp_path, losses, edge):
    text, best = summary(_sweep(tmp_path / "sweep", losses))
    assert best is not None
    side = "min" if edge == "lowest" else "max"
    assert f"the best rate is the grid's {edge} ({best.lr:g}): widen lr_grid.{side}" in text


def test_a_best_rate_inside_the_grid_is_not_flagged(tmp_path):
    text, _ = summary(_sweep(tmp_path / "sweep", {1e-3: 2.0, 2e-3: 1.0, 4e-3: 3.0}))
    assert "warning" not in text


def test_notebook_runs_on_a_learning_rate_sweep_without_test_metrics(tmp_path, monkeypatch):
    """README's sweep usage: the jobs have a training loss only (sweep=lr_grid sets test=false)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = REPO / "notebooks" / "01-sweep-analysis.ipynb"
    sweep = tmp_path / "glue_rte/state_offset_h/mamba-tiny/2026-01-01_10-00-00"
    for i, (lr, loss) in enumerate({1e-3: 2.0, 2e-3: 1.0, 4e-3: 3.0}.items()):
        job = sweep / f"{i}_optim.lr={lr}"
        (job / "adapter").mkdir(parents=True)
        run_config = {"method": {"name": "state_offset_h"}, "dataset": {"name": "glue_rte"}, "model": {"name": "t"}}
        (job / "adapter" / "run_config.json").write_text(json.dumps(run_config))
        metrics = {"lr": lr, "params/trainable": 1024, "train/loss_epoch": loss, "val/accuracy_best": None}
        (job / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.setenv("STATEFT_RUNS", str(tmp_path))
    monkeypatch.delenv("STATEFT_WANDB_EXPORT", raising=False)
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    ).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "3 runs under" in text
    assert "no test/accuracy in these runs" in text
    assert "chosen learning rate for state_offset_h on glue_rte: 0.002" in text


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

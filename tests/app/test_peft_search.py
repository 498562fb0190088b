"""sweep=peft_search: Hydra's Optuna sweeper over which PEFT methods are composed and each one's learning rate."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from stateft.app.sweep_summary import main, search_overrides, search_summary
from tests.app.conftest import PYTHON, REPO, subprocess_env


def _printed(stdout: str, label: str) -> str:
    (line,) = [line for line in stdout.splitlines() if line.startswith(label)]
    return line[len(label) :].strip()


def test_a_small_search_runs_on_the_cpu_and_prints_the_best_trial(tmp_path):
    sweep_dir = tmp_path / "search"
    args = [
        "-m",
        "sweep=peft_search",
        "model=mamba-tiny",
        "dataset=demo",
        "peft_search.n_trials=2",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "dataset.max_eval_examples=2",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    result = subprocess.run(
        [PYTHON, "train.py", *args], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "PEFT search in" in out
    assert sorted(p.name for p in sweep_dir.glob("trial_*")) == ["trial_0", "trial_1"]
    # the sweeper's own record of its best trial is the one the summary names first
    optuna = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = _printed(out, "best trial:")
    metrics = json.loads((sweep_dir / best / "metrics.json").read_text())
    assert metrics["val/accuracy_best"] == pytest.approx(optuna["best_value"])
    command = _printed(out, "full run:")
    assert f"method.parts={optuna['best_params']['method.parts']}" in command
    assert "method=compose" in command
    assert "sweep=" not in command
    assert "peft_search." not in command
    # the printed full run composes and applies (dry run: no training)
    rerun = subprocess.run(
        [PYTHON, *shlex.split(command)[1:], "dry_run=true"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "compose: trainable params per part" in rerun.stdout


def _trial(root: Path, name: str, parts: str, value: float | None, error: str | None = None) -> None:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    overrides = [f"method.parts={parts}", "method.lora.lr=0.001", "method.prefix.lr=0.02", "sweep=peft_search"]
    overrides += ["peft_search.n_trials=3", "trainer.max_epochs=1"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if value is not None:
        (job / "metrics.json").write_text(json.dumps({"val/mse_best": value, "train/loss_epoch": 1.0}))
    if error is not None:
        (job / "error.txt").write_text(f"error: {error}\n")


@pytest.mark.parametrize(("maximize", "best"), [(True, "trial_1"), (False, "trial_0")])
def test_trials_rank_by_the_value_in_the_metrics_direction(tmp_path, maximize, best):
    _trial(tmp_path, "trial_0", "[lora]", 0.25)
    _trial(tmp_path, "trial_1", "[lora,prefix]", 0.75)
    _trial(tmp_path, "trial_2", "[bitfit,partial]", None, error="compose: parts bitfit and partial both train x")
    text, job = search_summary(tmp_path, "val/mse", maximize)
    assert job.path.name == best
    assert "1 trials without a value" in text
    assert "both train x" in text


def test_the_full_run_keeps_the_rates_of_the_parts_that_were_on(tmp_path):
    _trial(tmp_path, "trial_0", "[lora]", 0.5)
    (job,) = [search_summary(tmp_path, "val/mse", True)[1]]
    assert search_overrides(job) == ["method.parts=[lora]", "method.lora.lr=0.001", "trainer.max_epochs=1"]


def test_the_cli_reads_the_objective_from_the_search_itself(tmp_path, capsys):
    (tmp_path / "multirun.yaml").write_text("optimized_metric: val/mse\ncheckpoint: {mode: min}\n")
    _trial(tmp_path, "trial_0", "[lora]", 0.5)
    _trial(tmp_path, "trial_1", "[lora,prefix]", 0.1)
    assert main(["--search", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lower is better" in out
    assert "best trial: trial_1" in out


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_direction_follows_the_metric_and_the_space_is_the_sweepers(hydra_ctx, mode):
    from hydra import compose

    cfg = compose(
        "train",
        overrides=["sweep=peft_search", f"checkpoint.mode={mode}", "peft_search.n_trials=7", "output_dir=/tmp/x"],
        return_hydra_config=True,
    )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == f"{mode}imize"
    assert sweeper.n_trials == 7
    assert cfg.method.name == "compose"
    assert sweeper.params["method.parts"].startswith("choice([lora],")
    assert sweeper.params["method.lora.lr"] == "tag(log, interval(1e-05, 0.1))"

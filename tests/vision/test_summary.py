"""The VTAB table: per task, per group and the two averages, from the runs' files; the 19-task sweep on fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stateft.vision.summary import collect, summarize, table
from stateft.vision.tasks import VTAB_TASKS
from tests.vision.conftest import REPO, VTAB_FIXTURES


def _fake_run(folder, task, accuracy):
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "run_config.json").write_text(json.dumps({"dataset": {"name": f"vtab_{task}"}}))
    (folder / "metrics.json").write_text(json.dumps({"test/accuracy": accuracy}))


def test_group_means_and_averages(tmp_path):
    values = {key: float(10 + i) for i, key in enumerate(VTAB_TASKS)}  # 10, 11, ..., 28 in table order
    for i, (key, value) in enumerate(values.items()):
        _fake_run(tmp_path / f"{i}_job", key, value)
    _fake_run(tmp_path / "0_job" / "later", "cifar100", 99.0)  # a second cifar run, written last: it wins
    first = tmp_path / "0_job" / "metrics.json"
    os.utime(first, (first.stat().st_atime, first.stat().st_mtime - 10))
    found = collect(tmp_path)
    assert found["cifar100"][0] == 99.0
    values["cifar100"] = 99.0
    summary = table({k: v for k, (v, _) in found.items()})
    natural = (99 + 11 + 12 + 13 + 14 + 15 + 16) / 7
    specialized = (17 + 18 + 19 + 20) / 4
    structured = sum(range(21, 29)) / 8
    want = {"natural": natural, "specialized": specialized, "structured": structured}
    assert summary["groups"] == pytest.approx(want)
    assert summary["mean_of_tasks"] == pytest.approx(sum(values.values()) / 19)
    assert summary["mean_of_groups"] == pytest.approx((natural + specialized + structured) / 3)


def test_a_missing_task_leaves_its_group_and_the_averages_open(tmp_path):
    _fake_run(tmp_path / "a", "dtd", 50.0)
    text = summarize(tmp_path)
    assert "| dtd | natural | 50.0 |" in text
    assert "natural: — (incomplete)" in text
    assert "mean of the 19 tasks: —" in text
    assert json.loads((tmp_path / "vtab_summary.json").read_text())["tasks"]["dtd"] == 50.0


def test_the_19_task_sweep_runs_on_the_fixtures_and_prints_the_table(tmp_path):
    """experiment=mambapeft/vtab as a multirun (one job per task, Hydra's basic launcher) with the tiny model."""
    args = [
        "-m", "experiment=mambapeft/vtab", "model=vim-test", "method=lora", f"dataset.path={VTAB_FIXTURES}",
        "dataset.num_workers=0", "dataset.batch_size=2", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "logger=none", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "sweep" / "vtab_summary.json").read_text())
    assert all(isinstance(v, float) for v in summary["tasks"].values())
    assert "mean of the 3 group means:" in done.stdout

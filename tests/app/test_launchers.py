"""Launcher configs compose (Slurm, local one-job-per-GPU), and the GPU pool hands each job its own GPU."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from stateft.app.checks import CONF_DIR
from stateft.app.gpu_pool import acquire_gpu, pool_ids, release_gpus


@pytest.mark.parametrize(("launcher", "target"), [("slurm", "SlurmLauncher"), ("local_gpus", "LocalLauncher")])
def test_launcher_configs_compose(launcher, target):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hydra/launcher={launcher}", "sweep=lr_grid", "output_dir=/tmp/x"],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1
        assert "partition" in cfg.hydra.launcher
    else:
        assert cfg.hydra.launcher.gpus_per_node == 0  # the job picks its GPU from gpu_pool


def test_gpu_pool_gives_each_job_a_free_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pool_ids(2) == [0, 1]
    assert pool_ids([3, 5]) == [3, 5]
    try:
        first = acquire_gpu([3, 5], tmp_path)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        second = acquire_gpu([3, 5], tmp_path)  # 3 is locked: the next job gets 5
        assert (first, second) == (3, 5)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    finally:
        release_gpus()
    assert acquire_gpu([3, 5], tmp_path) == 3  # released locks are free again
    release_gpus()

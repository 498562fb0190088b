"""A run SIGKILLed mid-epoch and resumed ends with the same adapter as an uninterrupted run; writes are atomic."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stateft.app.callbacks import AtomicCheckpointIO
from stateft.app.training import train
from tests.app.conftest import FIXTURES, PYTHON, REPO, subprocess_env

# 16 training rows (80% of the fixture's 20), batch 2: 8 steps per epoch, 3 epochs. LoRA with dropout, so the
# resumed run must also restore the random state, not only the weights, optimizer, schedule and data order.
STEPS_PER_EPOCH, EPOCHS, KILL_AT = 8, 3, 5


def _overrides(out: Path) -> list[str]:
    return [
        "model=mamba-tiny",
        "method=lora",
        "method.dropout=0.1",
        "dataset=glue_rte",
        f"dataset.path={FIXTURES / 'glue_rte'}",
        "dataset.batch_size=2",
        "trainer.accelerator=cpu",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "checkpoint.every_n_train_steps=1",
        "checkpoint.monitor=val/loss",
        "checkpoint.mode=min",
        f"output_dir={out}",
    ]


def test_killed_and_resumed_run_equals_uninterrupted_run(compose, tmp_path):
    full = train(compose("train", _overrides(tmp_path / "full")))

    killed = tmp_path / "killed"
    cli = [PYTHON, "tests/app/kill_at_step.py", str(KILL_AT), *_overrides(killed), f"hydra.run.dir={killed}"]
    result = subprocess.run(cli, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    checkpoint = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == KILL_AT
    assert checkpoint["global_step"] % STEPS_PER_EPOCH != 0  # mid-epoch
    assert not (killed / "metrics.json").exists()
    assert not list((killed / "checkpoints").glob(".*tmp*"))

    resumed = train(compose("train", _overrides(tmp_path / "resumed") + [f"+resume={killed}"]))

    for name in ("adapter_model.safetensors",):
        a = load_file(str(tmp_path / "full" / "adapter" / name))
        b = load_file(str(tmp_path / "resumed" / "adapter" / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    last_a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)
    last_b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last_b["global_step"] == last_a["global_step"] == STEPS_PER_EPOCH * EPOCHS
    for key, value in last_a["state_dict"].items():
        torch.testing.assert_close(last_b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    assert resumed["best_epoch"] == full["best_epoch"]
    test_keys = [k for k in full if k.startswith("test/")]
    assert {k: resumed[k] for k in test_keys} == pytest.approx({k: full[k] for k in test_keys})


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("killed while writing")


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    with pytest.raises(RuntimeError, match="killed while writing"):
        AtomicCheckpointIO().save_checkpoint({"step": 2, "bad": _Unpicklable()}, path)
    assert torch.load(path, weights_only=False) == {"step": 1}  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # and no partial file is left beside it


def test_resume_from_a_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [PYTHON, "train.py", "model=mamba-tiny", f"+resume={tmp_path / 'nope'}"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "does not exist" in result.stderr

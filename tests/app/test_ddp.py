"""trainer=ddp equals one device with the same global batch (2 CPU processes over gloo stand in for 2 GPUs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.app.conftest import FIXTURES, PYTHON, REPO, subprocess_env


def _run(out: Path, *extra: str) -> None:
    # SAMSum targets differ in length, so the two devices hold different numbers of target tokens per step:
    # equality needs the loss weighted by the global token count, not a mean of per-device means.
    args = [
        "model=mamba-tiny",
        "method=state_offset_h",
        "method.lr=0.05",
        "dataset=samsum",
        f"dataset.path={FIXTURES / 'samsum'}",
        "dataset.max_new_tokens=2",
        "dataset.num_beams=1",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "checkpoint.monitor=val/loss",
        "checkpoint.mode=min",
        f"hydra.run.dir={out}",
        *extra,
    ]
    result = subprocess.run(
        [PYTHON, "train.py", *args], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_ddp_on_two_devices_equals_one_device_with_the_same_global_batch(tmp_path):
    _run(tmp_path / "one", "dataset.batch_size=4")
    _run(tmp_path / "two", "dataset.batch_size=2", "trainer.strategy=ddp", "trainer.devices=2")
    one = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", weights_only=False)
    two = torch.load(tmp_path / "two" / "checkpoints" / "last.ckpt", weights_only=False)
    assert one["global_step"] == two["global_step"] > 0
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    a = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    # every test example was scored once, in order, although each device decoded half of them
    rows_one = (tmp_path / "one" / "predictions_test.jsonl").read_text()
    assert rows_one == (tmp_path / "two" / "predictions_test.jsonl").read_text()

"""Resume: a run killed mid-epoch resumes to the same adapter (dropout included); checkpoints are written atomically
and read with weights_only; a checkpoint that is missing, damaged, holds objects, or belongs to another method,
dataset or model is refused in one line before anything is written. The kill at every write point:
test_resume_kill.py."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from stateft.app.callbacks import AtomicCheckpointIO, is_measurement
from stateft.app.checkpoint import read_checkpoint
from stateft.app.files import remove_leftovers
from stateft.app.log_resume import tensorboard_kwargs, wandb_kwargs
from stateft.app.resume import Resume
from stateft.app.training import train
from stateft.errors import UserError
from tests.app.conftest import PYTHON, REPO, debug_overrides, subprocess_env

# 16 training rows, batch 8: 2 steps per epoch, 2 epochs, a checkpoint after every step. LoRA with dropout, so the
# resumed run must also restore the random state, not only the weights, optimizer, schedule and data order. The
# third checkpoint write is the one in the middle of epoch 1.
STEPS_PER_EPOCH, EPOCHS, KILL_AFTER_WRITE = 2, 2, 3


def _overrides(out: Path, method: str = "lora") -> list[str]:
    swap = {"trainer=debug": "trainer=default"}
    extra = ["method.dropout=0.1"] if method == "lora" else []
    return (
        [swap.get(o, o) for o in debug_overrides(method, "demo", out)]
        + extra
        + [
            "trainer.accelerator=cpu",
            f"trainer.max_epochs={EPOCHS}",
            "dataset.batch_size=8",
            "checkpoint.every_n_train_steps=1",
            "checkpoint.monitor=val/loss",
            "checkpoint.mode=min",
        ]
    )


def test_killed_mid_epoch_and_resumed_equals_uninterrupted(compose, tmp_path):
    full = train(compose("train", _overrides(tmp_path / "full")))

    killed = tmp_path / "killed"
    args = ["last.ckpt", str(KILL_AFTER_WRITE), "after", *_overrides(killed), f"hydra.run.dir={killed}"]
    result = subprocess.run(
        [PYTHON, "tests/app/kill_at_write.py", *args], cwd=REPO, env=subprocess_env(), capture_output=True, text=True
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    checkpoint = read_checkpoint(killed / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] % STEPS_PER_EPOCH != 0  # mid-epoch
    assert not (killed / "metrics.json").exists()

    resumed = train(compose("train", _overrides(tmp_path / "resumed") + [f"+resume={killed}"]))

    a = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(b[k], a[k]) for k in a)
    last_a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    last_b = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert last_b["global_step"] == last_a["global_step"] == STEPS_PER_EPOCH * EPOCHS
    assert all(torch.equal(last_b["state_dict"][k], v) for k, v in last_a["state_dict"].items())
    assert resumed["best_epoch"] == full["best_epoch"]
    assert {k: v for k, v in resumed.items() if not is_measurement(k)} == {
        k: v for k, v in full.items() if not is_measurement(k)
    }


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("killed while writing")


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    with pytest.raises(RuntimeError, match="killed while writing"):
        AtomicCheckpointIO().save_checkpoint({"step": 2, "bad": _Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # and no partial file is left beside it


class _Touches:
    """Unpickling this creates a file: what a hostile checkpoint could do with weights_only=False."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_checkpoint_is_read_weights_only_whatever_the_caller_asks(tmp_path):
    path, marker = tmp_path / "last.ckpt", tmp_path / "code-ran"
    torch.save({"state_dict": {}, "global_step": 1, "x": _Touches(marker)}, path)
    with pytest.raises(UserError, match="objects other than tensors") as err:
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def _run_dir(tmp_path: Path, record: dict | None = None, state_dict: dict | None = None) -> Path:
    """A run directory with a last.ckpt (a stateft record naming its run) and an adapter/ of its own."""
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    checkpoint = {"state_dict": state_dict or {}, "global_step": 2}
    if record is not None:
        checkpoint["stateft"] = record
    AtomicCheckpointIO().save_checkpoint(checkpoint, run / "checkpoints" / "last.ckpt")
    return run


def _refused(compose, tmp_path: Path, run: Path, match: str) -> None:
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    out = tmp_path / "out"
    with pytest.raises(UserError, match=match) as err:
        train(compose("train", _overrides(out, "state_offset_h") + [f"+resume={run}"]))
    assert "\n" not in str(err.value)
    assert not (out / "adapter").exists()  # nothing copied or created
    assert not (out / "checkpoints").exists()
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


IDENTITY = {"method": "state_offset_h", "dataset": "glue_rte", "model": "mamba-tiny"}


@pytest.mark.parametrize("field", ["method", "dataset", "model"])
def test_resume_of_another_run_is_refused_before_anything_is_written(compose, tmp_path, field):
    run = _run_dir(tmp_path, {"run": {**IDENTITY, field: "other"}})
    _refused(compose, tmp_path, run, f"{field}=other, not {field}={IDENTITY[field]}")


def test_checkpoint_without_record_is_checked_against_run_config_json(compose, tmp_path):
    run = _run_dir(tmp_path)
    (run / "adapter" / "run_config.json").write_text('{"method": {"name": "lora", "_target_": "os.system"}}')
    _refused(compose, tmp_path, run, "method=lora, not method=state_offset_h")


def test_checkpoint_of_other_method_options_is_refused(compose, tmp_path):
    state = {"model.backbone.layers.0.mixer.state_offset.h": torch.zeros(3, 3)}
    run = _run_dir(tmp_path, {"run": IDENTITY}, state)
    _refused(compose, tmp_path, run, "holds other trainable tensors")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_checkpoint_is_a_one_line_error(compose, tmp_path, damage):
    run = _run_dir(tmp_path, {"run": IDENTITY}, {"model.x": torch.randn(64, 64)})
    path = run / "checkpoints" / "last.ckpt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x80\x02garbage" * 100)
    _refused(compose, tmp_path, run, "truncated or corrupt|is refused: it is damaged")


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


def test_leftovers_of_killed_writers_are_removed_and_only_those(tmp_path):
    ours = [".metrics.json.tmp-12", ".predictions_test.jsonl.tmp-3", ".adapter.tmp-7"]
    theirs = [".hidden", "notes.tmp-1", ".metrics.json.tmp-x", ".adapterx", "adapter.old-1", ".cache.abcdefgh"]
    for name in ours[:2] + theirs:
        (tmp_path / name).write_text("x")
    (tmp_path / ".adapter.tmp-7").mkdir()
    (tmp_path / ".adapter.a1b2c3d4").mkdir()  # save_adapter's temporary directory
    (tmp_path / ".adapter.old-99").mkdir()  # the previous adapter, set aside before a kill
    (tmp_path / ".adapter.old-99" / "adapter_model.safetensors").write_text("previous")
    remove_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["adapter", *theirs])
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_text() == "previous"  # put back


def test_tensorboard_and_wandb_continue_the_interrupted_run(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "tensorboard").mkdir(parents=True)
    (old / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"events")
    resume = Resume(old / "checkpoints" / "last.ckpt", old, 7, {"wandb_id": "abc123"})
    node = OmegaConf.create(
        {"_target_": "lightning.pytorch.loggers.TensorBoardLogger", "save_dir": str(new), "name": "tensorboard"}
    )
    assert tensorboard_kwargs(node, resume, new) == {"purge_step": 7}
    assert (new / "tensorboard" / "events.out.tfevents.1.host").read_bytes() == b"events"
    assert tensorboard_kwargs(node, None, new) == {}
    assert wandb_kwargs(resume) == {"id": "abc123", "resume": "allow"}
    assert wandb_kwargs(None) == {}

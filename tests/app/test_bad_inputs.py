"""Bad inputs end with one ``error:`` line on stderr and exit code 2, and lose nothing; bugs keep their traceback.

Subprocess rows run ``train.py`` / ``eval.py`` as a user would; what a subprocess cannot simulate (a full disk, a
damaged file mid-run, a machine with N GPUs) is checked in-process.
"""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import torch

from stateft.app import devices
from stateft.app.devices import check_devices
from stateft.app.entry import run_main
from stateft.app.runner import run_job
from stateft.errors import UserError
from tests.app.conftest import FIXTURES, PYTHON, REPO, subprocess_env

BASE = ["model=mamba-tiny", "dataset=demo", "logger=none", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without GPUs")


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.fixture
def previous_run(tmp_path) -> Path:
    """A finished run's folder that no failing command may touch."""
    run = tmp_path / "previous"
    (run / "adapter").mkdir(parents=True)
    (run / "metrics.json").write_text('{"test/accuracy": 0.5}')
    (run / "adapter" / "adapter_config.json").write_text("{}")
    return run


def _bad_rows(folder: Path) -> str:
    """GLUE RTE rows whose fourth training row lacks its label."""
    folder.mkdir()
    (folder / "validation.jsonl").write_text((FIXTURES / "glue_rte" / "validation.jsonl").read_text())
    good = (FIXTURES / "glue_rte" / "train.jsonl").read_text().splitlines()[:3]
    (folder / "train.jsonl").write_text("\n".join([*good, '{"sentence1": "a", "sentence2": "b", "idx": 3}']) + "\n")
    return f"dataset.path={folder}"


def _not_utf8(folder: Path) -> str:
    folder.mkdir()
    (folder / "predictions_test.jsonl").write_bytes(b'{"index": 0, "prediction": "caf\xe9"}\n')
    return f"predictions={folder / 'predictions_test.jsonl'}"


# (script, arguments (a callable makes them from a scratch folder), words of the error, answered before a
# run folder exists)
BATCH = "dataset.batch_size must be an integer >= 1"
CASES = [
    pytest.param("train.py", ["dataset.batch_size=-1"], BATCH, True, id="batch_size=-1"),
    pytest.param("train.py", ["dataset.batch_size=0"], BATCH, True, id="batch_size=0"),
    pytest.param("train.py", ["trainer.max_epochs=-5"], "trainer.max_epochs must be an integer >= 1, or -1", True,
                 id="max_epochs=-5"),
    pytest.param("train.py", ["model=mamba2-tiny", "method=additional_scan", "method.A_init=sst"],
                 "additional_scan A_init does not apply to Mamba-2", True, id="option-not-for-the-arch"),
    pytest.param("train.py", ["model=pythia-tiny", "method=prompt", "method.reparam=true"],
                 "prompt reparam=true (MambaPEFT's MLP) is for Mamba", True, id="mamba-option-on-pythia"),
    pytest.param("train.py", ["method.lr=nan"], "must be a finite number > 0", True, id="lr=nan"),
    pytest.param("train.py", ["trainer=gpu"], "needs a CUDA GPU", True, id="trainer=gpu", marks=NO_GPU),
    pytest.param("train.py", ["trainer=ddp"], "trainer=ddp needs CUDA GPUs", True, id="trainer=ddp", marks=NO_GPU),
    pytest.param("train.py", _bad_rows, "train.jsonl line 4 lacks fields ['label']", False, id="row-without-label"),
    pytest.param("eval.py", _not_utf8, "is not UTF-8", False, id="predictions-not-utf8"),
]  # fmt: skip


@pytest.mark.parametrize(("script", "args", "expected", "early"), CASES)
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, previous_run, script, args, expected, early):
    before = _snapshot(previous_run)
    extra = [args(tmp_path / "scratch")] if callable(args) else args
    run_dir = tmp_path / "run"
    base = BASE if script == "train.py" else ["dataset=demo"]
    result = subprocess.run(
        [PYTHON, str(REPO / script), *base, *extra, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert _snapshot(previous_run) == before  # nothing was lost
    if early:
        assert not run_dir.exists()  # refused before Hydra made a run folder
    assert not (tmp_path / "outputs").exists()


# ---- device requests against a machine with N GPUs (no GPU needed to test them) ------------------------------------
DEVICE_CASES = [
    # (accelerator, devices, strategy, GPUs here, words of the error or None when it may run)
    ("gpu", 1, "auto", 0, "needs a CUDA GPU and this machine has none; pass trainer=default"),
    ("cuda", 1, "auto", 0, "needs a CUDA GPU"),
    ("gpu", -1, "ddp", 0, "trainer=ddp needs CUDA GPUs"),
    ("gpu", 4, "auto", 2, "trainer.devices=4 asks for 4 GPUs but this machine has 2; pass trainer.devices=2"),
    ("gpu", [0, 3], "auto", 2, "names GPU 3"),
    ("gpu", -1, "ddp", 1, "needs at least 2 devices and gets 1 GPU; pass trainer=gpu"),
    ("gpu", 1, "ddp", 4, "needs at least 2 devices"),
    ("cpu", 1, "ddp", 0, "needs at least 2 devices and gets 1 CPU process"),
    ("cpu", -1, "auto", 0, "trainer.devices=-1 (every GPU) needs GPUs"),
    ("auto", -1, "ddp", 0, "trainer.devices=-1 (every GPU) needs GPUs"),
    ("gpu", 0, "auto", 2, "trainer.devices=0 must be >= 1"),
    ("gpu", "two", "auto", 2, "must be a count >= 1"),
    ("gpu", -1, "ddp", 2, None),
    ("gpu", 1, "auto", 1, None),
    ("cpu", 2, "ddp", 0, None),
    ("auto", 1, "auto", 0, None),
    ("auto", "auto", "auto", 0, None),
    ("mps", 1, "auto", 0, None),  # not ours to judge
]


@pytest.mark.parametrize(("accelerator", "devices_", "strategy", "gpus", "expected"), DEVICE_CASES)
def test_device_requests_are_checked_against_the_machine(monkeypatch, accelerator, devices_, strategy, gpus, expected):
    from omegaconf import OmegaConf

    monkeypatch.setattr(devices, "cuda_device_count", lambda: gpus)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    cfg = OmegaConf.create({"trainer": {"accelerator": accelerator, "devices": devices_, "strategy": strategy}})
    if expected is None:
        check_devices(cfg)
        return
    with pytest.raises(UserError) as err:
        check_devices(cfg)
    assert expected in str(err.value)


def test_slurm_sets_the_world_size_itself(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setattr(devices, "cuda_device_count", lambda: 1)
    monkeypatch.setenv("SLURM_NTASKS", "8")  # 8 tasks of one GPU each
    check_devices(OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 1, "strategy": "ddp"}}))


# ---- failures inside a run -----------------------------------------------------------------------------------------
def _one_error_line(capsys, exit_info) -> str:
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def _failing(err: BaseException):
    """A task (or any function) that raises ``err``."""

    def task(*args, **kwargs):
        raise err

    return task


def test_a_full_disk_at_the_end_of_training_is_one_line_and_keeps_the_checkpoint(
    compose, tmp_path, monkeypatch, capsys
):
    from stateft.app import files
    from stateft.app.training import train

    def full_disk(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_json_atomic", full_disk)
    out = tmp_path / "run"
    cfg = compose("train", [*BASE, "trainer.accelerator=cpu", "dataset.max_eval_examples=2", f"output_dir={out}"])
    with pytest.raises(SystemExit) as exit_info:
        run_job(cfg, train)
    line = _one_error_line(capsys, exit_info)
    assert "no space left on the device" in line
    assert "free some space" in line
    assert f"+resume={out}" in line  # says how to continue
    assert (out / "checkpoints" / "last.ckpt").is_file()  # nothing of the training was lost
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"), "read-only file system (/mnt/ro/run)"),
        (PermissionError(errno.EACCES, "Permission denied", "/data/x"), "permission denied (/data/x)"),
        (OSError(errno.EINVAL, "Invalid argument"), "error: Invalid argument (OSError); check the file"),
    ],
)
def test_io_errors_are_one_line(compose, tmp_path, capsys, error, expected):
    cfg = compose("train", ["model=mamba-tiny", f"output_dir={tmp_path}", "dry_run=true"])
    with pytest.raises(SystemExit) as exit_info:
        run_job(cfg, _failing(error))
    assert expected in _one_error_line(capsys, exit_info)


def _read_user_file(path: Path):
    def task(cfg):
        return json.loads(path.read_text(encoding="utf-8"))

    return task


def test_a_damaged_file_read_by_a_library_is_named(compose, tmp_path, capsys):
    """A truncated last.ckpt: torch.load(str) fails with [Errno 22] and no file name of its own."""
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"PK")

    def load(f: str):
        raise OSError(errno.EINVAL, "Invalid argument")

    cfg = compose("train", ["model=mamba-tiny", f"output_dir={tmp_path}", "dry_run=true"])
    with pytest.raises(SystemExit) as exit_info:
        run_job(cfg, lambda c: load(str(ckpt)))
    assert f"Invalid argument ({ckpt})" in _one_error_line(capsys, exit_info)


def test_a_user_file_that_is_not_utf8_or_not_json_is_named(compose, tmp_path, capsys):
    cfg = compose("train", ["model=mamba-tiny", f"output_dir={tmp_path}", "dry_run=true"])
    latin = tmp_path / "config.json"
    latin.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(SystemExit) as exit_info:
        run_job(cfg, _read_user_file(latin))
    assert f"{latin} is not UTF-8 text" in _one_error_line(capsys, exit_info)
    broken = tmp_path / "run_config.json"
    broken.write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(SystemExit) as exit_info:
        run_job(cfg, _read_user_file(broken))
    assert f"{broken}:4: invalid JSON" in _one_error_line(capsys, exit_info)


def test_bugs_keep_their_traceback(compose, tmp_path, monkeypatch):
    cfg = compose("train", ["model=mamba-tiny", f"output_dir={tmp_path}", "dry_run=true"])
    with pytest.raises(ZeroDivisionError):
        run_job(cfg, _failing(ZeroDivisionError("a bug")))
    with pytest.raises(UnicodeDecodeError):  # decoding bytes that are no user file
        run_job(cfg, lambda c: b"\xe9".decode("utf-8"))
    monkeypatch.setenv("STATEFT_TRACEBACK", "1")  # asked for: user errors show their traceback too
    with pytest.raises(OSError):
        run_job(cfg, _failing(OSError(errno.ENOSPC, "No space left on device")))


def test_a_sweep_goes_on_when_even_error_txt_cannot_be_written(compose, tmp_path, monkeypatch, capsys):
    from stateft.app import runner

    monkeypatch.setattr(runner, "_is_multirun", lambda: True)
    monkeypatch.setattr(Path, "write_text", _failing(OSError(errno.ENOSPC, "No space left on device")))
    cfg = compose("train", ["model=mamba-tiny", f"output_dir={tmp_path / 'job'}", "dry_run=true"])
    assert run_job(cfg, _failing(OSError(errno.ENOSPC, "No space left on device"))) is None
    assert "cannot write" in capsys.readouterr().err


# ---- failures around the job (Hydra making the run folder, composing a later sweep job) ----------------------------
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            PermissionError(errno.EACCES, "Permission denied", "outputs/glue_rte"),
            "permission denied (outputs/glue_rte)",
        ),
        (OSError(errno.ENOSPC, "No space left on device", "outputs/x/.hydra"), "no space left on the device"),
    ],
)
def test_entry_point_failures_are_one_line(monkeypatch, capsys, error, expected):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_main(_failing(error))
    assert expected in _one_error_line(capsys, exit_info)


def test_entry_point_reports_a_sweep_jobs_composition_error_and_keeps_bugs(monkeypatch, capsys):
    from hydra.errors import ConfigCompositionException

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_main(_failing(ConfigCompositionException("Could not override 'method.rnak'.\nTo append use +")))
    assert "Could not override 'method.rnak'" in _one_error_line(capsys, exit_info)
    with pytest.raises(KeyError):
        run_main(_failing(KeyError("a bug")))

"""Hostile files: a real run folder of a tiny model (trained once per session), copied per test and then damaged or
planted with payloads; every payload would create ``MARKER`` (in the test's folder) if it ever ran."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stateft.app.checks import compose_checked
from stateft.errors import UserError

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory):
    """Offline, and a per-session data cache (never ~/.cache)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_MODE"] = "offline"
    os.environ["STATEFT_CACHE_DIR"] = str(tmp_path_factory.mktemp("stateft_cache"))


@pytest.fixture(scope="session")
def pristine_run(tmp_path_factory, _offline_env) -> Path:
    """A run folder as train.py writes it (mamba-tiny, state_offset_h, GLUE RTE fixture rows, one debug step)."""
    from stateft.app.training import train

    out = tmp_path_factory.mktemp("pristine") / "run"
    overrides = [
        "model=mamba-tiny",
        "method=state_offset_h",
        "dataset=glue_rte",
        f"dataset.path={FIXTURES / 'glue_rte'}",
        "trainer=debug",
        "logger=none",
        f"output_dir={out}",
    ]
    train(compose_checked("train", overrides))
    return out


@pytest.fixture
def run(pristine_run, tmp_path) -> Path:
    """A fresh copy of the pristine run folder, to damage."""
    return Path(shutil.copytree(pristine_run, tmp_path / "run"))


@pytest.fixture
def marker(tmp_path) -> Path:
    """The file every payload would create; each test asserts it never appears."""
    return tmp_path / "MARKER"


class Payload:
    """An object whose unpickling runs a shell command (what torch.load(weights_only=False) would do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def planted_pickle(folder: Path, marker: Path, name: str = "planted.pt") -> Path:
    """A torch.save file whose loading with weights_only=False runs ``touch marker``."""
    import torch

    path = folder / name
    torch.save({"weight": Payload(f"touch {marker}")}, path)
    return path


def payload_targets(folder: Path, marker: Path) -> dict[str, dict]:
    """Hydra ``_target_`` nodes that would run a command or write ``marker`` if instantiated."""
    src = folder / "source.txt"
    src.write_text("x")
    return {
        "os.system": {"_target_": "os.system", "command": f"touch {marker}"},
        "subprocess.run": {"_target_": "subprocess.run", "args": ["touch", str(marker)]},
        "torch.load": {"_target_": "torch.load", "f": str(planted_pickle(folder, marker)), "weights_only": False},
        "builtins.open": {"_target_": "builtins.open", "file": str(marker), "mode": "w"},
        "shutil.copyfile": {"_target_": "shutil.copyfile", "src": str(src), "dst": str(marker)},
        "sqlite3.connect": {"_target_": "sqlite3.connect", "database": str(marker)},
        "builtins.exec": {"_target_": "builtins.exec", "_args_": [f"open({str(marker)!r}, 'w')"]},
        "partial": {"_target_": "os.system", "_partial_": True, "command": f"touch {marker}"},
    }


def read_json(path: Path):
    return json.loads(path.read_text())


def write_json(path: Path, payload) -> None:
    path.write_text(json.dumps(payload))


def evaluate_refuses(overrides: list[str], *patterns: str) -> UserError:
    """``evaluate`` (in process) ends in one UserError whose one-line message holds every pattern."""
    from stateft.app.evaluation import evaluate

    with pytest.raises(UserError) as err:
        evaluate(compose_checked("eval", [*overrides, "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]))
    message = str(err.value)
    assert "\n" not in message, message
    for pattern in patterns:
        assert pattern in message, message
    return err.value


def eval_overrides(tmp_path: Path, **kv: object) -> list[str]:
    return [f"{k}={v}" for k, v in kv.items()] + [f"output_dir={tmp_path / 'eval'}"]


def eval_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python eval.py ARGS`` as a user runs it (offline, output under tmp_path)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    out = tmp_path / "cli"
    argv = [sys.executable, "eval.py", *args, f"output_dir={out}", f"hydra.run.dir={out}", "trainer.accelerator=cpu"]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def assert_one_error_line(result: subprocess.CompletedProcess, *patterns: str) -> str:
    """Exit code 2 and exactly one line on stderr, ``error: ...``, holding every pattern."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    for pattern in patterns:
        assert pattern in lines[0], lines[0]
    return lines[0]

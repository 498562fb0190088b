"""Hub tests: a fake hub on the local disk (``fake_hub.py``), a per-test HF cache and stateft cache, offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stateft.app.checks import compose_checked
from tests.hub.fake_hub import FakeHub

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory):
    """Offline (the real huggingface_hub never reaches the network here), and a per-session data cache."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_MODE"] = "offline"
    os.environ["STATEFT_CACHE_DIR"] = str(tmp_path_factory.mktemp("stateft_cache"))


@pytest.fixture(autouse=True)
def _own_caches(tmp_path, monkeypatch):
    """Each test its own HF cache and stateft cache (where pulled adapters are linked)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("STATEFT_CACHE_DIR", str(tmp_path / "stateft_cache"))


@pytest.fixture
def hub(tmp_path, monkeypatch) -> FakeHub:
    """The fake hub, installed in place of huggingface_hub's API and downloads."""
    return FakeHub(tmp_path / "hf_cache").install(monkeypatch)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, _offline_env) -> Path:
    """A run folder as train.py writes it (mamba-tiny, state_offset_h, GLUE RTE fixture rows, one debug step)."""
    from stateft.app.training import train

    out = tmp_path_factory.mktemp("trained") / "run"
    train(compose_checked("train", run_overrides(out)))
    return out


def run_overrides(out: Path) -> list[str]:
    return [
        "model=mamba-tiny",
        "method=state_offset_h",
        "dataset=glue_rte",
        f"dataset.path={FIXTURES / 'glue_rte'}",
        "trainer=debug",
        "logger=none",
        f"output_dir={out}",
    ]


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    """A fresh copy of the trained run folder."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))

"""W&B set-up: offline without a key, offline when the server is unreachable, off when even that fails."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from stateft.app.loggers import build_loggers, wandb_credentials
from tests.app.fake_data import FlakyWandbLogger


@pytest.fixture
def with_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))


def _cfg(target: str):
    return OmegaConf.create({"logger": {"wandb": {"_target_": target, "offline": False}}})


def test_unreachable_server_falls_back_to_offline(with_key, capsys):
    FlakyWandbLogger.starts.clear()
    loggers = build_loggers(_cfg("tests.app.fake_data.FlakyWandbLogger"))
    assert len(loggers) == 1
    assert loggers[0].mode == "offline"
    assert FlakyWandbLogger.starts == ["online", "offline"]
    assert "logging offline" in capsys.readouterr().err


def test_wandb_that_cannot_start_at_all_leaves_the_run_without_it(with_key, capsys):
    assert build_loggers(_cfg("tests.app.fake_data.BrokenWandbLogger")) == []
    assert "W&B is off for this run" in capsys.readouterr().err


def test_credentials_from_env_or_netrc(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_credentials() is None
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "p" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_credentials() == str(netrc)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_credentials() == "WANDB_API_KEY"

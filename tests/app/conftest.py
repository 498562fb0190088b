"""App tests: configs composed from conf/ with the fixture data, tiny models, trainer=debug, no logger."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from stateft.app.checks import CONF_DIR, compose_checked, group_options
from stateft.methods.configs import METHOD_CONFIGS

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
APP_FIXTURES = Path(__file__).resolve().parent / "fixtures"
# the language app's matrix: methods of a language Mamba, datasets of text (images: tests/vision; deep S4: tests/s4)
METHODS = [m for m in group_options("method") if METHOD_CONFIGS[m].archs & {"mamba1", "mamba2"}]
DATASETS = [
    d
    for d in group_options("dataset")
    if not d.endswith("_base") and not d.startswith("vtab_") and d not in ("s4_synthetic", "pixel_transfer")
]


def model_for(method: str) -> str:
    """mamba-tiny, or mamba2-tiny for a method that does not apply to Mamba-1 (its registry entry's archs)."""
    from stateft.methods.configs import METHOD_CONFIGS

    return "mamba-tiny" if "mamba1" in METHOD_CONFIGS[method].archs else "mamba2-tiny"


def debug_overrides(method: str, dataset: str, out: Path) -> list[str]:
    """A fast_dev_run of ``method`` on ``dataset``'s fixture rows with tiny generation limits."""
    overrides = [
        f"model={model_for(method)}",
        f"method={method}",
        f"dataset={dataset}",
        "trainer=debug",
        "logger=none",
        f"output_dir={out}",
        "dataset.max_new_tokens=3",
        "dataset.num_beams=2",
    ]
    if dataset != "demo":  # demo.yaml points at the fixture rows itself
        overrides.append(f"dataset.path={FIXTURES / dataset}")
    if method in ("sdt", "sdlora"):
        overrides.append("method.num_warmup_it=1")  # the warm-up that picks the dimensions (500 updates in the papers)
    return overrides


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory):
    """Offline, and a per-session data cache (never ~/.cache)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_MODE"] = "offline"
    os.environ["STATEFT_CACHE_DIR"] = str(tmp_path_factory.mktemp("stateft_cache"))


@pytest.fixture(scope="module")
def hydra_ctx():
    """Hydra initialised on conf/ for ``hydra.compose`` (module scope: one initialisation per test file)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


@pytest.fixture
def compose():
    """compose("train", [...]) -> the checked config (as the command line would get it)."""
    return compose_checked


def subprocess_env() -> dict[str, str]:
    """Environment for running train.py / eval.py as a user would (offline, repo importable)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    return env


PYTHON = sys.executable

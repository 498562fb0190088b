"""Data fixtures: DataModules on the bundled fixture rows, each with its own cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def tok():
    from stateft.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture
def make_dm(tmp_path):
    """Build a DataModule class with fixture defaults (cache in tmp_path) and any overrides."""

    def make(cls, **overrides):
        kwargs = {"cache_dir": str(tmp_path / "cache"), **overrides}
        return cls(**kwargs)

    return make

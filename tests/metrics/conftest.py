"""Spider fixtures: the real dev set (tests/fixtures/release) and stand-in databases built from its tables.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.metrics.spider_db import build_all


@pytest.fixture(scope="session")
def spider_dev(release_data) -> list[dict]:
    return json.loads((release_data / "spider" / "dev.json").read_text())


@pytest.fixture(scope="session")
def spider_tables_path(release_data) -> Path:
    return release_data / "spider" / "tables.json"


@pytest.fixture(scope="session")
def spider_db_dir(tmp_path_factory, spider_tables_path) -> Path:
    entries = json.loads(spider_tables_path.read_text())
    return build_all(entries, tmp_path_factory.mktemp("spider_db"))

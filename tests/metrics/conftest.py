"""Spider fixtures: the shared dev set and stand-in databases built from its tables.json (never the real ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.metrics.spider_db import build_all

SPIDER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spider"


@pytest.fixture(scope="session")
def spider_dev() -> list[dict]:
    return json.loads((SPIDER / "dev.json").read_text())


@pytest.fixture(scope="session")
def spider_tables_path() -> Path:
    return SPIDER / "tables.json"


@pytest.fixture(scope="session")
def spider_db_dir(tmp_path_factory, spider_tables_path) -> Path:
    entries = json.loads(spider_tables_path.read_text())
    return build_all(entries, tmp_path_factory.mktemp("spider_db"))

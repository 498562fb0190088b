"""The bundled fixture rows use exactly the hub schemas listed in benchmarks.md."""

from __future__ import annotations

import json

import pytest

from tests.data.conftest import FIXTURES

GLUE_FIELDS = {
    "rte": {"sentence1", "sentence2"}, "mrpc": {"sentence1", "sentence2"}, "cola": {"sentence"},
    "sst2": {"sentence"}, "qnli": {"question", "sentence"}, "qqp": {"question1", "question2"},
    "mnli": {"premise", "hypothesis"},
}  # fmt: skip
SCHEMAS = {f"glue_{task}": fields | {"label", "idx"} for task, fields in GLUE_FIELDS.items()}
SCHEMAS |= {
    "samsum": {"id", "dialogue", "summary"},
    "dart": {"tripleset", "subtree_was_extended", "annotations"},
    "spider": {"db_id", "query", "question", "query_toks", "query_toks_no_value", "question_toks"},
}


def rows(name: str) -> dict[str, list[dict]]:
    return {
        p.stem: [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted((FIXTURES / name).glob("*.jsonl"))
    }


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_fixture_rows_have_the_hub_schema(name):
    splits = rows(name)
    assert "train" in splits
    assert sum(len(r) for r in splits.values()) >= 18  # a few dozen rows per benchmark family member
    for split_rows in splits.values():
        for row in split_rows:
            assert set(row) == SCHEMAS[name]
    if name.startswith("glue_"):
        labels = {row["label"] for r in splits.values() for row in r}
        assert labels == ({0, 1, 2} if name == "glue_mnli" else {0, 1})
    if name == "dart":
        for row in (row for r in splits.values() for row in r):
            assert set(row["annotations"]) == {"source", "text"}
            assert len(row["annotations"]["source"]) == len(row["annotations"]["text"])
            assert all(len(triple) == 3 for triple in row["tripleset"])
    if name == "samsum":
        assert all("\r\n" in row["dialogue"] for r in splits.values() for row in r)


def test_spider_fixture_has_tables_and_database_scripts():
    tables = json.loads((FIXTURES / "spider" / "tables.json").read_text())
    db_ids = {t["db_id"] for t in tables}
    used = {row["db_id"] for r in rows("spider").values() for row in r}
    assert used <= db_ids
    for db_id in db_ids:
        assert (FIXTURES / "spider" / "database" / db_id / f"{db_id}.sql").is_file()
    assert not list((FIXTURES / "spider").rglob("*.sqlite"))  # built on demand, never committed

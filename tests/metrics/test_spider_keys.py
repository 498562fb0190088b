"""Select keys of the original execution match vs the keys implied by the official parse stored in dev.json."""

from __future__ import annotations

import pytest

from stateft.metrics.spider.keys import select_keys
from stateft.metrics.spider.parse import SqlParseError
from stateft.metrics.spider.schema import Schema, load_schemas


def official_keys(sql: dict, schema: Schema) -> list:
    """Keys as the original script builds them: val_unit[1] (or the op and both col units), FK-mapped columns of the
    top-level FROM tables, DISTINCT flags dropped."""
    tables = [schema.tables[u[1]].lower() for u in sql["from"]["table_units"] if u[0] == "table_unit"]
    valid = {f"__{t}.{c}__" for t in tables for c in schema.table_columns()[t]}
    fk = schema.foreign_key_map()

    def col_unit(cu):
        col = schema.column_id(cu[1])
        return (cu[0], fk.get(col, col) if col in valid else col, None)

    return [
        col_unit(vu[1]) if vu[2] is None else (vu[0], col_unit(vu[1]), col_unit(vu[2])) for _, vu in sql["select"][1]
    ]


def test_keys_of_every_dev_gold_match_the_official_parse(spider_dev, spider_tables_path):
    schemas = load_schemas(spider_tables_path)
    diffs = []
    for ex in spider_dev:
        schema = schemas[ex["db_id"]]
        ours = select_keys(ex["query"], schema)
        if ours != official_keys(ex["sql"], schema):
            diffs.append((ex["query"], ours))
    assert not diffs, f"{len(diffs)} differ, first: {diffs[:3]}"


SCHEMA = Schema.from_entry(
    {
        "db_id": "x",
        "table_names_original": ["singer", "concert"],
        "column_names_original": [[-1, "*"], [0, "singer_id"], [0, "name"], [1, "concert_id"], [1, "singer_id"]],
        "column_types": ["text", "number", "text", "number", "number"],
        "primary_keys": [1, 3],
        "foreign_keys": [[4, 1]],
    }
)


def test_key_rules():
    keys = select_keys  # shorthand
    # the item's own aggregation is not part of the key; * differs from a column
    assert keys("SELECT max(name) FROM singer", SCHEMA) == keys("SELECT min(name) FROM singer", SCHEMA)
    assert keys("SELECT count(*) FROM singer", SCHEMA) != keys("SELECT count(name) FROM singer", SCHEMA)
    assert keys("SELECT count(DISTINCT name) FROM singer", SCHEMA) == keys("SELECT count(name) FROM singer", SCHEMA)
    # aliases resolve; FK-linked columns of FROM tables share a key
    joined = "FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id"
    assert keys(f"SELECT T1.singer_id {joined}", SCHEMA) == keys(f"SELECT T2.singer_id {joined}", SCHEMA)
    assert keys("SELECT singer_id FROM concert", SCHEMA) == [(0, "__singer.singer_id__", None)]
    assert keys("SELECT name FROM singer", SCHEMA) == [(0, "__singer.name__", None)]
    assert keys("SELECT name - singer_id FROM singer", SCHEMA) == [
        (1, (0, "__singer.name__", None), (0, "__singer.singer_id__", None))
    ]
    assert keys("SELECT singer_id - max(singer_id) FROM singer", SCHEMA) == [
        (1, (0, "__singer.singer_id__", None), (1, "__singer.singer_id__", None))
    ]
    assert keys("SELECT * FROM singer", SCHEMA) == keys("SELECT count(*) FROM singer", SCHEMA)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT nope FROM singer",
        "SELECT name FROM nowhere",
        "SELECT FROM",
        "DROP TABLE x",
        # select items the official parser cannot read
        "SELECT count(*) AS n FROM singer",
        "SELECT T1.* FROM singer AS T1",
        "SELECT max(singer_id) - singer_id FROM singer",
        "SELECT name || 'x' FROM singer",
        "SELECT singer_id + singer_id + singer_id FROM singer",
        "SELECT 1 FROM singer",
    ],
)
def test_unresolvable_predictions_raise(sql):
    with pytest.raises(SqlParseError):
        select_keys(sql, SCHEMA)

"""Test helper: SQLite databases built from a Spider ``tables.json`` entry, filled with generated rows.

The real Spider databases are not shipped; these stand-ins have the same tables and columns, so every gold query
runs. Values come from small pools so joins and filters find rows: numbers 1..5 (some rows NULL-free floats), text
from a few words. Deterministic for a given seed.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

TEXT_POOL = ("alpha", "beta", "gamma", "delta")


def _value(col_type: str, rng: random.Random) -> Any:
    if col_type in ("number", "time", "boolean", "others"):
        return rng.choice((1, 2, 3, 4, 5, 2.5))
    return rng.choice(TEXT_POOL)


def build_database(entry: dict[str, Any], path: Path, rows_per_table: int = 6, seed: int = 0) -> Path:
    """Create ``path`` with one table per ``table_names_original`` entry (``sqlite_sequence`` skipped)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for t, table in enumerate(entry["table_names_original"]):
        if table.lower() == "sqlite_sequence":
            continue
        cols = [
            (name, entry["column_types"][i]) for i, (ti, name) in enumerate(entry["column_names_original"]) if ti == t
        ]
        decl = ", ".join(f'"{name}" {"NUMERIC" if ty == "number" else "TEXT"}' for name, ty in cols)
        conn.execute(f'CREATE TABLE "{table}" ({decl})')
        for _ in range(rows_per_table):
            conn.execute(
                f'INSERT INTO "{table}" VALUES ({", ".join("?" * len(cols))})', [_value(ty, rng) for _, ty in cols]
            )
    conn.commit()
    conn.close()
    return path


def build_all(entries: list[dict[str, Any]], root: Path, rows_per_table: int = 6) -> Path:
    """``root/<db_id>/<db_id>.sqlite`` for every entry; returns ``root``."""
    for i, entry in enumerate(entries):
        build_database(entry, root / entry["db_id"] / f"{entry['db_id']}.sqlite", rows_per_table, seed=i)
    return root


# A one-table database whose rows a test chooses: person(person_id, name, city)
TOWN = {
    "db_id": "town",
    "table_names_original": ["person"],
    "column_names_original": [[-1, "*"], [0, "person_id"], [0, "name"], [0, "city"]],
    "column_types": ["text", "number", "text", "text"],
    "primary_keys": [1],
    "foreign_keys": [],
}


def build_town(root: Path, people: list[tuple[int, str, str]]) -> Path:
    """``root/town/town.sqlite`` holding ``people`` as (person_id, name, city) rows; returns ``root``."""
    (root / "town").mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(root / "town" / "town.sqlite")
    conn.execute("CREATE TABLE person (person_id INTEGER, name TEXT, city TEXT)")
    conn.executemany("INSERT INTO person VALUES (?, ?, ?)", people)
    conn.commit()
    conn.close()
    return root

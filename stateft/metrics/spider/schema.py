"""Spider schemas from ``tables.json``: table and column names (original spelling), types, keys."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from stateft.errors import UserError


@dataclass(frozen=True)
class Schema:
    """One database of ``tables.json``. Column 0 is ``*``; ``columns[i] = (table_index, name)``."""

    db_id: str
    tables: tuple[str, ...]
    columns: tuple[tuple[int, str], ...]
    types: tuple[str, ...]
    primary_keys: tuple[int, ...]
    foreign_keys: tuple[tuple[int, int], ...]

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Schema:
        """Build from one ``tables.json`` entry (composite primary keys, lists in newer releases, are flattened)."""
        pks: list[int] = []
        for pk in entry["primary_keys"]:
            pks.extend(pk if isinstance(pk, list) else [pk])
        return cls(
            db_id=entry["db_id"],
            tables=tuple(entry["table_names_original"]),
            columns=tuple((int(t), str(c)) for t, c in entry["column_names_original"]),
            types=tuple(entry["column_types"]),
            primary_keys=tuple(pks),
            foreign_keys=tuple((int(a), int(b)) for a, b in entry["foreign_keys"]),
        )

    def table_columns(self) -> dict[str, list[str]]:
        """Lower-cased table name -> lower-cased column names (the evaluation scripts compare lower case)."""
        out: dict[str, list[str]] = {t.lower(): [] for t in self.tables}
        for t, c in self.columns:
            if t >= 0:
                out[self.tables[t].lower()].append(c.lower())
        return out

    def column_id(self, index: int) -> str:
        """``__table.column__`` (lower case), ``__all__`` for ``*``: the evaluation scripts' column ids."""
        t, c = self.columns[index]
        return "__all__" if t < 0 else f"__{self.tables[t].lower()}.{c.lower()}__"

    def foreign_key_map(self) -> dict[str, str]:
        """Columns linked by foreign keys (transitively) -> the linked column with the smallest index."""
        groups: list[set[int]] = []
        for a, b in self.foreign_keys:
            group = next((g for g in groups if a in g or b in g), None)
            if group is None:
                group = set()
                groups.append(group)
            group.update((a, b))
        return {self.column_id(i): self.column_id(min(g)) for g in groups for i in g}


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict[str, Schema]:
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    return {e["db_id"]: Schema.from_entry(e) for e in entries}


def load_schemas(path: str | Path) -> dict[str, Schema]:
    """``db_id -> Schema`` for every entry of a ``tables.json``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            f"Spider tables file {str(path)!r} not found: point dataset.tables (or --tables) at the "
            "tables.json of the Spider release"
        )
    try:
        return _load(str(path.resolve()), path.stat().st_mtime)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a Spider tables.json ({type(err).__name__}: {err})") from None

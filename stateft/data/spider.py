"""Spider text-to-SQL: question + serialised schema -> lower-cased SQL; execution accuracy per hardness.

Data: ``xlangai/spider`` from the hub, or ``path`` = the folder of the official release (``train_spider.json``,
``dev.json``, ``tables.json``, ``database/``) or of files with the hub schema. Schemas come from ``tables`` (default
``<path>/tables.json``) and databases from ``db_dir`` (default ``<path>/database``); a database folder may hold a
``<db_id>.sql`` script instead of ``<db_id>.sqlite`` (the test fixtures): it is built into the cache on first use.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from stateft.data.base import TextToTextDataModule
from stateft.data.databases import materialize_databases
from stateft.data.loading import load_split, require_fields, resolve_path
from stateft.data.task import Example, Task
from stateft.errors import UserError
from stateft.metrics.spider import Schema, SpiderEvaluator, flat_scores, load_schemas, summarize
from stateft.metrics.spider.gold import GOLD_SQL
from stateft.metrics.spider.match import SEMANTICS
from stateft.tokenizer import EOS_TOKEN

PREFIX = "Create a sql request for the following question and schema:\n###"


def serialize_schema(schema: Schema) -> str:
    """``Table: col type ,  col type ,  foreign: to_col from to_table ,  primary: pk | Table2: ...``.

    Original names; everything after ``Table: `` is lower-cased; foreign keys are those leaving the table (the
    ``foreign:`` item is emitted even when empty).
    """
    parts = []
    for t, table in enumerate(schema.tables):
        items = [f"{name} {schema.types[i]}" for i, (ti, name) in enumerate(schema.columns) if ti == t]
        foreign = [
            f"{schema.columns[dst][1]} from {schema.tables[schema.columns[dst][0]]}"
            for src, dst in schema.foreign_keys
            if schema.columns[src][0] == t
        ]
        primary = [schema.columns[i][1] for i in schema.primary_keys if schema.columns[i][0] == t]
        items += ["foreign: " + " , ".join(foreign), "primary: " + " , ".join(primary)]
        parts.append(table + ": " + " ,  ".join(items).lower())
    return " | ".join(parts)


def format_spider(row: dict[str, Any], schema: Schema) -> Example:
    """prefix + ``Question: q\\Schema: s\\n###`` (a literal backslash, as in the reference); target = lower-cased
    gold SQL + EOS. ``meta["query"]`` keeps the gold as written; the metric executes it or its lower-cased form
    (``dataset.gold_sql``)."""
    prompt = "Question: " + row["question"] + "\\Schema: " + serialize_schema(schema) + "\n" + "###"
    meta = {"db_id": row["db_id"], "query": row["query"], "question": row["question"]}
    return Example(PREFIX, prompt, row["query"].lower().strip() + EOS_TOKEN, meta)


class SpiderDataModule(TextToTextDataModule):
    """Spider with ``semantics`` (``original``: the reference papers' metric; ``test-suite``), ``gold_sql`` (the
    gold executed: ``original`` as written, or ``lowercase`` as the State-offset reference does) and a per-query
    ``timeout`` (seconds) and memory cap (``max_memory_mb``) for the hardened executor."""

    hub_id = "xlangai/spider"

    def __init__(
        self,
        tables: str | None = None,
        db_dir: str | None = None,
        semantics: str = "original",
        gold_sql: str = "original",
        timeout: float = 30.0,
        max_rows: int = 100_000,
        max_memory_mb: float = 256.0,
        **kwargs: Any,
    ) -> None:
        if semantics not in SEMANTICS:
            raise UserError(f"dataset.semantics must be one of {SEMANTICS}, got {semantics!r}")
        if gold_sql not in GOLD_SQL:
            raise UserError(f"dataset.gold_sql must be one of {GOLD_SQL}, got {gold_sql!r}")
        path = resolve_path(kwargs.get("path"))
        self.tables_path = resolve_path(tables) if tables else (path or Path(".")) / "tables.json"
        self.db_dir = resolve_path(db_dir) if db_dir else (path or Path(".")) / "database"
        self.semantics, self.gold_sql, self.timeout, self.max_rows = semantics, gold_sql, timeout, max_rows
        self.max_memory_mb = max_memory_mb
        self._schemas: dict[str, Schema] | None = None
        super().__init__(**kwargs)

    @property
    def schemas(self) -> dict[str, Schema]:
        if self._schemas is None:
            if not self.tables_path.is_file():
                raise UserError(
                    f"Spider needs tables.json: {str(self.tables_path)!r} not found; set dataset.tables (or "
                    "dataset.path to the Spider release folder)"
                )
            self._schemas = load_schemas(self.tables_path)
        return self._schemas

    def cache_options(self) -> dict[str, Any]:
        stat = self.tables_path.stat() if self.tables_path.is_file() else None
        return {"tables": str(self.tables_path), "tables_stat": [stat.st_size, stat.st_mtime_ns] if stat else None}

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        alias = {"train": ("train_spider",), "validation": ("dev",), "test": ("test",)}[split]
        rows = load_split(self.hub_id, self.hub_config, split, self.path, aliases=alias)
        require_fields(rows, ("db_id", "query", "question"), f"spider {split}")
        return rows

    def format(self, row: dict[str, Any], train: bool) -> list[Example]:
        schema = self.schemas.get(row["db_id"])
        if schema is None:
            raise UserError(f"db_id {row['db_id']!r} is not in {self.tables_path}")
        return [format_spider(row, schema)]

    def build_task(self, metric: str, num_beams: int, max_new_tokens: int) -> Task:
        return Task("spider", metric, True, partial(_score, self), num_beams=num_beams, max_new_tokens=max_new_tokens)

    def evaluator(self) -> SpiderEvaluator:
        """The executor-backed scorer for this data (databases built from ``.sql`` scripts when needed)."""
        if not self.db_dir.is_dir():
            raise UserError(f"Spider databases not found at {str(self.db_dir)!r}: set dataset.db_dir to the release's "
                            "database/ folder")  # fmt: skip
        cache_root = Path(self.cache_dir).expanduser() if self.cache_dir else Path.home() / ".cache" / "stateft"
        db_dir = materialize_databases(self.db_dir, cache_root)
        return SpiderEvaluator(
            db_dir, self.schemas, self.semantics, self.timeout, self.max_rows, self.gold_sql, self.max_memory_mb
        )


def _score(dm: SpiderDataModule, predictions: list[str], examples: list[dict[str, Any]]) -> dict[str, float]:
    results = dm.evaluator().evaluate(predictions, [ex["query"] for ex in examples], [ex["db_id"] for ex in examples])
    return flat_scores(summarize(results))

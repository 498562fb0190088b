"""Spider execution accuracy per hardness for lists of predicted and gold queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stateft.metrics.spider.executor import SafeExecutor
from stateft.metrics.spider.gold import GOLD_SQL, executed_gold
from stateft.metrics.spider.hardness import LEVELS, hardness
from stateft.metrics.spider.keys import select_keys
from stateft.metrics.spider.match import (
    SEMANTICS,
    normalize_operators,
    order_matters,
    original_match,
    test_suite_match,
)
from stateft.metrics.spider.parse import SqlParseError
from stateft.metrics.spider.schema import Schema
from stateft.metrics.spider.statement import remove_distinct


@dataclass
class ExampleResult:
    """Per-example outcome: ``match`` is 1/0; errors say why a prediction or a gold failed."""

    index: int
    db_id: str
    hardness: str
    match: int
    pred_error: str | None = None
    gold_error: str | None = None


def database_files(db_dir: str | Path, db_id: str, all_files: bool) -> list[Path]:
    """``<db_dir>/<db_id>/<db_id>.sqlite``; with ``all_files`` every ``*.sqlite`` in that folder (a test suite)."""
    folder = Path(db_dir) / db_id
    if all_files:
        return sorted(folder.glob("*.sqlite"))
    path = folder / f"{db_id}.sqlite"
    return [path] if path.is_file() else []


class SpiderEvaluator:
    """Scores (prediction, gold, db_id) triples under ``semantics`` (``original`` or ``test-suite``), executing
    the gold as ``gold_sql`` says (``original`` or ``lowercase``: see ``gold.executed_gold``)."""

    def __init__(self, db_dir: str | Path, schemas: dict[str, Schema], semantics: str = "original",
                 timeout: float = 30.0, max_rows: int = 100_000, gold_sql: str = "original",
                 max_memory_mb: float = 256.0) -> None:  # fmt: skip
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
        if gold_sql not in GOLD_SQL:
            raise ValueError(f"gold_sql must be one of {GOLD_SQL}, got {gold_sql!r}")
        self.db_dir, self.schemas, self.semantics, self.gold_sql = Path(db_dir), schemas, semantics, gold_sql
        self.executor = SafeExecutor(timeout=timeout, max_rows=max_rows, max_memory_mb=max_memory_mb)

    def score_one(self, index: int, pred: str, gold: str, db_id: str) -> ExampleResult:
        """Hardness of the executed gold and the execution match of the prediction; never raises for bad SQL."""
        gold = executed_gold(gold, self.gold_sql)
        try:
            level = hardness(gold)
        except SqlParseError as err:
            return ExampleResult(index, db_id, "unknown", 0, gold_error=f"gold does not parse: {err}")
        result = ExampleResult(index, db_id, level, 0)
        schema = self.schemas.get(db_id)
        files = database_files(self.db_dir, db_id, self.semantics == "test-suite")
        if schema is None or not files:
            result.gold_error = f"no schema or database for {db_id!r} under {self.db_dir}"
            return result
        if self.semantics == "original":
            self._original(result, pred, gold, schema, files[0])
        else:
            self._test_suite(result, pred, gold, files)
        return result

    def _original(self, result: ExampleResult, pred: str, gold: str, schema: Schema, db: Path) -> None:
        gold_run = self.executor.run(db, gold)
        if not gold_run.ok:
            result.gold_error = gold_run.error
            return
        pred_run = self.executor.run(db, pred)
        if not pred_run.ok:
            result.pred_error = pred_run.error
            return
        try:
            gold_keys = select_keys(gold, schema)
        except SqlParseError as err:
            result.gold_error = f"gold select does not resolve: {err}"
            return
        try:
            pred_keys = select_keys(pred, schema)
        except SqlParseError as err:  # the original script scores what its parser rejects as 0
            result.pred_error = f"does not parse: {err}"
            return
        result.match = int(original_match(pred_run.rows, gold_run.rows, pred_keys, gold_keys))

    def _test_suite(self, result: ExampleResult, pred: str, gold: str, files: list[Path]) -> None:
        pred, gold = normalize_operators(pred), normalize_operators(gold)
        try:
            gold = remove_distinct(gold)
        except ValueError as err:
            result.gold_error = str(err)
            return
        try:
            pred = remove_distinct(pred)
        except ValueError as err:
            result.pred_error = str(err)
            return
        ordered = order_matters(gold)
        for db in files:  # the prediction must match on every database of the suite
            gold_run = self.executor.run(db, gold)
            if not gold_run.ok:
                result.gold_error = f"{db.name}: {gold_run.error}"
                return
            pred_run = self.executor.run(db, pred)
            if not pred_run.ok:
                result.pred_error = pred_run.error
                return
            if not test_suite_match(pred_run.rows, gold_run.rows, ordered):
                return
        result.match = 1

    def evaluate(self, preds: Sequence[str], golds: Sequence[str], db_ids: Sequence[str]) -> list[ExampleResult]:
        """Per-example results, in input order."""
        if not len(preds) == len(golds) == len(db_ids):
            raise ValueError(f"{len(preds)} predictions, {len(golds)} golds, {len(db_ids)} db ids")
        return [self.score_one(i, p, g, d) for i, (p, g, d) in enumerate(zip(preds, golds, db_ids))]


def summarize(results: Sequence[ExampleResult]) -> dict[str, Any]:
    """Counts and execution accuracy per hardness and overall, plus how many golds and predictions failed."""
    counts = {level: sum(r.hardness == level for r in results) for level in LEVELS}
    counts["all"] = len(results)
    accuracy = {}
    for level in (*LEVELS, "all"):
        chosen = [r for r in results if level == "all" or r.hardness == level]
        accuracy[level] = sum(r.match for r in chosen) / len(chosen) if chosen else 0.0
    return {
        "counts": counts,
        "exec_acc": accuracy,
        "gold_errors": sum(r.gold_error is not None for r in results),
        "pred_errors": sum(r.pred_error is not None for r in results),
    }


def flat_scores(summary: dict[str, Any]) -> dict[str, float]:
    """``exec_acc``, ``exec_acc_<level>``, ``count_<level>`` and ``count_all`` (the official table's count row),
    ``gold_errors``: the metric dict a Task returns."""
    out = {"exec_acc": summary["exec_acc"]["all"]}
    out.update({f"exec_acc_{level}": summary["exec_acc"][level] for level in LEVELS})
    out.update({f"count_{level}": float(summary["counts"][level]) for level in (*LEVELS, "all")})
    out["gold_errors"] = float(summary["gold_errors"])
    return out


def as_dict(result: ExampleResult) -> dict[str, Any]:
    """JSON-ready per-example record."""
    return asdict(result)

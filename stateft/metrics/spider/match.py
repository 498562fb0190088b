"""Execution match of a predicted query against the gold, under the two semantics in use.

``original`` (the Spider script the reference papers report): results are compared per select column, the columns
keyed by what they select (``select_keys``): each key maps to the column's values in row order, so row order always
matters, column order does not, ``count(*)`` differs from ``count(col)``, and duplicated keys collapse (the last
wins). A prediction that does not parse, or whose columns do not resolve in the schema, scores 0.

``test-suite`` (the official metric since 2020): only the first statement of each query runs, and DISTINCT is
removed from both (``statement.remove_distinct``, the script's sqlparse pass); rows are compared in order
only when the gold contains ``order by``, else as multisets; a permutation of the columns that makes the results
equal is searched; values compare with Python ``==`` (1 == 1.0). An empty result equals any empty result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

SEMANTICS = ("original", "test-suite")


def keyed_columns(rows: Sequence[tuple], keys: Sequence[object]) -> dict[object, list]:
    """``key -> column values in row order`` (a later column with the same key replaces an earlier one)."""
    return {key: [row[i] for row in rows] for i, key in enumerate(keys)}


def original_match(
    pred_rows: Sequence[tuple], gold_rows: Sequence[tuple], pred_keys: Sequence, gold_keys: Sequence
) -> bool:
    """The original Spider comparison of two results, given each query's select keys."""
    return keyed_columns(pred_rows, pred_keys) == keyed_columns(gold_rows, gold_keys)


def normalize_operators(sql: str) -> str:
    """Join split comparison operators (``> =`` -> ``>=``), as the test-suite script does before running."""
    return sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


def order_matters(gold_sql: str) -> bool:
    """Row order matters when the gold has ORDER BY (the test-suite script's plain text test)."""
    return "order by" in gold_sql.lower()


def _column_candidates(pred_rows: Sequence[tuple], gold_rows: Sequence[tuple]) -> list[list[int]] | None:
    """For each gold column, the predicted columns with the same set of values (a necessary condition)."""
    n = len(gold_rows[0])
    gold_sets = [{row[j] for row in gold_rows} for j in range(n)]
    pred_sets = [{row[i] for row in pred_rows} for i in range(n)]
    candidates = [[i for i in range(n) if pred_sets[i] == gold_sets[j]] for j in range(n)]
    return None if any(not c for c in candidates) else candidates


def _permutations(candidates: list[list[int]], chosen: list[int] | None = None):
    chosen = chosen or []
    if len(chosen) == len(candidates):
        yield tuple(chosen)
        return
    for i in candidates[len(chosen)]:
        if i not in chosen:
            yield from _permutations(candidates, [*chosen, i])


def test_suite_match(pred_rows: Sequence[tuple], gold_rows: Sequence[tuple], ordered: bool) -> bool:
    """True when some column permutation of the prediction equals the gold result (as lists or as multisets)."""
    if not pred_rows and not gold_rows:
        return True
    if len(pred_rows) != len(gold_rows) or len(pred_rows[0]) != len(gold_rows[0]):
        return False
    candidates = _column_candidates(pred_rows, gold_rows)
    if candidates is None:
        return False
    gold = list(map(tuple, gold_rows)) if ordered else Counter(map(tuple, gold_rows))
    for perm in _permutations(candidates):
        permuted = [tuple(row[i] for i in perm) for row in pred_rows]
        if (permuted == gold) if ordered else (Counter(permuted) == gold):
            return True
    return False


test_suite_match.__test__ = False  # a library function, not a pytest test

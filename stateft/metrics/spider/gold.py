"""Which gold SQL is executed (and graded for hardness): the dataset's query, or the lower-cased query.

``original``: the ``query`` field as written. ``lowercase``: ``query.lower().strip()``, the training target without
EOS. The State-offset reference trains on that target and its metric executes the labels decoded back, so it runs
the lower-cased gold, string literals included: ``name = 'France'`` becomes ``name = 'france'``, which selects other
rows (SQLite's ``=`` is case-sensitive). Hardness is taken from the executed gold, as the reference's script grades
the gold it is given (lower-casing leaves the hardness of every Spider dev query unchanged).
"""

from __future__ import annotations

GOLD_SQL = ("original", "lowercase")


def executed_gold(query: str, gold_sql: str) -> str:
    """The gold query the evaluator runs under ``gold_sql`` (``original`` or ``lowercase``)."""
    if gold_sql == "original":
        return query
    if gold_sql == "lowercase":
        return query.lower().strip()
    raise ValueError(f"gold_sql must be one of {GOLD_SQL}, got {gold_sql!r}")

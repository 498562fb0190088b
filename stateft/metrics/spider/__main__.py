"""Score a Spider predictions file without a model.

    python -m stateft.metrics.spider --gold GOLD --pred PRED --db DB_DIR --tables tables.json \
        --semantics original|test-suite --gold-sql original|lowercase [--per-example OUT.jsonl] [--timeout 30]
        [--max-rows 100000] [--max-memory-mb 256]

GOLD has one ``SQL<TAB>db_id`` line per example (the official ``dev_gold.sql``), PRED one predicted query per line,
in the same order. ``--gold-sql lowercase`` executes (and grades) the lower-cased gold, as the State-offset
reference does. Prints one JSON object: counts and execution accuracy per hardness and overall.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stateft.errors import UserError
from stateft.metrics.spider.evaluate import SpiderEvaluator, as_dict, summarize
from stateft.metrics.spider.gold import GOLD_SQL
from stateft.metrics.spider.match import SEMANTICS
from stateft.metrics.spider.schema import load_schemas


def read_gold(path: Path) -> tuple[list[str], list[str]]:
    """(queries, db ids) of a ``SQL<TAB>db_id`` file; blank lines are skipped."""
    queries, db_ids = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        sql, sep, db_id = line.rstrip("\n").rpartition("\t")
        if not sep or not db_id.strip():
            raise UserError(f"{path}:{n}: expected 'SQL<TAB>db_id'")
        queries.append(sql.strip())
        db_ids.append(db_id.strip())
    return queries, db_ids


def read_predictions(path: Path, n_gold: int) -> list[str]:
    """One query per line; an empty line is an empty (failing) prediction; lines past the gold count must be blank."""
    lines = path.read_text(encoding="utf-8").split("\n")
    while len(lines) > n_gold and not lines[-1].strip():
        lines.pop()
    if len(lines) != n_gold:
        raise UserError(f"{path} has {len(lines)} predictions for {n_gold} gold queries (one per line, same order)")
    return [line.strip() for line in lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stateft.metrics.spider", description=__doc__.splitlines()[0])
    parser.add_argument("--gold", type=Path, required=True, help="SQL<TAB>db_id per line")
    parser.add_argument("--pred", type=Path, required=True, help="one predicted query per line")
    parser.add_argument("--db", type=Path, required=True, help="folder with <db_id>/<db_id>.sqlite")
    parser.add_argument("--tables", type=Path, required=True, help="Spider tables.json")
    parser.add_argument("--semantics", choices=SEMANTICS, default="original")
    parser.add_argument("--gold-sql", choices=GOLD_SQL, default="original",
                        help="execute the gold as written or lower-cased (the State-offset reference)")  # fmt: skip
    parser.add_argument("--per-example", type=Path, default=None, help="write per-example hardness and match (JSONL)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per query")
    parser.add_argument("--max-rows", type=int, default=100_000, help="rows fetched per query at most")
    parser.add_argument("--max-memory-mb", type=float, default=256.0,
                        help="memory per query at most (half for SQLite, half for the fetched rows)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        for path in (args.gold, args.pred):
            if not path.is_file():
                raise UserError(f"{path} not found")
        if not args.db.is_dir():
            raise UserError(f"database folder {args.db} not found (it holds <db_id>/<db_id>.sqlite)")
        golds, db_ids = read_gold(args.gold)
        preds = read_predictions(args.pred, len(golds))
        evaluator = SpiderEvaluator(args.db, load_schemas(args.tables), args.semantics, args.timeout, args.max_rows,
                                    gold_sql=args.gold_sql, max_memory_mb=args.max_memory_mb)  # fmt: skip
        results = evaluator.evaluate(preds, golds, db_ids)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.per_example:
        with open(args.per_example, "w", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(as_dict(r)) + "\n")
    print(json.dumps({"semantics": args.semantics, "gold_sql": args.gold_sql, **summarize(results)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

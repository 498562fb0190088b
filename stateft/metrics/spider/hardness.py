"""Spider hardness (easy / medium / hard / extra) from the gold SQL, by the rules of the official script.

Counted on the top-level query (see ``parse.top_select``):
- comp1 = [WHERE] + [GROUP BY] + [ORDER BY] + [LIMIT] + (FROM tables - 1) + OR connectors and LIKE conditions in
  the join conditions, WHERE and HAVING;
- comp2 = nested queries used as condition values (join conditions, WHERE, HAVING) + 1 for a set operation;
- others = [aggregations > 1] + [select columns > 1] + [WHERE conditions > 1] + [GROUP BY columns > 1], where the
  aggregation count keeps the official quirks: a negated WHERE condition counts as one, and so does every AND/OR
  connector and every negated condition of HAVING (HAVING's own aggregates do not count).
Conditions are read as the official parser reads them (``parse.as_script_reads``: an OR after a column-valued
comparison is swallowed).
"""

from __future__ import annotations

from dataclasses import dataclass

from stateft.metrics.spider.parse import (
    aggregate_id,
    as_script_reads,
    count_aggregates,
    flatten,
    is_like,
    is_negated,
    is_set_operation,
    parse,
    subqueries,
    top_select,
    unwrap,
)

LEVELS = ("easy", "medium", "hard", "extra")


@dataclass(frozen=True)
class Components:
    """The three counts the hardness rules read."""

    comp1: int
    comp2: int
    others: int


def components(sql: str) -> Components:
    """comp1, comp2 and others of a query (``SqlParseError`` when it does not parse)."""
    tree = parse(sql)
    select = top_select(tree)
    joins = select.args.get("joins") or []
    join_leaves, join_ops = [], []
    for join in joins:
        leaves, ops = as_script_reads(*flatten(join.args.get("on")))
        if leaves and join_leaves:
            join_ops.append("and")  # the script chains the ON conditions of successive joins with AND
        join_leaves += leaves
        join_ops += ops
    where = select.args.get("where")
    having = select.args.get("having")
    where_leaves, where_ops = as_script_reads(*flatten(where.this if where else None))
    having_leaves, having_ops = as_script_reads(*flatten(having.this if having else None))
    group = select.args.get("group")
    group_items = group.expressions if group else []
    order = select.args.get("order")
    order_items = [o.this for o in order.expressions] if order else []
    from_ = select.args.get("from") or select.args.get("from_")
    n_tables = (1 if from_ is not None else 0) + len(joins)

    conditions = join_leaves + where_leaves + having_leaves
    comp1 = (
        bool(where_leaves) + bool(group_items) + bool(order_items) + (select.args.get("limit") is not None)
        + max(n_tables - 1, 0)
        + (join_ops + where_ops + having_ops).count("or")
        + sum(is_like(leaf) for leaf in conditions)
    )  # fmt: skip
    comp2 = sum(len(list(subqueries(leaf))) for leaf in conditions) + is_set_operation(tree)

    aggregations = (
        sum(aggregate_id(unwrap(e)) > 0 for e in select.expressions)
        + sum(is_negated(leaf) for leaf in where_leaves)
        + sum(aggregate_id(unwrap(e)) > 0 for e in group_items)
        + sum(count_aggregates(unwrap(e)) for e in order_items)
        + len(having_ops) + sum(is_negated(leaf) for leaf in having_leaves)
    )  # fmt: skip
    others = (aggregations > 1) + (len(select.expressions) > 1) + (len(where_leaves) > 1) + (len(group_items) > 1)
    return Components(int(comp1), int(comp2), int(others))


def level(c: Components) -> str:
    """The official decision rules."""
    if c.comp1 <= 1 and c.others == 0 and c.comp2 == 0:
        return "easy"
    if (c.others <= 2 and c.comp1 <= 1 and c.comp2 == 0) or (c.comp1 <= 2 and c.others < 2 and c.comp2 == 0):
        return "medium"
    if (
        (c.others > 2 and c.comp1 <= 2 and c.comp2 == 0)
        or (2 < c.comp1 <= 3 and c.others <= 2 and c.comp2 == 0)
        or (c.comp1 <= 1 and c.others == 0 and c.comp2 <= 1)
    ):
        return "hard"
    return "extra"


def hardness(sql: str) -> str:
    """easy / medium / hard / extra of a gold query."""
    return level(components(sql))

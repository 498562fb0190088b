"""SQL parsing for the Spider metrics, on sqlglot (SQLite dialect).

``parse`` gives the syntax tree; ``top_select`` the top-level query in the evaluation scripts' sense (the leftmost
SELECT of an INTERSECT/UNION/EXCEPT chain: the scripts parse ``A UNION B UNION C`` as A with ``union = B UNION C``);
``flatten`` splits a WHERE/HAVING/ON condition into its leaf conditions and AND/OR connectors, as the scripts'
flat condition lists do.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import sqlglot
from sqlglot import exp

AGGREGATES = {exp.Max: 1, exp.Min: 2, exp.Count: 3, exp.Sum: 4, exp.Avg: 5}  # the scripts' AGG_OPS ids
SET_OPERATIONS = (exp.Union, exp.Intersect, exp.Except)


class SqlParseError(ValueError):
    """The query is not SQL we can parse (or resolve against the schema)."""


@lru_cache(maxsize=4096)
def parse(sql: str) -> exp.Expression:
    """The sqlglot tree of one SQLite statement; ``SqlParseError`` when it does not parse."""
    try:
        trees = sqlglot.parse(sql, read="sqlite")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as err:
        raise SqlParseError(str(err).splitlines()[0]) from None
    if trees and trees[0] is None:  # the official parser wants SELECT first: "; SELECT ..." does not parse
        raise SqlParseError("empty statement before ';'")
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise SqlParseError(f"expected one statement, got {len(trees)}")
    return trees[0]


def unwrap(node: exp.Expression) -> exp.Expression:
    """Strip parentheses and aliases."""
    while isinstance(node, (exp.Paren, exp.Alias, exp.Subquery)) and not isinstance(node.this, exp.Table):
        if isinstance(node, exp.Subquery) and not isinstance(node.this, (exp.Select, *SET_OPERATIONS, exp.Subquery)):
            break
        node = node.this
    return node


def top_select(tree: exp.Expression) -> exp.Select:
    """The leftmost SELECT of a set-operation chain (parentheses removed)."""
    node = unwrap(tree)
    while isinstance(node, SET_OPERATIONS):
        node = unwrap(node.this)
    if not isinstance(node, exp.Select):
        raise SqlParseError(f"not a SELECT query: {type(node).__name__}")
    return node


def is_set_operation(tree: exp.Expression) -> bool:
    """True when the query is an INTERSECT, UNION or EXCEPT at the top level."""
    return isinstance(unwrap(tree), SET_OPERATIONS)


def flatten(condition: exp.Expression | None) -> tuple[list[exp.Expression], list[str]]:
    """(leaf conditions, connectors ``"and"``/``"or"``) of a boolean condition, in order; parentheses ignored."""
    if condition is None:
        return [], []
    node = condition
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, (exp.And, exp.Or)):
        left, left_ops = flatten(node.this)
        right, right_ops = flatten(node.expression)
        return left + right, [*left_ops, "and" if isinstance(node, exp.And) else "or", *right_ops]
    return [node], []


def compared_to_column(leaf: exp.Expression) -> bool:
    """True when a comparison's value is an unquoted column reference (``T1.a = T2.b``)."""
    node = leaf.this if isinstance(leaf, exp.Not) else leaf
    value = node.args.get("expression")
    return isinstance(value, exp.Column) and not (isinstance(value.this, exp.Identifier) and value.this.quoted)


def as_script_reads(leaves: list[exp.Expression], ops: list[str]) -> tuple[list[exp.Expression], list[str]]:
    """The conditions the official parser keeps: it reads a column-valued condition's value up to the next AND or
    clause keyword, so in ``T1.a = T2.b OR T1.a = T2.c`` the ``OR ...`` part is swallowed (and not counted)."""
    if not leaves:
        return leaves, ops
    kept, kept_ops = [leaves[0]], []
    swallowing = compared_to_column(leaves[0])
    for op, leaf in zip(ops, leaves[1:]):
        if swallowing and op == "or":
            continue
        kept.append(leaf)
        kept_ops.append(op)
        swallowing = compared_to_column(leaf)
    return kept, kept_ops


def is_negated(leaf: exp.Expression) -> bool:
    """``NOT IN``, ``NOT LIKE``, ``NOT BETWEEN``... (the scripts' ``not_op``)."""
    return isinstance(leaf, exp.Not)


def is_like(leaf: exp.Expression) -> bool:
    """A LIKE condition, negated or not."""
    return isinstance(leaf.this if isinstance(leaf, exp.Not) else leaf, exp.Like)


def subqueries(node: exp.Expression) -> Iterator[exp.Expression]:
    """The outermost SELECTs / set operations under ``node`` (not those nested inside them)."""
    stack = list(node.iter_expressions())
    while stack:
        child = stack.pop(0)
        if isinstance(child, (exp.Select, *SET_OPERATIONS)):
            yield child
        else:
            stack[:0] = list(child.iter_expressions())


def aggregate_id(node: exp.Expression) -> int:
    """The scripts' AGG_OPS id of a node (0 when it is not max/min/count/sum/avg)."""
    return AGGREGATES.get(type(node), 0)


def count_aggregates(node: exp.Expression) -> int:
    """Aggregate calls in ``node`` outside nested queries."""
    total = aggregate_id(node) > 0
    for child in node.iter_expressions():
        if not isinstance(child, (exp.Select, *SET_OPERATIONS, exp.Subquery)):
            total += count_aggregates(child)
    return int(total)

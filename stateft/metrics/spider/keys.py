"""Select-column keys of the original Spider execution match.

A select item is keyed by the column(s) it reads, as the original script's parsed ``val_unit``: the aggregation of
the whole item is *not* part of the key (``max(a)`` and ``min(a)`` share a key), aggregations inside an arithmetic
item are; DISTINCT is ignored; columns resolve through the query's table aliases (or, unqualified, the first FROM
table that has them), and columns linked by foreign keys map to one representative when their table is in the
top-level FROM. ``*`` is ``__all__``, so ``count(*)`` and ``count(col)`` differ.
Select items the script's parser cannot read raise ``SqlParseError`` (the prediction then scores 0): aliases
(``count(*) AS n``), ``T1.*``, literals and functions other than the five aggregates, an aggregate on the left of an
arithmetic operator, and chains of more than one operator.
"""

from __future__ import annotations

from sqlglot import exp

from stateft.metrics.spider.parse import SqlParseError, aggregate_id, parse, top_select, unwrap
from stateft.metrics.spider.schema import Schema

UNIT_OPS = {exp.Sub: 1, exp.Add: 2, exp.Mul: 3, exp.Div: 4}  # the script's UNIT_OPS ids


class _Resolver:
    def __init__(self, tree: exp.Expression, select: exp.Select, schema: Schema) -> None:
        self.columns = schema.table_columns()
        self.aliases: dict[str, str] = {t: t for t in self.columns}
        for table in tree.find_all(exp.Table):  # aliases are global to the query, as in the script
            name = table.name.lower()
            if name not in self.columns:
                raise SqlParseError(f"unknown table {table.name!r}")
            if table.alias:
                self.aliases[table.alias.lower()] = name
        from_ = select.args.get("from") or select.args.get("from_")
        sources = ([from_.this] if from_ is not None else []) + [j.this for j in select.args.get("joins") or []]
        self.default_tables = [t.name.lower() for t in sources if isinstance(t, exp.Table)]
        fk_map = schema.foreign_key_map()
        valid = {f"__{t}.{c}__" for t in self.default_tables for c in self.columns[t]}
        self.fk_map = {col: rep for col, rep in fk_map.items() if col in valid}

    def column(self, node: exp.Expression) -> str:
        if isinstance(node, exp.Star):
            return "__all__"
        if isinstance(node, exp.Column) and isinstance(node.this, exp.Star):
            raise SqlParseError(f"qualified star {node.sql()!r} has no column id")  # ``T1.*``: the script fails too
        if not isinstance(node, exp.Column):
            raise SqlParseError(f"unsupported select expression {node.sql()!r}")
        name = node.name.lower()
        if node.table:
            table = self.aliases.get(node.table.lower())
            if table is None or name not in self.columns[table]:
                raise SqlParseError(f"unknown column {node.sql()!r}")
        else:
            table = next((t for t in self.default_tables if name in self.columns[t]), None)
            if table is None:
                raise SqlParseError(f"unknown column {name!r}")
        col = f"__{table}.{name}__"
        return self.fk_map.get(col, col)

    def col_unit(self, node: exp.Expression) -> tuple:
        node = unwrap(node)
        agg = aggregate_id(node)
        if agg:
            node = unwrap(node.this)
        if isinstance(node, exp.Distinct):
            node = unwrap(node.expressions[0])
        return (agg, self.column(node), None)

    def val_unit(self, node: exp.Expression) -> tuple:
        node = unwrap(node)
        op = UNIT_OPS.get(type(node))
        if op:
            return (op, self.col_unit(node.this), self.col_unit(node.expression))
        return self.col_unit(node)

    def key(self, item: exp.Expression) -> tuple:
        if isinstance(item, exp.Alias):
            # the script's tokenizer takes "AS" for a table alias and then fails on the select list
            raise SqlParseError(f"select alias {item.alias!r}")
        item = unwrap(item)
        if type(item) in UNIT_OPS and aggregate_id(unwrap(item.this)):
            # the script reads "max(a) - b" as the item max(a) followed by a stray "-" and fails
            raise SqlParseError(f"aggregate on the left of an operator: {item.sql()!r}")
        if aggregate_id(item):  # the item's own aggregation is not part of the key
            item = unwrap(item.this)
            if isinstance(item, exp.Distinct):
                item = item.expressions[0]
        return self.val_unit(item)


def select_keys(sql: str, schema: Schema) -> list[tuple]:
    """One key per top-level select item; ``SqlParseError`` when the query does not parse or resolve."""
    tree = parse(sql)
    select = top_select(tree)
    resolver = _Resolver(tree, select, schema)
    return [resolver.key(item) for item in select.expressions]

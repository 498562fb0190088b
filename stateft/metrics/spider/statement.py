"""The test-suite script's text pass: sqlparse's first statement, with DISTINCT removed.

The official test-suite script (taoyds/test-suite-sql-eval) removes DISTINCT by joining the tokens of
``sqlparse.parse(sql)[0]``, so it also keeps only the first statement: ``SELECT a FROM t; ORDER BY b`` runs as
``SELECT a FROM t;``. The same splitter is used here, so a ';' inside a string literal, a quoted name or a comment
does not split, exactly as there. Only that first statement is ever handed to the executor.

One departure: a text whose first statement holds no SQL (empty, or ``; SELECT ...``) is an error here (score 0);
the script would run the empty statement, whose empty result equals any empty gold result.
"""

from __future__ import annotations

from stateft.errors import UserError


def _first_statement_tokens(sql: str) -> list:
    try:
        import sqlparse
    except ImportError:
        raise UserError("test-suite semantics needs the sqlparse package: pip install sqlparse") from None
    try:
        statements = sqlparse.parse(sql)
    except Exception as err:  # sqlparse refuses pathologically nested input
        raise ValueError(f"cannot split into statements: {err}") from None
    tokens = list(statements[0].flatten()) if statements else []
    if not any(_is_sql(tok) for tok in tokens):
        raise ValueError("no SQL before the first ';'")
    return tokens


def _is_sql(token) -> bool:
    from sqlparse import tokens as T

    return not (token.is_whitespace or token.ttype in T.Comment or token.match(T.Punctuation, ";"))


def first_statement(sql: str) -> str:
    """The text of the first statement (its ';' and the blanks after it included); ``ValueError`` if it is empty."""
    return "".join(tok.value for tok in _first_statement_tokens(sql))


def remove_distinct(sql: str) -> str:
    """The first statement with every DISTINCT keyword removed (string literals untouched); ``ValueError`` if it
    is empty."""
    return "".join(tok.value for tok in _first_statement_tokens(sql) if tok.value.lower() != "distinct")

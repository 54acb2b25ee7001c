"""Conditions and filters: SQL boolean expressions parsed and checked with sqlglot.

Only column references to declared names, literals, operators and an allowed list of
functions pass; subqueries, DDL, star and unknown columns are errors that point at the
expression's file:line:column.  The checked expression stays a sqlglot tree: compilers embed
the tree, never the text.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from rules.errors import RuleError
from rules.yaml_positions import Position

ALLOWED_FUNCTIONS = {"coalesce", "greatest", "least", "abs", "round", "floor", "ceil", "nullif",
                     "lower", "upper", "length", "if", "case", "cast", "concat"}
_OPERATORS = (exp.Binary, exp.Connector, exp.Predicate, exp.Unary, exp.Not, exp.Paren)
_ALLOWED_NODES = (exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Not,
                  exp.And, exp.Or, exp.Binary, exp.Unary, exp.In, exp.Between, exp.Is, exp.Case, exp.If,
                  exp.Tuple, exp.Cast, exp.DataType, exp.Func)


def parse_condition(text: object, names: set[str], where: Position, what: str) -> exp.Expression:
    """Parse ``text`` as a boolean SQL expression over ``names``; raise RuleError if it is not one."""
    tree = parse_expression(text, names, where, what)
    if not isinstance(tree, (exp.Predicate, exp.Connector, exp.Not, exp.Paren, exp.Boolean, exp.Column, exp.Case)):
        raise RuleError(where.file, where.line, where.column, f"{what} is not a true/false condition",
                        "compare values, e.g. recency_days > 90")
    return tree


def parse_expression(text: object, names: set[str], where: Position, what: str) -> exp.Expression:
    """Parse ``text`` as a SQL value expression over ``names`` (checked like a condition)."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError(where.file, where.line, where.column, f"{what} must be a SQL expression in a string",
                        "write it like \"frequency >= 3 and recency_days <= 30\"")
    try:
        tree = sqlglot.parse_one(text, dialect="duckdb")
    except sqlglot.errors.ParseError as exc:
        detail = exc.errors[0] if exc.errors else {}
        col = where.column + max(int(detail.get("col", 1)) - 1, 0)
        raise RuleError(where.file, where.line, col, f"{what} is not valid SQL: {detail.get('description', exc)}",
                        "check brackets, quotes and operators") from exc
    for node in tree.walk():
        if isinstance(node, (exp.Select, exp.Subquery, exp.Query)):
            raise RuleError(where.file, where.line, where.column, f"{what} may not contain a subquery",
                            "use declared features instead of querying tables")
        if isinstance(node, exp.Star):
            raise RuleError(where.file, where.line, where.column, f"{what} may not use *", "name a feature")
        if isinstance(node, exp.Func) and not isinstance(node, _OPERATORS):
            function = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if function not in ALLOWED_FUNCTIONS:
                raise RuleError(where.file, where.line, where.column,
                                f"{what} calls the function {function}(), which is not allowed",
                                f"use one of {sorted(ALLOWED_FUNCTIONS)}")
        elif not isinstance(node, _ALLOWED_NODES):
            raise RuleError(where.file, where.line, where.column,
                            f"{what} uses {node.sql(dialect='duckdb')!r}, which is not allowed",
                            "use comparisons, arithmetic, and/or/not and the allowed functions")
        if isinstance(node, exp.Column):
            if node.table or node.name not in names:
                raise RuleError(where.file, where.line, where.column,
                                f"{what} refers to unknown name {node.sql()!r}",
                                f"use one of the declared names: {', '.join(sorted(names))}")
    return tree

"""Rule tests written beside each tag: ``tests: [{given: {feature: value}, expect: value}]``.

Each case runs the tag's compiled CASE expression in an in-memory DuckDB over one row whose
unnamed features are NULL, so a test exercises the same SQL the nightly run executes.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from rules.compiler import DIALECT, tag_value_expression
from rules.model import RuleSet, Tag, load_rules


def evaluate(tag: Tag, names: list[str], given: dict) -> str | None:
    """The value ``tag`` takes for one customer whose features are ``given`` (others NULL)."""
    unknown = set(given) - set(names)
    if unknown:
        raise KeyError(f"tag {tag.id}: test names unknown features {sorted(unknown)}")
    columns = ", ".join(f"CAST(? AS DOUBLE) AS {n}" for n in names)
    sql = f"SELECT {tag_value_expression(tag).sql(dialect=DIALECT)} FROM (SELECT {columns}) AS features"
    with duckdb.connect() as con:
        return con.execute(sql, [given.get(n) for n in names]).fetchone()[0]


def run_rule_tests(rules: RuleSet | None = None, folder: Path | None = None) -> tuple[list[str], int]:
    """(failure messages, number of cases) over every tag's tests."""
    rules = rules or load_rules(folder)
    names = sorted(rules.names)
    failures, total = [], 0
    for tag in rules.tags.values():
        for i, case in enumerate(tag.tests, start=1):
            total += 1
            expected = case.get("expect")
            expected = None if expected is None else str(expected)
            got = evaluate(tag, names, case.get("given") or {})
            if got != expected:
                failures.append(f"{tag.file}: test {i} given {case.get('given')} expected {expected!r}, got {got!r}")
    return failures, total


def uncovered_values(tag: Tag) -> list[str]:
    """Values of the tag that no test case expects."""
    tested = {str(c.get("expect")) for c in tag.tests if c.get("expect") is not None}
    return [v for v in tag.values if v not in tested]


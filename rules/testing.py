"""Rule tests written beside each tag: ``tests: [{given: {feature: value}, expect: value}]``.

Each case runs the tag's compiled value expression (marketing exclusion included) in an
in-memory DuckDB over one row whose features have their real types and whose unnamed features
are NULL, so a test exercises the same SQL the nightly run executes.  A number tag's expected
value is compared as a number.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from rules.compiler import DIALECT, tag_value_expression
from rules.kinds import Manual
from rules.model import RuleSet, Tag, load_rules

SQL_TYPES = {"number": "DOUBLE", "text": "VARCHAR", "boolean": "BOOLEAN", "date": "DATE"}


def feature_row_sql(types: dict[str, str]) -> str:
    """``SELECT CAST(? AS type) AS name, ...``: one customer's features as query parameters."""
    return "SELECT " + ", ".join(f"CAST(? AS {SQL_TYPES[t]}) AS {n}" for n, t in sorted(types.items()))


def evaluate(tag: Tag, rules: RuleSet, given: dict) -> str | None:
    """The value ``tag`` takes for one customer whose features are ``given`` (others NULL)."""
    types = rules.types()
    unknown = set(given) - set(types)
    if unknown:
        raise KeyError(f"tag {tag.id}: test names unknown features {sorted(unknown)}")
    value = tag_value_expression(tag, rules.marketing_exclusion).sql(dialect=DIALECT)
    sql = f"SELECT {value} FROM ({feature_row_sql(types)}) AS features"
    with duckdb.connect() as con:
        return con.execute(sql, [given.get(n) for n in sorted(types)]).fetchone()[0]


def _matches(tag: Tag, expected: object, got: str | None) -> bool:
    if expected is None or got is None:
        return expected is None and got is None
    if tag.value_type == "number":
        return abs(float(got) - float(expected)) < 1e-9
    return str(expected).lower() == got if isinstance(expected, bool) else str(expected) == got


def run_rule_tests(rules: RuleSet | None = None, folder: Path | None = None) -> tuple[list[str], int]:
    """(failure messages, number of cases) over every tag's tests."""
    rules = rules or load_rules(folder)
    failures, total = [], 0
    for tag in rules.tags.values():
        for i, case in enumerate(tag.tests, start=1):
            total += 1
            expected = case.get("expect")
            got = evaluate(tag, rules, case.get("given") or {})
            if not _matches(tag, expected, got):
                failures.append(f"{tag.file}: test {i} given {case.get('given')} expected {expected!r}, got {got!r}")
    return failures, total


def uncovered_values(tag: Tag) -> list[str]:
    """Declared values of the tag that no test case expects; for a tag whose values come from
    the data, ``['(any value)']`` when no test expects a value.  Manual tags need no tests."""
    if isinstance(tag.rule, Manual):
        return []
    tested = {str(c.get("expect")).lower() if isinstance(c.get("expect"), bool) else str(c.get("expect"))
              for c in tag.tests if c.get("expect") is not None}
    if tag.values is None:
        return [] if tested else ["(any value)"]
    return [v for v in tag.values if v not in tested]

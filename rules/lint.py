"""``tagwright rules check``: lint the rules beyond what parsing already refuses.

Errors (the check fails):
- a tag id that the published catalog knows with another value type: an id keeps its meaning
  forever, so a new type needs a new tag.

Warnings (the check passes, the author should look):
- two tags with the same definition (one meaning, two tags);
- a published tag that disappeared from rules/ (retire it instead: status: retired);
- changed values without a new version;
- a case no customer reaches, and a case hidden by the cases before it (every customer it
  matches already matched an earlier case), measured on the features of the last published
  run, or on the rule tests' rows before the first run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from rules.compiler import DIALECT
from rules.kinds import AllMatches, FirstMatch
from rules.model import RuleSet, Tag
from rules.testing import feature_row_sql
from rules.yaml_positions import Position


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning
    where: Position
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.level}: {self.message}. Fix: {self.fix}"


def lint(rules: RuleSet, warehouse: Path | None = None) -> list[Finding]:
    """Every finding for ``rules``; ``warehouse`` is the published warehouse, if there is one."""
    findings = _same_definitions(rules)
    with duckdb.connect() as con:
        data = "the rule tests' rows"
        if warehouse is not None and warehouse.exists():
            con.execute(f"ATTACH '{warehouse}' AS published (READ_ONLY)")
            findings += _against_catalog(con, rules)
            columns = {r[0] for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = 'published'"
                " AND schema_name = 'analytics' AND table_name = 'customer_features'").fetchall()}
            if rules.names <= columns:
                con.execute(f"CREATE TEMP TABLE rows AS SELECT {', '.join(sorted(rules.names))}"
                            " FROM published.analytics.customer_features")
                data = "the last published run's customers"
        if data == "the rule tests' rows":
            _test_rows(con, rules)
        for tag in rules.tags.values():
            if isinstance(tag.rule, FirstMatch) and tag.status != "retired":
                findings += _reachability(con, tag, data)
    return findings


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def _same_definitions(rules: RuleSet) -> list[Finding]:
    seen: dict[str, Tag] = {}
    findings = []
    for tag in sorted(rules.tags.values(), key=lambda t: t.id):
        key = _normalised(tag.definition)
        if key and key in seen:
            findings.append(Finding("warning", tag.position, f"tag {tag.id!r} has the same definition as "
                                    f"{seen[key].id!r} ({seen[key].file})",
                                    "one meaning, one tag: retire one of them or say how they differ"))
        seen.setdefault(key, tag)
    return findings


def _against_catalog(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> list[Finding]:
    findings = []
    published = {r[0]: r[1:] for r in con.execute(
        'SELECT tag, value_type, "values", version, status FROM published.analytics.tag_catalog').fetchall()}
    for tag in rules.tags.values():
        if tag.id not in published:
            continue
        value_type, values, version, _ = published[tag.id]
        if value_type != tag.value_type:
            findings.append(Finding("error", tag.position, f"tag {tag.id!r} was published as a {value_type} tag and "
                                    f"is now a {tag.value_type} tag",
                                    "a tag id never changes meaning: create a new tag and retire this one"))
        elif (values or None) != (tag.values or None) and version == tag.version:
            findings.append(Finding("warning", tag.position, f"tag {tag.id!r} changed its values "
                                    f"({values} -> {tag.values}) but kept version {version}",
                                    f"raise version to {version + 1}"))
    for tag_id, (_, _, _, status) in published.items():
        if tag_id not in rules.tags and status != "retired":
            findings.append(Finding("warning", Position("rules/", 1, 1), f"published tag {tag_id!r} has no rule file",
                                    "keep the file with status: retired, so its history keeps its definition"))
    return findings


def _test_rows(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> None:
    types = rules.types()
    con.execute(f"CREATE TEMP TABLE rows AS {feature_row_sql(types)} WHERE false", [None] * len(types))
    insert = f"INSERT INTO rows {feature_row_sql(types)}"
    for tag in rules.tags.values():
        for case in tag.tests:
            given = case.get("given") or {}
            if set(given) <= set(types):
                con.execute(insert, [given.get(n) for n in sorted(types)])


def _reachability(con: duckdb.DuckDBPyConnection, tag: Tag, data: str) -> list[Finding]:
    cases = tag.rule.cases
    if not cases:
        return []
    counts = []
    for i, case in enumerate(cases):
        when = case.when.sql(dialect=DIALECT)
        earlier = " OR ".join(f"coalesce({c.when.sql(dialect=DIALECT)}, false)" for c in cases[:i]) or "false"
        counts.append(con.execute(f"SELECT count(*) FILTER (WHERE {when}),"
                                  f" count(*) FILTER (WHERE {when} AND NOT ({earlier})) FROM rows").fetchone())
    findings = []
    for case, (reached, fired) in zip(cases, counts):
        if reached == 0:
            findings.append(Finding("warning", case.position, f"tag {tag.id!r}: no customer reaches "
                                    f"{case.value!r} on {data}", "check the condition's thresholds and units"))
        elif fired == 0 and not isinstance(tag.rule, AllMatches):
            findings.append(Finding("warning", case.position, f"tag {tag.id!r}: case {case.value!r} is hidden by "
                                    f"the cases before it: every customer it matches on {data} matched an earlier "
                                    "case", "move it up, or narrow the earlier cases"))
    return findings

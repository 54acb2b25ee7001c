"""Tags: apply the compiled rules to the feature table, then the manual overrides.

``write_tag_rows`` is the one way both the nightly run and ``tagwright rules diff`` tag:
computed values from the rules, then, per customer and tag, the newest override in force on
as_of replaces (or removes) the computed value.  Overrides of a marketing tag do not apply to
customers the marketing exclusion holds for, like the rules themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb
from sqlglot import exp

from rules.compiler import DIALECT, tag_value_expression, tags_sql
from rules.model import RuleSet
from warehouse import dialect
from warehouse.faults import failpoint
from warehouse.settings import Settings


@dataclass
class TagsResult:
    rows: int
    tags: int
    warnings: list[str] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return self.rows


def overrides_in_force_sql(as_of: date, overrides: str = "tags.overrides") -> str:
    """The newest override per customer and tag that applies on ``as_of``."""
    day = f"DATE {dialect.quote(as_of.isoformat())}"
    return f"""
        SELECT * FROM {overrides}
        WHERE effective_from <= {day} AND (expires_on IS NULL OR expires_on >= {day}) AND revoked_at IS NULL
        QUALIFY row_number() OVER (PARTITION BY customer_id, tag ORDER BY override_id DESC) = 1"""


def _overrides_applied_sql(rules: RuleSet, as_of: date, features: str, overrides: str = "tags.overrides") -> str:
    """(customer_id, tag, value) of the overrides that apply to the customers of ``features``:
    in force on as_of, of an active tag, and not of a marketing tag for a customer the marketing
    exclusion holds for.  A NULL value removes the tag."""
    active = [t.id for t in rules.active_tags]
    marketing = [t.id for t in rules.active_tags if t.marketing]
    excluded = (rules.marketing_exclusion.sql(dialect=DIALECT) if rules.marketing_exclusion is not None
                else "false")
    return f"""
        SELECT o.customer_id, o.tag, o.value FROM ({overrides_in_force_sql(as_of, overrides)}) o
        JOIN {features} f USING (customer_id)
        WHERE {dialect.is_in("o.tag", active)}
          AND NOT ({dialect.is_in("o.tag", marketing)} AND coalesce({excluded}, false))"""


def write_tag_rows(con: duckdb.DuckDBPyConnection, table: str, rules: RuleSet, as_of: date, features: str,
                   overrides: str = "tags.overrides", temporary: bool = False) -> int:
    """``table`` (customer_id, tag, value, score, as_of): every active tag's value from the rules,
    then the overrides applied.

    The rules' rows are written in the order of ``features`` (by customer, each customer's tags by
    id): a scan of one relation keeps its order, so publishing copies the table as it is instead
    of sorting 25M rows (3.5 s at the performance issue's data).  An override deletes the rule's
    row and its own row follows the rules' rows (a join would not keep the order).  Returns how
    many overrides applied (listed in the temp table ``overrides_applied``)."""
    con.execute(f"""CREATE OR REPLACE {'TEMP ' if temporary else ''}TABLE {table} AS
                    SELECT *, DATE {dialect.quote(as_of.isoformat())} AS as_of
                    FROM ({tags_sql(rules, relation=features)})""")
    con.execute("CREATE OR REPLACE TEMP TABLE overrides_applied AS "
                f"{_overrides_applied_sql(rules, as_of, features, overrides)}")
    applied = con.execute("SELECT count(*) FROM overrides_applied").fetchone()[0]
    if applied:
        con.execute(f"""
            DELETE FROM {table} WHERE (customer_id, tag) IN (SELECT customer_id, tag FROM overrides_applied);
            INSERT INTO {table}
            SELECT customer_id, tag, value, NULL, DATE {dialect.quote(as_of.isoformat())} FROM overrides_applied
            WHERE value IS NOT NULL ORDER BY customer_id, tag""")
    return applied


def _write_wide(con: duckdb.DuckDBPyConnection, rules: RuleSet, as_of: date, features: str,
                overridden: bool) -> None:
    """``tags.customer_tags_wide``: one row per customer of ``features`` (in its order), one column
    per active tag, named by id, in id order: the rules' values from the expressions the tag rows
    are made of, then, when ``overridden``, for the customers an override applies to
    (``overrides_applied``, left by :func:`write_tag_rows`), their values pivoted from the tag
    rows.  Pivoting all 25M tag rows took 3.2 to 4.5 s at the performance issue's data."""
    tags = sorted(rules.active_tags, key=lambda t: t.id)
    computed = exp.select("customer_id", exp.alias_(exp.cast(exp.Literal.string(as_of.isoformat()), "date"), "as_of"),
                          *(exp.alias_(tag_value_expression(t, rules.marketing_exclusion), t.id) for t in tags))
    con.execute(f"CREATE OR REPLACE TABLE tags.customer_tags_wide AS {computed.from_(features).sql(dialect=DIALECT)}")
    if not overridden:
        return
    pivot = ", ".join(f"max(t.value) FILTER (WHERE t.tag = {dialect.quote(t.id)}) AS {t.id}" for t in tags)
    con.execute(f"""
        UPDATE tags.customer_tags_wide w SET {", ".join(f"{t.id} = p.{t.id}" for t in tags)}
        FROM (SELECT o.customer_id, {pivot}
              FROM (SELECT DISTINCT customer_id FROM overrides_applied) o
              LEFT JOIN tags.customer_tags t USING (customer_id) GROUP BY o.customer_id) p
        WHERE p.customer_id = w.customer_id""")


def apply_tags(con: duckdb.DuckDBPyConnection, settings: Settings, rules: RuleSet, as_of: date) -> TagsResult:
    con.execute("BEGIN")
    applied = write_tag_rows(con, "tags.customer_tags", rules, as_of, "features.customer_features")
    _write_wide(con, rules, as_of, "features.customer_features", overridden=applied > 0)
    failpoint("tags")
    con.execute("COMMIT")
    rows = con.execute("SELECT count(*) FROM tags.customer_tags").fetchone()[0]
    return TagsResult(rows=rows, tags=len(rules.active_tags), warnings=coverage_shifts(con, settings, as_of))


def coverage_shifts(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: date) -> list[str]:
    """Tags whose coverage (share of customers with a value) moved by more than the configured
    ``coverage_alert`` since the newest earlier run in the published warehouse."""
    if not settings.warehouse.exists():
        return []
    dialect.attach(con, settings.warehouse, "last_published")
    try:
        shifts = con.execute(f"""
            WITH before AS (
                SELECT tag, sum(coverage) AS coverage FROM last_published.analytics.tag_stats
                WHERE as_of = (SELECT max(as_of) FROM last_published.analytics.tag_stats
                               WHERE as_of < DATE {dialect.quote(as_of.isoformat())})
                GROUP BY tag),
            now AS (
                SELECT tag, count(*) / (SELECT count(*) FROM features.customer_features) AS coverage
                FROM tags.customer_tags GROUP BY tag)
            SELECT tag, b.coverage, coalesce(n.coverage, 0) FROM before b LEFT JOIN now n USING (tag)
            WHERE abs(coalesce(n.coverage, 0) - b.coverage) > {float(settings.coverage_alert)}
            ORDER BY tag""").fetchall()
    finally:
        con.execute("DETACH last_published")
    return [f"tag {tag} coverage moved from {old:.1%} to {new:.1%} since the last run "
            f"(more than TAGWRIGHT_COVERAGE_ALERT={settings.coverage_alert:g})" for tag, old, new in shifts]

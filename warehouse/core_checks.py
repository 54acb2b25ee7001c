"""Core-table checks before publishing: the committed ``<table>_core`` suites on the work tables.

- ``customers_core``: customer_id present and unique in the golden records;
- ``orders_core``: (source, order_id) unique, orders linked to a customer (mostly), amount >= 0;
- ``customer_tags_core`` (on the table's summary per tag and value, so it stays small at any
  size): one row per customer and tag, a value on every row, plus what the run derives from
  the rules: each tag's values inside its declared value set; ``tag_coverage_core``: every
  active computed tag reaches at least one customer (coverage bounds).

A failed check of identity, keys or value sets stops the run before publishing (analysts keep
the last good warehouse); a coverage bound only warns.  Results go to ``ops.validations`` and
the run's Data Docs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import great_expectations as gx
import pandas as pd

from rules.kinds import Manual
from rules.model import RuleSet
from warehouse.errors import StageError
from warehouse.quality import QualityContext, expectation_columns
from warehouse.settings import Settings

WARN_ONLY = ("coverage",)


@dataclass
class CoreCheckResult:
    checks: int = 0
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return self.checks


def _tag_expectations(rules: RuleSet) -> list:
    """Each active tag's value set (not for list tags: their values combine declared ones)."""
    return [gx.expectations.ExpectColumnValuesToBeInSet(
                column="value", value_set=tag.values, row_condition=f'tag=="{tag.id}"', condition_parser="pandas",
                meta={"tag": tag.id})
            for tag in rules.active_tags if tag.values is not None and tag.value_type != "list"]


def _coverage_expectations(rules: RuleSet) -> list:
    return [gx.expectations.ExpectColumnValuesToBeBetween(
                column="coverage", min_value=0, strict_min=True, max_value=1, row_condition=f'tag=="{tag.id}"',
                condition_parser="pandas", meta={"tag": tag.id, "check": "coverage"})
            for tag in rules.active_tags if not isinstance(tag.rule, Manual)]


def _coverage(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> pd.DataFrame:
    """Each active tag's share of customers (0 for a tag no customer has)."""
    coverage = con.execute("""SELECT t.tag, count(*) / (SELECT count(*) FROM features.customer_features) AS coverage
                              FROM tags.customer_tags t GROUP BY t.tag""").fetchdf()
    active = pd.DataFrame({"tag": [t.id for t in rules.active_tags]})
    return active.merge(coverage, on="tag", how="left").fillna({"coverage": 0.0})


def check_core_tables(con: duckdb.DuckDBPyConnection, settings: Settings, rules: RuleSet,
                      run_id: str) -> CoreCheckResult:
    quality = QualityContext(settings, run_id)
    checks = {  # suite: (its batch, read when its turn comes so one is in memory at a time; extra expectations)
        "customers_core": (lambda: con.execute("SELECT customer_id FROM identity.golden").fetchdf(), []),
        "orders_core": (lambda: con.execute("""SELECT o.source, o.order_id, m.customer_id, o.amount FROM stage.orders o
                                               LEFT JOIN identity.node_customer m USING (source, source_customer_id)"""
                                            ).fetchdf(), []),
        "customer_tags_core": (lambda: con.execute("""SELECT tag, value, count(*) AS rows,
                                                             count(DISTINCT customer_id) AS customers
                                                      FROM tags.customer_tags GROUP BY ALL""").fetchdf(),
                               _tag_expectations(rules)),
        "tag_coverage_core": (lambda: _coverage(con, rules), _coverage_expectations(rules)),
    }
    result = CoreCheckResult()
    rows = []
    for name, (read, extra) in checks.items():
        table = name.removesuffix("_core")
        suite = quality.suite(name, extra)
        outcome = quality.validate(suite, table, read())
        for r in outcome.results:
            config = r.expectation_config
            column = ",".join(expectation_columns(config.kwargs)) or None
            what = f"{suite.name}: {config.type} on {column}" + (f" for tag {config.meta['tag']}"
                                                                 if config.meta.get("tag") else "")
            rows.append((run_id, 0, "pipeline", table, suite.name, config.type, column,
                         bool(r.success), r.result.get("element_count"), r.result.get("unexpected_count")))
            result.checks += 1
            if not r.success:
                sample = r.result.get("partial_unexpected_list") or []
                message = f"{what} failed ({r.result.get('unexpected_count')} rows, e.g. {sample[:3]})"
                (result.warnings if config.meta.get("check") in WARN_ONLY else result.failed).append(message)
    con.executemany("INSERT INTO ops.validations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    quality.build_docs()
    if result.failed:
        raise StageError("core checks", "; ".join(result.failed),
                         "nothing was published; look at the named table in the work file and the run's Data Docs")
    return result

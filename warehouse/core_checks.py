"""Core-table checks before publishing: the committed ``<table>_core`` suites on the work tables.

- ``customers_core``: customer_id present and unique in the golden records;
- ``orders_core``: (source, order_id) unique, orders linked to a customer (mostly), amount >= 0;
- ``customer_tags_core`` (on the table's summary per tag and value, so it stays small at any
  size): one row per customer and tag (each tag's rows equal its distinct customers), a value
  on every row, plus what the run derives from the rules: each tag's values inside its
  declared value set; ``tag_coverage_core``: every active computed tag reaches at least one
  customer (coverage bounds).

A table larger than ``validate_slice_rows`` is given to GX one slice at a time (memory stays
bounded at any size); its keys are then judged unique in SQL over all its rows.

A failed check of identity, keys or value sets stops the run before publishing (analysts keep
the last good warehouse); a coverage bound only warns.  Results go to ``ops.validations`` and
the run's Data Docs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain

import duckdb
import great_expectations as gx
import pyarrow as pa

from rules.kinds import Manual
from rules.model import RuleSet
from warehouse import dialect
from warehouse.errors import StageError
from warehouse.quality import (QualityContext, expectation_columns, key_expectations, key_summary, merge_summaries,
                               summary)
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


# One row per tag and value, with the tag's rows and its distinct customers, equal when no
# customer has the tag twice (counted per value, a customer with two different values went
# unseen).  Each count follows the tag's name, so a failure names the tag:
# ('churn_risk: 4', 'churn_risk: 3') is 4 rows for 3 customers.  Counting each tag's distinct
# customers over every row takes a hash table of every (tag, customer): 3.6 s for the 15.9M rows
# at 1M customers.  So each customer's rows are first counted against the active tags (the
# parameter) they hold, one bit per tag (0.6 s); the exact count runs only over rows without a
# customer and the rows of customers where the two differ (a tag twice, a tag that is not
# active, no tag).  Every other customer holds each of its tags on one row.
TAG_SUMMARY = """
    WITH per_customer AS (
             SELECT customer_id, count(*) AS tag_rows,
                    coalesce(bit_count(bitstring_agg(list_position($1::VARCHAR[], tag), 1,
                                                     greatest(len($1::VARCHAR[]), 1))), 0) AS tags_held
             FROM tags.customer_tags GROUP BY customer_id),
         extra AS (  -- per tag, its rows beyond one per customer
             SELECT tag, count(*) - count(DISTINCT customer_id) AS extra_rows FROM tags.customer_tags
             WHERE customer_id IS NULL
                OR customer_id IN (SELECT customer_id FROM per_customer WHERE tag_rows > tags_held)
             GROUP BY tag),
         per_tag AS (SELECT tag, count(*) AS tag_rows FROM tags.customer_tags GROUP BY tag)
    SELECT v.tag, v.value, t.tag || ': ' || t.tag_rows AS tag_rows,
           t.tag || ': ' || (t.tag_rows - coalesce(e.extra_rows, 0)) AS tag_customers
    FROM (SELECT DISTINCT tag, value FROM tags.customer_tags) v JOIN per_tag t USING (tag)
    LEFT JOIN extra e USING (tag)"""

# Each active tag's share of customers (0 for a tag no customer has); the active tags are its parameter.
COVERAGE = """SELECT a.tag, coalesce(c.customers / (SELECT count(*) FROM features.customer_features), 0.0) AS coverage
              FROM (SELECT unnest(?::VARCHAR[]) AS tag) a
              LEFT JOIN (SELECT tag, count(*) AS customers FROM tags.customer_tags GROUP BY tag) c USING (tag)"""


def check_core_tables(con: duckdb.DuckDBPyConnection, settings: Settings, rules: RuleSet,
                      run_id: str) -> CoreCheckResult:
    quality = QualityContext(settings, run_id)
    active = [t.id for t in rules.active_tags]
    checks = {  # suite: (the rows it checks, the query's parameters, extra expectations)
        "customers_core": ("SELECT customer_id FROM identity.golden", [], []),
        # amount as DOUBLE: GX compares a DECIMAL column (Python objects) one value at a time.
        "orders_core": ("""SELECT o.source, o.order_id, m.customer_id, CAST(o.amount AS DOUBLE) AS amount
                           FROM stage.orders o
                           LEFT JOIN identity.node_customer m USING (source, source_customer_id)""", [], []),
        "customer_tags_core": (TAG_SUMMARY, [active], _tag_expectations(rules)),
        "tag_coverage_core": (COVERAGE, [active], _coverage_expectations(rules)),
    }
    result = CoreCheckResult()
    rows = []
    for name, (query, parameters, extra) in checks.items():
        table = name.removesuffix("_core")
        suite = quality.suite(name, extra)
        for s in _validate_in_slices(con, quality, suite, table, query, parameters, settings.validate_slice_rows):
            tag = s["meta"].get("tag")
            what = f"{suite.name}: {s['expectation']} on {s['column']}" + (f" for tag {tag}" if tag else "")
            rows.append((run_id, 0, "pipeline", table, suite.name, s["expectation"], s["column"],
                         s["success"], s["element_count"], s["unexpected_count"]))
            result.checks += 1
            if not s["success"]:
                message = f"{what} failed ({s['unexpected_count']} rows, e.g. {s['sample']})"
                (result.warnings if s["meta"].get("check") in WARN_ONLY else result.failed).append(message)
    con.executemany("INSERT INTO ops.validations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    quality.build_docs()
    if result.failed:
        raise StageError("core checks", "; ".join(result.failed),
                         "nothing was published; look at the named table in the work file and the run's Data Docs")
    return result


def _validate_in_slices(con: duckdb.DuckDBPyConnection, quality: QualityContext, suite, table: str, query: str,
                        parameters: list, slice_rows: int) -> list[dict]:
    """GX validation of the query's rows ``slice_rows`` at a time, so memory stays bounded at
    any size: one summary per expectation.  GX sees one slice at a time, so when there are
    several, uniqueness is judged in SQL over all the rows instead."""
    per_slice, offset = [], 0
    with con.cursor() as reading:  # its own connection: the stream stays open while GX works
        reader = reading.sql(query, params=parameters or None).to_arrow_reader(slice_rows)
        slices = _slices(reader, slice_rows)
        first, second = next(slices, None), next(slices, None)
        sliced = second is not None
        checked = quality.per_slice(suite) if sliced else suite
        for rows in chain([first or reader.schema.empty_table()], [second] if sliced else [], slices):
            name = f"{table} rows {offset + 1}-{offset + rows.num_rows}" if sliced else table
            per_slice.append([summary(r) for r in quality.validate(checked, name, rows.to_pandas()).results])
            offset += rows.num_rows
    if sliced:
        for expectation in key_expectations(suite):
            unexpected, sample = _repeated_keys(con, query, parameters,
                                                expectation_columns(expectation.configuration.kwargs))
            per_slice.append([key_summary(expectation, offset, unexpected, sample)])
    return merge_summaries(per_slice)


def _slices(reader: pa.RecordBatchReader, slice_rows: int) -> Iterator[pa.Table]:
    """The reader's rows ``slice_rows`` at a time (DuckDB's batches may be smaller: a table of a
    few rows would otherwise count as sliced)."""
    pending, rows = [], 0
    for batch in reader:
        pending.append(batch)
        rows += batch.num_rows
        while rows >= slice_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, slice_rows)
            rest = table.slice(slice_rows)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending)


def _repeated_keys(con: duckdb.DuckDBPyConnection, query: str, parameters: list,
                   columns: list[str]) -> tuple[int, list[str]]:
    """Rows of the query whose key (every part present) another row has, and up to three such keys."""
    keys, present, shown = dialect.key_sql(columns)
    rows, sample = con.execute(f"""SELECT coalesce(sum(n), 0)::BIGINT, coalesce(list(key)[1:3], [])
                                   FROM (SELECT {shown} AS key, count(*) AS n FROM ({query})
                                         WHERE {present} GROUP BY {keys} HAVING count(*) > 1)""",
                               parameters).fetchone()
    return rows, sample

"""Tags: apply the compiled rules to the feature table, one row per customer and tag."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from rules.compiler import tags_sql
from rules.model import RuleSet
from warehouse import dialect
from warehouse.faults import failpoint


@dataclass
class TagsResult:
    rows: int
    tags: int

    @property
    def row_count(self) -> int:
        return self.rows


def apply_tags(con: duckdb.DuckDBPyConnection, rules: RuleSet, as_of: date) -> TagsResult:
    sql = tags_sql(rules, relation="features.customer_features")
    con.execute("BEGIN")
    con.execute(f"""CREATE OR REPLACE TABLE tags.customer_tags AS
                    SELECT customer_id, tag, value, score, DATE {dialect.quote(as_of.isoformat())} AS as_of
                    FROM ({sql})""")
    failpoint("tags")
    con.execute("COMMIT")
    rows = con.execute("SELECT count(*) FROM tags.customer_tags").fetchone()[0]
    return TagsResult(rows=rows, tags=len(rules.active_tags))

"""``tagwright rules diff``: what an edit of the rules would change, before it ships.

The edited rules are computed against the inputs of the last published run (the work
database, read-only, at the published as_of, overrides included) and compared with the tags
that run published: per tag, how many customers would move from which value to which.
Nothing is written anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from rules.model import RuleSet
from warehouse import dialect
from warehouse.errors import StageError
from warehouse.features import customer_features_sql
from warehouse.publish import latest_published_as_of
from warehouse.runs import run_lock
from warehouse.settings import Settings
from warehouse.tagging import write_tag_rows


@dataclass
class RulesDiff:
    as_of: date
    customers: int
    moves: list[tuple[str, str | None, str | None, int]]  # tag, published value, edited value, customers

    def changed_tags(self) -> dict[str, int]:
        """Customers whose value would change, per tag."""
        out: dict[str, int] = {}
        for tag, _, _, n in self.moves:
            out[tag] = out.get(tag, 0) + n
        return out


def diff_rules(settings: Settings, rules: RuleSet) -> RulesDiff:
    as_of = latest_published_as_of(settings)
    if as_of is None or not settings.work_db.exists():
        raise StageError("rules diff", f"nothing is published in {settings.data_dir} yet",
                         "run `tagwright run` once; the diff compares with the last published run")
    with run_lock(settings), duckdb.connect() as con:
        dialect.attach(con, settings.work_db, "work")
        dialect.attach(con, settings.warehouse, "published")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("USE work")
        features, _ = customer_features_sql(con, settings, rules, as_of)
        con.execute(f"CREATE TEMP TABLE edited_features AS {features}")
        write_tag_rows(con, "edited_tags", rules, as_of, "edited_features", "work.tags.overrides",
                       temporary=True)
        customers = con.execute("SELECT count(*) FROM edited_features").fetchone()[0]
        moves = con.execute("""
            SELECT coalesce(p.tag, e.tag) AS tag, p.value AS published, e.value AS edited, count(*) AS customers
            FROM published.analytics.customer_tags p
            FULL JOIN edited_tags e USING (customer_id, tag)
            WHERE p.value IS DISTINCT FROM e.value
            GROUP BY ALL ORDER BY tag, customers DESC, published NULLS FIRST, edited NULLS FIRST""").fetchall()
    return RulesDiff(as_of=as_of, customers=customers, moves=moves)

"""Features: one row per customer as of the run date, computed from the declared features.

The relations the rule compiler reads are built here, limited to data that occurred on or
before ``as_of`` in the business time zone (point-in-time):

- ``feature_customers``: customers known by as_of (registered, or with an order or event);
- ``feature_orders``: orders with customer_id, business ``order_date`` and ``gap_days``;
- ``feature_activity``: (customer_id, activity_date, kind) for every event and order day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from rules.compiler import features_sql
from rules.model import RuleSet
from warehouse import dialect
from warehouse.faults import failpoint
from warehouse.settings import Settings


@dataclass
class FeaturesResult:
    customers: int
    features: int

    @property
    def row_count(self) -> int:
        return self.customers


def _feature_relations(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str) -> None:
    day = f"DATE {dialect.quote(as_of.isoformat())}"
    order_date = dialect.local_date("o.ordered_at", timezone)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE feature_orders AS
        WITH linked AS (
            SELECT m.customer_id, o.order_id, o.source, o.ordered_at, {order_date} AS order_date,
                   o.amount, o.status, o.channel
            FROM stage.orders o JOIN identity.node_customer m USING (source, source_customer_id)
            WHERE {order_date} <= {day})
        SELECT *, CASE WHEN status = 'paid' THEN {dialect.days_between(
            "lag(order_date) OVER (PARTITION BY customer_id, status = 'paid' ORDER BY ordered_at, source, order_id)",
            "order_date")} END AS gap_days
        FROM linked""")
    event_date = dialect.local_date("e.occurred_at", timezone)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE feature_activity AS
        SELECT DISTINCT customer_id, activity_date, kind FROM (
            SELECT m.customer_id, {event_date} AS activity_date, 'event' AS kind
            FROM stage.events e JOIN identity.node_customer m USING (source, source_customer_id)
            UNION ALL
            SELECT customer_id, order_date, 'order' FROM feature_orders)
        WHERE activity_date <= {day}""")
    registered = dialect.local_date("r.registered_at", timezone)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE feature_customers AS
        SELECT DISTINCT m.customer_id
        FROM identity.node_customer m LEFT JOIN stage.customer_records r USING (source, source_customer_id)
        WHERE {registered} <= {day}
        UNION
        SELECT customer_id FROM feature_activity""")


def compute_features(con: duckdb.DuckDBPyConnection, settings: Settings, rules: RuleSet, as_of: date) -> FeaturesResult:
    _feature_relations(con, as_of, settings.timezone)
    sql = features_sql(rules, as_of, settings.lookback_days)
    con.execute("BEGIN")
    con.execute(f"CREATE OR REPLACE TABLE features.customer_features AS {sql}")
    failpoint("features")
    con.execute("COMMIT")
    customers = con.execute("SELECT count(*) FROM features.customer_features").fetchone()[0]
    return FeaturesResult(customers=customers, features=len(rules.features) + len(rules.scores))

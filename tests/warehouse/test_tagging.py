"""The tags stage stores its rows by customer_id and tag, which publishing keeps without sorting."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from rules.model import load_rules
from warehouse.tagging import apply_tags

AS_OF = date(2026, 11, 21)


@pytest.mark.parametrize("overridden", [False, True])
def test_tags_are_stored_by_customer_and_tag_with_or_without_overrides(settings, overridden):
    """Enough customers for several row groups read on two threads: the rules' rows keep the
    features' order through the unnest; a night with overrides in force sorts them."""
    rules = load_rules()
    assert not settings.warehouse.exists()  # no earlier run to compare coverage with
    scored = {"m_score", "r_score", "f_score", "age_years"}
    with duckdb.connect() as con:
        con.execute("SET threads = 2")
        con.execute("CREATE SCHEMA features; CREATE SCHEMA tags")
        # Customer ids in reverse of their numbers, so storing them in id order is not the order they were made in.
        con.execute(f"""CREATE TABLE features.customer_features AS
                        SELECT 'C' || lpad(CAST(400000 - i AS VARCHAR), 7, '0') AS customer_id,
                               1 + i % 5 AS m_score, 1 + i % 4 AS r_score, 1 + i % 3 AS f_score, 20 + i % 50 AS age_years,
                               {", ".join(f"CAST(NULL AS DOUBLE) AS {name}" for name in sorted(rules.names - scored))}
                        FROM range(400000) t(i) ORDER BY customer_id""")
        con.execute("""CREATE TABLE tags.overrides (override_id BIGINT, customer_id VARCHAR, tag VARCHAR, value VARCHAR,
                       reason VARCHAR, author VARCHAR, created_at TIMESTAMPTZ, effective_from DATE, expires_on DATE,
                       revoked_at TIMESTAMPTZ)""")
        if overridden:
            con.execute("""INSERT INTO tags.overrides VALUES
                (1, 'C0000007', 'value_tier', 'high-value', 'VIP', 'wang', now(), DATE '2026-11-01', NULL, NULL),
                (2, 'C0000003', 'value_tier', NULL, 'wrong', 'wang', now(), DATE '2026-11-01', NULL, NULL)""")
        result = apply_tags(con, settings, rules, AS_OF)
        stored = con.execute("SELECT customer_id, tag FROM tags.customer_tags ORDER BY rowid").fetchall()
        value_tier = dict(con.execute("SELECT customer_id, value FROM tags.customer_tags WHERE tag = 'value_tier'"
                                      " AND customer_id IN ('C0000003', 'C0000007')").fetchall())
    assert result.rows == len(stored) > 1_000_000
    assert stored == sorted(stored)
    if overridden:
        assert value_tier == {"C0000007": "high-value"}
    else:
        assert set(value_tier) == {"C0000003", "C0000007"}

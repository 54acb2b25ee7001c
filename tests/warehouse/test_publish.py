"""Publishing's history: the day's tag changes come out the same however many slices of customers
they are compared in."""

from __future__ import annotations

import random
from datetime import date

import duckdb
import pytest

from warehouse import publish

DAY = date(2026, 3, 2)


def _published(rng: random.Random) -> duckdb.DuckDBPyConnection:
    """A published file's tag tables: yesterday's open history, today's tags, some moved, some new,
    some gone (of customers still here and of customers gone, ids before and after all of today's)."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA analytics")
    for table, columns in publish.HISTORY_TABLES.items():
        con.execute(f"CREATE TABLE analytics.{table} ({columns})")
    con.execute("CREATE TABLE analytics.customer_tags (customer_id VARCHAR, tag VARCHAR, value VARCHAR)")
    con.execute("CREATE TABLE analytics.tag_catalog (tag VARCHAR, coverage DOUBLE)")
    today = [(f"c{n:03d}", tag, rng.choice("abc")) for n in range(100) for tag in ("t1", "t2", "t3")
             if rng.random() < 0.9]
    yesterday = [(c, t, rng.choice("abc") if rng.random() < 0.3 else v) for c, t, v in today if rng.random() < 0.9]
    yesterday += [(c, "t1", "a") for c in ("a-gone", "c050x", "zz-gone")]
    con.executemany("INSERT INTO analytics.customer_tags VALUES (?, ?, ?)", today)
    con.executemany("INSERT INTO analytics.tag_history VALUES (?, ?, ?, DATE '2026-03-01', NULL)", yesterday)
    con.execute("CREATE TABLE analytics.customer_tags_wide AS SELECT DISTINCT customer_id FROM analytics.customer_tags")
    return con


def _day(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    return {table: con.execute(f"SELECT * FROM analytics.{table} ORDER BY ALL").fetchall()
            for table in ("tag_changes", "tag_history")}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tag_changes_compared_in_slices_equal_those_compared_at_once(seed):
    at_once, sliced = _published(random.Random(seed)), _published(random.Random(seed))
    assert publish._customer_slices(at_once, "100GB") == ["true"]
    # About 250 open history rows of about 100 bytes, half of a 9,000-byte limit each: six slices.
    assert len(publish._customer_slices(sliced, "9000B")) > 3
    publish._history(at_once, DAY, 365, "100GB")
    publish._history(sliced, DAY, 365, "9000B")
    expected = _day(at_once)
    assert _day(sliced) == expected
    changes = expected["tag_changes"]
    assert [c for c in changes if c[3] is None] and [c for c in changes if c[4] is None]
    assert [c for c in changes if c[3] is not None and c[4] is not None]


def test_the_first_night_compares_at_once():
    """With no history yet, the join's hash table holds nothing: one slice, however many tags."""
    con = _published(random.Random(1))
    con.execute("DELETE FROM analytics.tag_history")
    assert publish._customer_slices(con, "9000B") == ["true"]

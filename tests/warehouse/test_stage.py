"""Staging: events merged incrementally equal a full build; lines of re-exported orders."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.warehouse.helpers import write_marketplace_orders
from warehouse.land import land
from warehouse.settings import Settings
from warehouse.stage import stage
from warehouse.validate import validate
from warehouse.workdb import open_work_db


def _write_events(inbox: Path, name: str, events: list[tuple[str, str, str]]) -> None:
    """(event_id, user_id, type) lines in the web shop's export format."""
    folder = inbox / "web"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(
        json.dumps({"event_id": e, "user_id": u, "anonymous_id": None, "type": t, "ts": "2026-11-01T08:00:00Z",
                    "session_id": "S1"}) + "\n" for e, u, t in events), encoding="utf-8")


def _night(settings: Settings, run_id: str) -> tuple[str, list[tuple]]:
    """Land, validate and stage; how events were staged and their rows."""
    con = open_work_db(settings)
    try:
        land(con, settings, run_id)
        validate(con, settings, run_id)
        how = stage(con, settings).incremental["events"]
        return how, _events(con)
    finally:
        con.close()


def _events(con) -> list[tuple]:
    return con.execute("SELECT * FROM stage.events ORDER BY ALL").fetchall()


def _rebuilt(settings: Settings) -> list[tuple]:
    """stage.events built from the whole lake (what was recorded forgotten)."""
    con = open_work_db(settings)
    try:
        con.execute("DELETE FROM stage.staged_files")
        assert stage(con, settings).incremental["events"] == "rebuilt"
        return _events(con)
    finally:
        con.close()


def test_events_staged_incrementally_equal_a_full_build(settings):
    inbox = settings.inbox
    _write_events(inbox, "events_1.jsonl", [("E1", "U1", "page_view"), ("E2", "U1", "search"), ("E3", "U2", "login")])
    how, first = _night(settings, "r1")
    assert how == "rebuilt" and len(first) == 3

    assert _night(settings, "r2") == ("kept", first)  # nothing new: the table is kept as it is

    # A new file re-sends E2 with a new type (the newer load wins) and brings E4.
    _write_events(inbox, "events_2.jsonl", [("E2", "U1", "add_to_cart"), ("E4", "U3", "page_view")])
    how, merged = _night(settings, "r3")
    assert how == "merged"
    assert [(r[1], r[4]) for r in merged] == [("E1", "page_view"), ("E2", "add_to_cart"), ("E3", "login"),
                                              ("E4", "page_view")]
    assert merged == _rebuilt(settings)


def test_a_changed_lake_file_builds_events_afresh(settings):
    _write_events(settings.inbox, "events_1.jsonl", [("E1", "U1", "page_view"), ("E2", "U1", "search")])
    _night(settings, "r1")
    valid = next((settings.lake / "valid").glob("web/event/*.parquet"))
    os.utime(valid, ns=(valid.stat().st_atime_ns, valid.stat().st_mtime_ns + 1_000_000))  # as an erasure rewrites it
    how, rows = _night(settings, "r2")
    assert how == "rebuilt" and len(rows) == 2


def test_a_reexported_order_keeps_its_lines_from_the_newest_file(settings):
    """The lines of the order's newest load, even where an older file had them further down
    (row numbers of two files are not comparable: ordering by row alone dropped the lines)."""
    buyers = [{"买家昵称": f"buyer{i}", "收货人": f"张{i}", "联系电话": f"1380000000{i}"} for i in range(1, 4)]
    write_marketplace_orders(settings.inbox, buyers, "orders_20250101.csv")
    write_marketplace_orders(settings.inbox, [{**buyers[2], "订单编号": "T000000003", "子订单编号": "T000000003-1",
                                               "订单状态": "退款成功"}], "orders_20250102.csv")
    _night(settings, "r1")
    con = open_work_db(settings)
    try:
        lines = con.execute("SELECT order_id, _file FROM stage.order_lines ORDER BY ALL").fetchall()
    finally:
        con.close()
    assert lines == [("T000000001", "marketplace/orders_20250101.csv"), ("T000000002", "marketplace/orders_20250101.csv"),
                     ("T000000003", "marketplace/orders_20250102.csv")]

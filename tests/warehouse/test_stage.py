"""Staging: tables merged incrementally equal a full build; lines of re-exported orders."""

from __future__ import annotations

import json
import os
import shutil
from datetime import timezone
from pathlib import Path

from tests.warehouse.helpers import write_marketplace_orders, write_pos_transactions, write_web_users
from warehouse.land import land
from warehouse.quality import UNIQUENESS, committed_context_dir
from warehouse.settings import Settings
from warehouse.stage import stage
from warehouse.validate import validate
from warehouse.workdb import open_work_db


def _write_events(inbox: Path, name: str, events: list[tuple[str, str, str]]) -> None:
    """(event_id, user_id, time of day on 2026-11-01 UTC) lines in the web shop's export format."""
    folder = inbox / "web"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(
        json.dumps({"event_id": e, "user_id": u, "anonymous_id": None, "type": "page_view",
                    "ts": f"2026-11-01T{t}:00Z", "session_id": "S1"}) + "\n" for e, u, t in events), encoding="utf-8")


ORDER_TABLES = ("orders", "order_versions", "order_lines", "order_copies")


def _stage_night(settings: Settings, run_id: str, tables: tuple[str, ...],
                 rebuild: bool = False) -> tuple[dict[str, str], dict[str, list[tuple]]]:
    """Land, validate and stage (from the whole lake if ``rebuild``): how each table was staged,
    and the rows of ``tables``."""
    con = open_work_db(settings)
    try:
        land(con, settings, run_id)
        validate(con, settings, run_id)
        if rebuild:
            con.execute("DELETE FROM stage.staged_files")
        how = stage(con, settings).incremental
        return how, {t: con.execute(f"SELECT * FROM stage.{t} ORDER BY ALL").fetchall() for t in tables}
    finally:
        con.close()


def _night(settings: Settings, run_id: str) -> tuple[str, list[tuple]]:
    """Land, validate and stage; how events were staged and their rows."""
    how, rows = _stage_night(settings, run_id, ("events",))
    return how["events"], rows["events"]


def _rebuilt(settings: Settings) -> list[tuple]:
    """stage.events built from the whole lake (what was recorded forgotten)."""
    how, rows = _stage_night(settings, "rebuild", ("events",), rebuild=True)
    assert how["events"] == "rebuilt"
    return rows["events"]


def test_events_staged_incrementally_equal_a_full_build(settings):
    inbox = settings.inbox
    _write_events(inbox, "events_1.jsonl", [("E1", "U1", "08:00"), ("E2", "U1", "08:05"), ("E3", "U2", "09:00")])
    how, first = _night(settings, "r1")
    assert how == "rebuilt" and len(first) == 3

    assert _night(settings, "r2") == ("kept", first)  # nothing new: the table is kept as it is

    # A new file re-sends E2 with a corrected time (the newer load wins) and brings E4.
    _write_events(inbox, "events_2.jsonl", [("E2", "U1", "08:07"), ("E4", "U3", "10:00")])
    how, merged = _night(settings, "r3")
    assert how == "merged"
    assert [(r[1], r[3].astimezone(timezone.utc).strftime("%H:%M")) for r in merged] == [
        ("E1", "08:00"), ("E2", "08:07"), ("E3", "09:00"), ("E4", "10:00")]
    assert merged == _rebuilt(settings)


def test_a_changed_lake_file_builds_events_afresh(settings):
    _write_events(settings.inbox, "events_1.jsonl", [("E1", "U1", "08:00"), ("E2", "U1", "08:05")])
    _night(settings, "r1")
    valid = next((settings.lake / "valid").glob("web/event/*.parquet"))
    os.utime(valid, ns=(valid.stat().st_atime_ns, valid.stat().st_mtime_ns + 1_000_000))  # as an erasure rewrites it
    how, rows = _night(settings, "r2")
    assert how == "rebuilt" and len(rows) == 2


def test_a_data_directory_moved_with_its_files_times_keeps_staging_incrementally(settings, tmp_path):
    """Staging records lake paths relative to the lake: after ``cp -a`` of the data directory
    the next night merges only what it adds (absolute paths made it build everything again)."""
    _write_events(settings.inbox, "events_1.jsonl", [("E1", "U1", "08:00"), ("E2", "U1", "08:05")])
    _night(settings, "r1")
    moved = Settings.from_env(data_dir=tmp_path / "moved")
    shutil.copytree(settings.data_dir, moved.data_dir)  # copy2: the files keep their modification times
    shutil.rmtree(settings.data_dir)
    _write_events(moved.inbox, "events_2.jsonl", [("E3", "U2", "09:00")])
    how, rows = _night(moved, "r2")
    assert how == "merged" and [r[1] for r in rows] == ["E1", "E2", "E3"]
    assert _night(moved, "r3")[0] == "kept"


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


def _pos_lines(receipts: list[tuple[str, int, int]]) -> list[dict]:
    """POS sale lines from (receipt, line_no, quantity), at 10.00 an item."""
    return [{"小票号": receipt, "行号": line_no, "商品编码": f"SKU{line_no}", "数量": quantity,
             "金额": f"{quantity * 10}.00"} for receipt, line_no, quantity in receipts]


def test_an_order_sent_again_with_fewer_lines_keeps_only_its_newest_loads_lines(settings):
    """Only orders with lines in several loads go through the windows: a line the newer load
    no longer has goes, a line it changed is taken from it, and the lines of orders one load
    holds all stay (whichever night their files came in)."""
    write_pos_transactions(settings.inbox, _pos_lines([("R1", 1, 1), ("R1", 2, 1), ("R1", 3, 1), ("R2", 1, 1),
                                                       ("R2", 2, 2)]), "pos_transactions_1.csv")
    _stage_night(settings, "r1", ("order_lines",))
    write_pos_transactions(settings.inbox, _pos_lines([("R1", 1, 1), ("R1", 3, 5), ("R3", 1, 1)]),
                           "pos_transactions_2.csv")
    how, merged = _stage_night(settings, "r2", ("order_lines",))
    assert how["order_lines"] == "merged"
    kept = [(r[1], r[2], r[5], r[-3]) for r in merged["order_lines"]]  # order_id, line_no, quantity, _file
    assert kept == [("R1", 1, 1, "store/pos_transactions_2.csv"), ("R1", 3, 5, "store/pos_transactions_2.csv"),
                    ("R2", 1, 1, "store/pos_transactions_1.csv"), ("R2", 2, 2, "store/pos_transactions_1.csv"),
                    ("R3", 1, 1, "store/pos_transactions_2.csv")]
    how, rebuilt = _stage_night(settings, "r3", ("order_lines",), rebuild=True)
    assert how["order_lines"] == "rebuilt" and rebuilt == merged


def test_the_validation_suites_keep_a_staged_key_once_per_file():
    """Staging lets rows of one load through without counting keys (``_several_loads``): that
    holds only while validation quarantines a key's repeats within a file."""
    suites = {s["name"]: s for s in (json.loads(p.read_text(encoding="utf-8"))
                                     for p in (committed_context_dir() / "expectations").glob("*.json"))}
    keys = {suite: [e["kwargs"].get("column_list") or [e["kwargs"]["column"]] for e in suites[suite]["expectations"]
                    if e["type"] in UNIQUENESS]
            for suite in ("order_rows", "order_line_rows", "event_rows", "interaction_rows")}
    assert keys == {"order_rows": [["order_id"]], "order_line_rows": [["order_id", "line_no"]],
                    "event_rows": [["event_id"]], "interaction_rows": [["interaction_id"]]}


def test_orders_and_lines_staged_incrementally_equal_a_full_build(settings):
    buyers = [{"买家昵称": f"buyer{i}", "收货人": f"张{i}", "联系电话": f"1380000000{i}"} for i in range(1, 4)]
    write_marketplace_orders(settings.inbox, buyers, "orders_20250101.csv")
    # A store pickup of an order not yet exported.
    write_pos_transactions(settings.inbox, [{"小票号": "RP1", "行号": 1, "平台订单号": "T000000005"}])
    how, first = _stage_night(settings, "r1", ORDER_TABLES)
    assert how["orders"] == how["order_lines"] == "rebuilt"
    assert ("store", "RP1") in {r[:2] for r in first["orders"]} and first["order_copies"] == []

    # The next export re-sends T3 refunded and brings T5, the order the store receipt picked up.
    write_marketplace_orders(settings.inbox, [{**buyers[2], "订单编号": "T000000003", "子订单编号": "T000000003-1",
                                               "订单状态": "已退款"},
                                              {**buyers[0], "订单编号": "T000000005", "子订单编号": "T000000005-1"}],
                             "orders_20250102.csv")
    how, merged = _stage_night(settings, "r2", ORDER_TABLES)
    assert how["orders"] == how["order_lines"] == "merged"
    assert merged["order_copies"] == [("store", "RP1", "marketplace", "T000000005")]
    assert [r[:2] for r in merged["orders"]] == [("marketplace", f"T00000000{i}") for i in (1, 2, 3, 5)]
    assert merged["orders"][2][6] == "refunded"
    lines = {r[1]: r[-3] for r in merged["order_lines"]}  # order_id -> _file
    assert lines["T000000003"] == lines["T000000005"] == "marketplace/orders_20250102.csv"
    assert lines["RP1"] == "store/pos_transactions.csv"  # a copy's lines stay; readers join stage.orders
    how, rebuilt = _stage_night(settings, "r3", ORDER_TABLES, rebuild=True)
    assert how["orders"] == how["order_lines"] == "rebuilt" and rebuilt == merged


def test_customer_records_staged_incrementally_equal_a_full_build(settings):
    write_web_users(settings.inbox, [
        {"user_id": "U1", "email": "li@example.com", "mobile": "13812345678", "real_name": "李娜"},
        {"user_id": "U2", "email": "wang@example.com", "mobile": "13800000002", "real_name": "王伟"}])
    how, first = _stage_night(settings, "r1", ("customer_records",))
    assert how["customer_records"] == "rebuilt" and len(first["customer_records"]) == 2
    # A later export: U1 moved (newer updated_at), U2 with an older version (the staged one stays
    # the newest though its load is older), U3 new with a phone not normalised before.
    write_web_users(settings.inbox, [
        {"user_id": "U1", "email": "li@example.com", "mobile": "13812345678", "real_name": "李娜", "city": "北京",
         "updated_at": "2025-02-01T00:00:00Z"},
        {"user_id": "U2", "email": "old@example.com", "mobile": "13800000002", "real_name": "王伟",
         "updated_at": "2024-12-01T00:00:00Z"},
        {"user_id": "U3", "email": "zhao@example.com", "mobile": "+86 139-0000-0003", "real_name": "赵敏"}],
        "users_2.jsonl")
    how, merged = _stage_night(settings, "r2", ("customer_records",))
    assert how["customer_records"] == "merged"
    by_id = {r[1]: r for r in merged["customer_records"]}
    assert by_id["U1"][13] == "北京" and by_id["U2"][3] == "wang@example.com"
    assert by_id["U3"][6] == "+8613900000003"
    how, rebuilt = _stage_night(settings, "r3", ("customer_records",), rebuild=True)
    assert how["customer_records"] == "rebuilt" and rebuilt == merged

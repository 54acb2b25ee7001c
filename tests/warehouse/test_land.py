"""Landing: the inbox keeps every delivery, so a file is hashed again only when it changed; a large
export is landed in parts, or read whole again when its parts cannot stand."""

from __future__ import annotations

import os
from contextlib import closing
from dataclasses import replace

import pyarrow.parquet as pq
import pytest

import warehouse.land
from sources.sdk import discover
from tests.warehouse.helpers import POS_HEADER, write_marketplace_orders, write_store_members
from warehouse.land import forget_lake, land
from warehouse.workdb import open_work_db


def test_an_unchanged_inbox_file_is_not_read_again_and_a_changed_one_is_landed(settings, monkeypatch):
    write_store_members(settings.inbox, [{"会员卡号": "M1", "姓名": "王芳", "手机号": "13800000001"}])
    write_marketplace_orders(settings.inbox, [{"买家昵称": "buyer1", "收货人": "李雷", "联系电话": "13900000002"}])
    hashed = []
    sha256 = warehouse.land._sha256
    monkeypatch.setattr(warehouse.land, "_sha256", lambda path: hashed.append(path.name) or sha256(path))
    with closing(open_work_db(settings)) as con:
        first = land(con, settings, "r1")
        assert sorted(hashed) == ["members.csv", "orders_20250101.csv"] and first.files_landed == 2
        hashed.clear()

        again = land(con, settings, "r2")
        assert hashed == [] and again.files_landed == 0 and len(again.duplicates) == 2

        # New bytes of the same length, written a second later: hashed again, and landed.
        members = settings.inbox / "store" / "members.csv"
        before = members.stat()
        members.write_bytes(members.read_bytes().replace(b"M1", b"M2"))
        os.utime(members, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        assert members.stat().st_size == before.st_size
        changed = land(con, settings, "r3")
        assert hashed == ["members.csv"] and changed.files_landed == 1 and len(changed.duplicates) == 1
        hashed.clear()

        forget_lake(con, settings)  # a full rebuild reads every file again
        rebuilt = land(con, settings, "r4")
        assert sorted(hashed) == ["members.csv", "orders_20250101.csv"] and rebuilt.files_landed == 2


RECEIPT_LINE = "R{receipt},{line},M1,13800000001,2025/01/04 10:00,S001,SKU1,美妆,1,10.00,10.00,销售,"
RECEIPTS = {
    "receipts together": [i // 2 for i in range(100)],
    "receipts apart": [1, 2, 1, 3, 2] * 20,
    "a short row": list(range(100)),
}


@pytest.mark.parametrize("case", RECEIPTS)
def test_a_pos_export_is_landed_in_parts_or_again_whole_with_every_row_once(settings, caplog, case):
    body = [RECEIPT_LINE.format(receipt=r, line=i) for i, r in enumerate(RECEIPTS[case])]
    if case == "a short row":
        body[30] = "R30,1,M1"  # pyarrow refuses the file; pandas reads it, the missing fields NULL
    path = settings.inbox / "store" / "pos_transactions.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes((",".join(POS_HEADER) + "\n" + "\n".join(body) + "\n").encode("gbk"))
    connector = discover()["store"]
    whole = connector.read(path, connector.context(settings.timezone))
    settings = replace(settings, land_part_bytes=300)
    with closing(open_work_db(settings)) as con:
        landed = land(con, settings, "r1")
        loads = con.execute("SELECT entity, status, rows_in, lake_path FROM ops.loads ORDER BY entity").fetchall()
    assert landed.files_landed == 1 and not landed.failures
    assert [(entity, status) for entity, status, _, _ in loads] == [(e, "landed") for e in sorted(whole)]
    for entity, _, rows_in, lake_path in loads:
        rows = pq.read_table(lake_path).column("_row").to_pylist()
        assert rows_in == len(rows) == whole[entity].num_rows
        assert sorted(rows) == sorted(whole[entity].column("_row").to_pylist())
    warned = [r for r in caplog.records if "is landed read whole: its parts cannot stand" in r.getMessage()]
    assert len(warned) == (0 if case == "receipts together" else 1)


def _events(first: int, count: int) -> bytes:
    return "".join(f'{{"event_id": "e{i}", "user_id": "u{i % 7}", "type": "page_view", '
                   f'"ts": "2025-01-04T10:00:00Z", "session_id": "s{i}"}}\n' for i in range(first, first + count)).encode()


def test_a_file_that_fails_after_parts_were_written_leaves_nothing_landed(settings):
    """Parts are written on a thread while the next is read: a part that cannot be read after
    others were written still takes every written part of the file with it.  Its bytes that are
    not UTF-8 sit inside a JSON string, which pyarrow's parser lets through: the error names the
    file and line all the same."""
    events = settings.inbox / "web" / "events.jsonl"
    events.parent.mkdir(parents=True)
    events.write_bytes(_events(0, 40) + b'{"event_id": "bad\xff"}\n' + _events(41, 10))
    (settings.inbox / "web" / "users.jsonl").write_bytes(b'{"user_id": "u1", "updated_at": "2025-01-04T10:00:00Z"}\n')
    settings = replace(settings, land_part_bytes=1000)
    with closing(open_work_db(settings)) as con:
        landed = land(con, settings, "r1")
        loads = con.execute("SELECT file, entity, status, rows_in FROM ops.loads ORDER BY file").fetchall()
    assert landed.files_landed == 1 and len(landed.failures) == 1
    assert "events.jsonl" in landed.failures[0] and "line 41: bytes at offset" in landed.failures[0]
    assert "are not valid utf-8" in landed.failures[0] and "re-export the file as utf-8" in landed.failures[0]
    assert loads == [("web/events.jsonl", None, "failed", 0), ("web/users.jsonl", "customer_record", "landed", 1)]
    assert [p.parent.name for p in (settings.lake / "raw" / "web").rglob("*.parquet")] == ["customer_record"]


def test_a_part_the_lake_cannot_take_fails_the_landing(settings, monkeypatch):
    """An error writing a part on the writing thread is raised, not lost with the thread."""
    events = settings.inbox / "web" / "events.jsonl"
    events.parent.mkdir(parents=True)
    events.write_bytes(_events(0, 50))
    writes = []

    def write_table(writer, table, *args, **kwargs):
        writes.append(table.num_rows)
        if len(writes) == 2:
            raise OSError("No space left on device")
        return original(writer, table, *args, **kwargs)

    original = pq.ParquetWriter.write_table
    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)
    settings = replace(settings, land_part_bytes=1000)
    with closing(open_work_db(settings)) as con, pytest.raises(OSError, match="No space left on device"):
        land(con, settings, "r1")
    assert len(writes) >= 2

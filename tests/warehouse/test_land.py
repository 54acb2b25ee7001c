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

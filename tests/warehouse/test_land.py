"""Landing: the inbox keeps every delivery, so a file is hashed again only when it changed."""

from __future__ import annotations

import os
from contextlib import closing

import warehouse.land
from tests.warehouse.helpers import write_marketplace_orders, write_store_members
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

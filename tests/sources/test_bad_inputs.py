"""Bad exports, table-driven, through the real land and validate stages: each one either fails
the file with a message naming it and the fix, or loads what is good and quarantines the rest
with file, row, column and reason; the counts always add up."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from warehouse.land import land
from warehouse.validate import validate
from warehouse.workdb import open_work_db

MEMBER_HEADER = "会员卡号,姓名,手机号,性别,生日,省份,城市,入会时间,短信订阅"
GOOD_MEMBER = "M1,王芳,13812345678,女,1990/01/31,上海,上海,2025-01-01 10:00:00,是"


def _members(body: str, encoding: str = "gbk", header: str = MEMBER_HEADER) -> bytes:
    return (header + "\n" + body).encode(encoding) if header is not None else body.encode(encoding)


def _user(**fields) -> str:
    base = {"user_id": "U1", "email": "a@example.com", "registered_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z"}
    return json.dumps({**base, **fields}, ensure_ascii=False)


def _orders(second_total, second_id: str = "W2", second_time: str = "2026-11-20T10:00:00Z") -> bytes:
    """Two web orders: a good one, and one whose total, id or time is given."""
    orders = [{"order_id": order_id, "user_id": "U1", "created_at": created, "total": total,
               "currency": "CNY", "status": "paid", "items": []}
              for order_id, total, created in (("W1", 12.5, "2026-11-20T10:00:00Z"),
                                               (second_id, second_total, second_time))]
    return "".join(json.dumps(o) + "\n" for o in orders).encode()


POS_HEADER = "小票号,行号,会员卡号,手机号,交易时间,门店编号,商品编码,品类,数量,单价,金额,交易类型"


def _pos(*lines: str) -> bytes:
    return (POS_HEADER + "\n" + "\n".join(lines) + "\n").encode("gbk")


# (description, inbox path, bytes, expected: ("failed", words in the message) or
#  ("loaded", rows_in, rows_loaded, quarantined columns))
CASES = [
    ("empty file", "store/members.csv", b"", ("failed", ["members.csv", "empty"])),
    ("header only", "store/members.csv", _members(""), ("loaded", 0, 0, [])),
    ("unknown encoding (UTF-16)", "store/members.csv", _members(GOOD_MEMBER + "\n", "utf-16"),
     ("failed", ["members.csv", "not valid gbk", "re-export"])),
    ("UTF-8 with BOM where GBK is expected", "store/members.csv",
     b"\xef\xbb\xbf" + _members(GOOD_MEMBER + "\n", "utf-8"), ("failed", ["members.csv", "gbk"])),
    ("truncated last line", "store/members.csv", _members(GOOD_MEMBER + "\nM2,李强,1391234"),
     ("loaded", 2, 1, ["_errors"])),
    ("extra column (contract evolve keeps it)", "store/members.csv",
     _members(GOOD_MEMBER + ",VIP\n", header=MEMBER_HEADER + ",等级"), ("loaded", 1, 1, [])),
    ("missing required column", "store/members.csv", _members("王芳\n", header="姓名"),
     ("failed", ["missing required column", "会员卡号"])),
    ("column renamed", "store/members.csv", _members(GOOD_MEMBER + "\n", header=MEMBER_HEADER.replace("会员卡号", "卡号")),
     ("failed", ["missing required column", "会员卡号", "卡号"])),
    ("duplicated header", "store/members.csv", _members("M1,王芳,王芳\n", header="会员卡号,姓名,姓名"),
     ("failed", ["repeats column", "姓名"])),
    ("wrong delimiter", "store/members.csv", _members(GOOD_MEMBER.replace(",", ";") + "\n",
                                                      header=MEMBER_HEADER.replace(",", ";")),
     ("failed", ["not comma-separated", "re-export"])),
    ("dates in three formats", "store/members.csv",
     _members("\n".join([GOOD_MEMBER, GOOD_MEMBER.replace("M1,", "M2,").replace("1990/01/31", "1990-01-31"),
                         GOOD_MEMBER.replace("M1,", "M3,").replace("1990/01/31", "19900131"),
                         GOOD_MEMBER.replace("M1,", "M4,").replace("1990/01/31", "31.01.1990")]) + "\n"),
     ("loaded", 4, 3, ["_errors"])),
    ("emoji and control characters in names", "web/users.jsonl",
     (_user(real_name="王\x07芳😀\x00") + "\n").encode(), ("loaded", 1, 1, [])),
    ("negative amount", "web/orders.jsonl", _orders(-5), ("loaded", 2, 1, ["amount"])),
    ("non-numeric amount", "web/orders.jsonl", _orders("twelve"), ("loaded", 2, 1, ["_errors", "amount"])),
    ("future dates", "web/orders.jsonl", _orders(9.5, second_time="2099-01-01T00:00:00Z"),
     ("loaded", 2, 1, ["ordered_at"])),
    ("amounts with currency symbols and thousands separators", "store/pos_transactions.csv",
     _pos("R1,1,M1,13812345678,2026/11/20 10:00,S001,SKU1,服饰,1,\"￥1,299.00\",\"￥1,299.00\",销售"),
     ("loaded", 1, 1, [])),
    ("non-numeric line ids", "store/pos_transactions.csv",
     _pos("R1,1,M1,13812345678,2026/11/20 10:00,S001,SKU1,服饰,1,9.90,9.90,销售",
          "R2,一,M1,13812345678,2026/11/20 11:00,S001,SKU2,食品,1,5.00,5.00,销售"),
     ("loaded", 2, 1, ["_errors", "line_no"])),
    ("a key twice in one file (the first row stays)", "web/orders.jsonl", _orders(12.5, second_id="W1"),
     ("loaded", 2, 1, ["order_id"])),
    ("a 10 MB single line", "web/users.jsonl", (_user(nickname="x" * 10_000_000) + "\n").encode(),
     ("loaded", 1, 1, [])),
    ("a file whose rows all fail", "web/users.jsonl",
     "".join(_user(user_id=f"U{i}", email="not an email") + "\n" for i in range(3)).encode(),
     ("rejected", 3, 0, ["email", "batch_bad_share"])),
]


@pytest.mark.parametrize("description,where,content,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(settings, description, where, content, expected):
    # These files are tiny: one bad row is a large share.  Only a file whose rows all fail is
    # rejected whole here; the default threshold is tested in tests/warehouse/test_validate.py.
    settings = replace(settings, max_bad_share=0.99)
    path = settings.inbox / where
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    con = open_work_db(settings)
    try:
        landed = land(con, settings, "r1")
        validate(con, settings, "r1")
        loads = con.execute("SELECT status, rows_in, rows_loaded, rows_quarantined, message FROM ops.loads"
                            " ORDER BY load_id").fetchall()
        quarantined = {r[0] for r in con.execute(
            "SELECT coalesce(\"column\", expectation) FROM ops.quarantine").fetchall()}
        rows_named = con.execute("SELECT count(*) FROM ops.quarantine WHERE \"row\" IS NULL OR file <> ?",
                                 [where]).fetchone()[0]
    finally:
        con.close()
    if expected[0] == "failed":
        assert [l[0] for l in loads] == ["failed"] and landed.failures
        for word in expected[1]:
            assert word in loads[0][4], f"{word!r} not in {loads[0][4]!r}"
        assert "Fix:" in loads[0][4]
        return
    status, rows_in, rows_loaded, columns = (expected if expected[0] == "rejected" else ("validated", *expected[1:]))
    main = loads[0]
    assert main[:3] == (status, rows_in, rows_loaded)
    assert all(l[1] == l[2] + l[3] for l in loads), loads
    assert quarantined == set(columns) | ({"batch_bad_share"} if status == "rejected" else set())
    assert rows_named == 0, "every quarantined row names its file and row"

"""Validation: bad rows go to quarantine with file, row, column and reason; counts add up."""

from __future__ import annotations

from dataclasses import replace

import duckdb

from tests.warehouse.helpers import run_through_identity, write_store_members, write_web_users


def test_bad_rows_are_quarantined_and_the_rest_loads(settings):
    settings = replace(settings, max_bad_share=0.9)  # keep this small file under the rejection threshold
    write_web_users(settings.inbox, [
        {"user_id": "U1", "email": "ok@example.com"},
        {"user_id": "U2", "email": "not an email"},
        {"user_id": None, "email": "b@example.com"},
        {"user_id": "U4", "birthday": "31/12/1990"},
        {"user_id": "U5", "email": "fine@example.com"},
    ])
    run_through_identity(settings)
    with duckdb.connect(str(settings.work_db), read_only=True) as con:
        load = con.execute("SELECT status, rows_in, rows_loaded, rows_quarantined FROM ops.loads").fetchone()
        assert load == ("validated", 5, 2, 3)
        found = con.execute("""SELECT "row", "column", reason FROM ops.quarantine ORDER BY "row", "column" """
                            ).fetchall()
        assert [(r, c) for r, c, _ in found] == [(2, "email"), (3, "source_customer_id"), (4, "_errors")]
        assert "birthday: cannot read '31/12/1990'" in found[2][2]
        assert con.execute("SELECT count(*) FROM stage.customer_records").fetchone()[0] == 2


def test_a_file_mostly_bad_is_rejected_whole_and_every_row_accounted(settings):
    write_store_members(settings.inbox, [{"会员卡号": f"M{i}", "姓名": "张三", "手机号": "13812345678",
                                          "生日": "not a date"} for i in range(5)])
    run_through_identity(settings)
    with duckdb.connect(str(settings.work_db), read_only=True) as con:
        assert con.execute("SELECT status, rows_in, rows_loaded, rows_quarantined FROM ops.loads").fetchone() == \
            ("rejected", 5, 0, 5)
        reasons = {r[0] for r in con.execute("SELECT reason FROM ops.quarantine WHERE expectation = 'batch_bad_share'"
                                             ).fetchall()}
        assert len(reasons) == 1 and "file rejected: 100% of its rows fail validation" in reasons.pop()

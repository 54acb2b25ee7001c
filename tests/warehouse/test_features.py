"""Features: point in time, in the business time zone, at the edges of the windows."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import date

from rules.model import load_rules
from tests.warehouse.helpers import run_through_identity, write_web_users
from warehouse.features import compute_features
from warehouse.workdb import open_work_db

AS_OF = date(2026, 11, 21)  # active_days_30 reads 2026-10-23 to 2026-11-21, Asia/Shanghai (UTC+8)


def test_activity_is_counted_by_business_day_at_the_edge_of_the_window(settings):
    write_web_users(settings.inbox, [
        {"user_id": "U1"}, {"user_id": "U2"},
        {"user_id": "U3", "registered_at": "2026-11-25T00:00:00Z"},  # after as_of: known by its event only
    ])
    events = [
        ("U1", "2026-10-22T16:30:00Z"),  # 2026-10-23 00:30 in Shanghai: the window's first day
        ("U1", "2026-11-21T15:59:00Z"),  # 2026-11-21 23:59: its last
        ("U1", "2026-11-21T16:00:00Z"),  # 2026-11-22 00:00: after as_of
        ("U2", "2026-10-22T15:59:00Z"),  # 2026-10-22 23:59: the day before the window
        ("U3", "2025-06-01T00:00:00Z"),
    ]
    (settings.inbox / "web" / "events.jsonl").write_text("".join(
        json.dumps({"event_id": f"E{i}", "user_id": user, "anonymous_id": None, "type": "page_view", "ts": ts,
                    "session_id": f"S{i}"}) + "\n" for i, (user, ts) in enumerate(events)), encoding="utf-8")
    ids = run_through_identity(settings)
    with closing(open_work_db(settings)) as con:
        compute_features(con, settings, load_rules(), AS_OF)
        active = dict(con.execute("SELECT customer_id, active_days_30 FROM features.customer_features").fetchall())
    assert {user: active.get(ids[("web", user)]) for user in ("U1", "U2", "U3")} == {"U1": 2, "U2": 0, "U3": 0}

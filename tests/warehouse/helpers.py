"""Small hand-written exports for stage tests, run through the real stages."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from warehouse.identity import resolve_identities
from warehouse.land import land
from warehouse.settings import Settings
from warehouse.stage import stage
from warehouse.validate import validate
from warehouse.workdb import open_work_db

MEMBER_HEADER = ["会员卡号", "姓名", "手机号", "性别", "生日", "省份", "城市", "入会时间", "短信订阅"]


def write_web_users(inbox: Path, users: list[dict], name: str = "users.jsonl") -> None:
    folder = inbox / "web"
    folder.mkdir(parents=True, exist_ok=True)
    defaults = {"gender": "F", "birthday": "1990-01-01", "province": "上海", "city": "上海",
                "registered_at": "2025-01-01T00:00:00Z", "email_opt_in": True, "updated_at": "2025-01-01T00:00:00Z"}
    (folder / name).write_text("".join(json.dumps({**defaults, **u}, ensure_ascii=False) + "\n" for u in users),
                               encoding="utf-8")


def write_store_members(inbox: Path, members: list[dict], name: str = "members.csv") -> None:
    folder = inbox / "store"
    folder.mkdir(parents=True, exist_ok=True)
    defaults = {"性别": "女", "生日": "1990/01/01", "省份": "上海", "城市": "上海", "入会时间": "2025-01-01 10:00:00",
                "短信订阅": "是"}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MEMBER_HEADER)
    writer.writeheader()
    for m in members:
        writer.writerow({**defaults, **m})
    (folder / name).write_bytes(buffer.getvalue().encode("gbk"))


def run_through_identity(settings: Settings, run_id: str = "r1") -> dict[tuple[str, str], str]:
    """Land, validate, stage and resolve; return {(source, source_customer_id): customer_id}."""
    con = open_work_db(settings)
    try:
        land(con, settings, run_id)
        validate(con, settings, run_id)
        stage(con, settings)
        resolve_identities(con, run_id)
        return {(s, i): c for s, i, c in con.execute(
            "SELECT source, source_customer_id, customer_id FROM identity.node_customer").fetchall()}
    finally:
        con.close()

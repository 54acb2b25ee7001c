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
MARKETPLACE_HEADER = ["订单编号", "子订单编号", "买家昵称", "收货人", "联系电话", "收货省份", "收货城市", "下单时间",
                      "商品编码", "商品类目", "购买数量", "商品单价", "实付金额", "订单状态"]
POS_HEADER = ["小票号", "行号", "会员卡号", "手机号", "交易时间", "门店编号", "商品编码", "品类", "数量", "单价", "金额",
              "交易类型", "平台订单号"]


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
    _write_csv(folder / name, MEMBER_HEADER, [{**defaults, **m} for m in members], "gbk")


def write_pos_transactions(inbox: Path, lines: list[dict], name: str = "pos_transactions.csv") -> None:
    """One sale line per dict (小票号, 行号, ...) in the store's GBK POS export: member M1, one item at 10.00."""
    folder = inbox / "store"
    folder.mkdir(parents=True, exist_ok=True)
    defaults = {"会员卡号": "M1", "交易时间": "2025/01/04 10:00", "门店编号": "S001", "商品编码": "SKU1", "品类": "美妆",
                "数量": 1, "单价": "10.00", "金额": "10.00", "交易类型": "销售"}
    _write_csv(folder / name, POS_HEADER, [{**defaults, **line} for line in lines], "gbk")


def write_marketplace_orders(inbox: Path, buyers: list[dict], name: str = "orders_20250101.csv") -> None:
    """One order per buyer dict (买家昵称, 收货人, 联系电话, ...)."""
    folder = inbox / "marketplace"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"订单编号": f"T{i:09d}", "子订单编号": f"T{i:09d}-1", "收货省份": "上海", "收货城市": "上海",
             "下单时间": "2025-01-02 10:00:00", "商品编码": "SKU1", "商品类目": "美妆", "购买数量": 1,
             "商品单价": "10.00", "实付金额": "10.00", "订单状态": "交易成功", **b} for i, b in enumerate(buyers, start=1)]
    _write_csv(folder / name, MARKETPLACE_HEADER, rows, "utf-8-sig")


def _write_csv(path: Path, header: list[str], rows: list[dict], encoding: str) -> None:
    """An export as the source writes it: a header, then the rows, in the source's encoding."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))


def run_through_identity(settings: Settings, run_id: str = "r1", model: Path | None = None) -> dict[tuple[str, str], str]:
    """Land, validate, stage and resolve; return {(source, source_customer_id): customer_id}."""
    con = open_work_db(settings)
    try:
        land(con, settings, run_id)
        validate(con, settings, run_id)
        stage(con, settings)
        resolve_identities(con, run_id, model)
        return {(s, i): c for s, i, c in con.execute(
            "SELECT source, source_customer_id, customer_id FROM identity.node_customer").fetchall()}
    finally:
        con.close()

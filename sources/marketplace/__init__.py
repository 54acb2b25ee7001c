"""Marketplace order exports: one row per sub-order (line), buyer nick, masked phone, refunds.

The same order can appear in several exports (the platform re-exports recent orders, with
their latest status); staging keeps the version from the newest file.  A buyer's record is
the latest of their rows in the file (in each part of a large file: staging keeps the latest).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sources.categories import canonical_category
from sources.sdk import (Connector, FileReader, ReadContext, Stream, clean_text, enforce_contract, parse_number,
                         parse_timestamp, read_export, relabel, to_entity_table)

ENCODING = "utf-8-sig"
COLUMNS = ["订单编号", "子订单编号", "买家昵称", "收货人", "联系电话", "收货省份", "收货城市", "下单时间",
           "商品编码", "商品类目", "购买数量", "商品单价", "实付金额", "订单状态"]
REQUIRED = ["订单编号", "买家昵称", "下单时间", "实付金额", "订单状态"]
STATUS = {"交易成功": "paid", "已退款": "refunded", "交易关闭": "cancelled"}


def read_orders(path: Path, ctx: ReadContext) -> dict:
    raw, errors = read_export(path, "csv", ENCODING, ctx.part)
    raw = enforce_contract(path, raw, COLUMNS, REQUIRED, ctx.contract, errors)
    rows = pd.DataFrame({
        "order_id": clean_text(raw["订单编号"]),
        "source_customer_id": clean_text(raw["买家昵称"]),
        "name": clean_text(raw["收货人"]),
        "phone": clean_text(raw["联系电话"]),
        "province": clean_text(raw["收货省份"]),
        "city": clean_text(raw["收货城市"]),
        "ordered_at": parse_timestamp(raw["下单时间"], "下单时间", errors, fmt="%Y-%m-%d %H:%M:%S", tz=ctx.timezone),
        "amount": parse_number(raw["实付金额"], "实付金额", errors),
        "status": relabel(clean_text(raw["订单状态"]), STATUS),
        "sku": clean_text(raw["商品编码"]),
        "category": canonical_category(raw["商品类目"]),
        "quantity": parse_number(raw["购买数量"], "购买数量", errors),
        "unit_price": parse_number(raw["商品单价"], "商品单价", errors),
        "_row": raw["_row"],
    })
    rows["_errors"] = errors.column()
    sub_order = clean_text(raw["子订单编号"])
    rows["line_no"] = rows.groupby("order_id", sort=False, dropna=False).cumcount() + 1
    rows["source_record_id"] = sub_order.fillna(rows["order_id"] + "-" + rows["line_no"].astype(str))

    first = rows.groupby("order_id", sort=False, dropna=False).head(1).copy()
    first["channel"] = "marketplace"
    first["currency"] = "CNY"
    orders = first.assign(source_record_id=first["order_id"])

    customers = rows.sort_values("ordered_at").groupby("source_customer_id", sort=False).tail(1).copy()
    customers = customers.assign(source_record_id=customers["source_customer_id"],
                                 updated_at=customers["ordered_at"]).sort_values("_row")
    extra = raw.drop(columns=[*COLUMNS, "_row"])
    return {
        "customer_record": to_entity_table("customer_record", customers),
        "order": to_entity_table("order", orders),
        "order_line": to_entity_table("order_line", rows.drop(columns=["name", "phone"]), extra=extra),
    }


CONNECTOR = Connector(
    name="marketplace",
    description="Marketplace order exports: buyer nick, masked phone, order and line rows, refunds (CSV).",
    streams=(
        Stream("customer_record", key=("source_customer_id",), cursor="updated_at"),
        Stream("order", key=("order_id",), cursor="ordered_at"),
        Stream("order_line", key=("order_id", "line_no")),
    ),
    files=(FileReader("orders_*.csv", read_orders, "csv", tuple(COLUMNS), tuple(REQUIRED),
                      ("下单时间", "实付金额", "购买数量", "商品单价"), in_parts=True, group_by=("订单编号",)),),
    encoding=ENCODING,
)

"""Offline stores: membership and POS exports, GBK-encoded CSV with Chinese headers, local time.

Members are mapped declaratively (mapping.yaml beside this file); POS rows are order lines
whose receipts (小票号) are grouped into orders here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from sources.categories import canonical_category
from sources.mapping import connector_from_mapping
from sources.sdk import (FileReader, ReadContext, Stream, clean_text, enforce_contract, parse_number,
                         parse_timestamp, read_export, to_entity_table)

POS_COLUMNS = ["小票号", "行号", "会员卡号", "手机号", "交易时间", "门店编号", "商品编码", "品类", "数量", "单价", "金额", "交易类型"]
POS_REQUIRED = ["小票号", "行号", "会员卡号", "交易时间", "金额"]
# Optional: a marketplace order picked up and paid in the store carries the platform's order
# number, so staging keeps that order once.
PLATFORM_ORDER = "平台订单号"


def read_pos(path: Path, ctx: ReadContext) -> dict:
    """POS rows are order lines; an order (receipt) is the group of lines with one 小票号."""
    raw, errors = read_export(path, "csv", MEMBERS.encoding, ctx.part)
    raw = enforce_contract(path, raw, POS_COLUMNS, POS_REQUIRED, ctx.contract, errors)
    lines = pd.DataFrame({
        "order_id": clean_text(raw["小票号"]),
        "line_no": parse_number(raw["行号"], "行号", errors),
        "sku": clean_text(raw["商品编码"]),
        "category": canonical_category(raw["品类"]),
        "quantity": parse_number(raw["数量"], "数量", errors),
        "unit_price": parse_number(raw["单价"], "单价", errors),
        "_row": raw["_row"],
    })
    lines["source_record_id"] = lines["order_id"] + "#" + raw["行号"].astype("string")
    platform_order = clean_text(raw.pop(PLATFORM_ORDER)) if PLATFORM_ORDER in raw else pd.Series(pd.NA, index=raw.index,
                                                                                                   dtype="string")
    extra = raw.drop(columns=[*POS_COLUMNS, "_row"])
    line_table = to_entity_table("order_line", lines.assign(line_no=lines["line_no"].astype("Int32")), errors, extra)

    header = pd.DataFrame({
        "order_id": lines["order_id"],
        "source_customer_id": clean_text(raw["会员卡号"]),
        "ordered_at": parse_timestamp(raw["交易时间"], "交易时间", errors, fmt="%Y/%m/%d %H:%M", tz=ctx.timezone),
        "amount": parse_number(raw["金额"], "金额", errors),
        "refund": clean_text(raw["交易类型"]) == "退货",
        "store_id": clean_text(raw["门店编号"]),
        "origin_order_id": platform_order,
        "_row": lines["_row"],
        "_errors": errors.column(),
    })
    header["amount_missing"] = header["amount"].isna()
    orders = header.groupby("order_id", sort=False, dropna=False).agg(
        source_customer_id=("source_customer_id", "first"),
        ordered_at=("ordered_at", "min"),
        amount=("amount", "sum"),
        amount_missing=("amount_missing", "any"),
        refund=("refund", "any"),
        store_id=("store_id", "first"),
        origin_order_id=("origin_order_id", "first"),
        _row=("_row", "min"),
    ).reset_index()
    # A receipt's amount is unknown if any of its lines' is; its problems are its lines' (each once).
    orders["amount"] = orders["amount"].mask(orders.pop("amount_missing"))
    problems = header.loc[header["_errors"].notna(), ["order_id", "_errors"]].drop_duplicates()
    joined = problems.groupby("order_id", sort=False, dropna=False)["_errors"].agg("; ".join)
    orders["_errors"] = orders["order_id"].map(joined) if len(joined) else None
    orders["status"] = orders.pop("refund").map({True: "refunded", False: "paid"})
    orders["currency"] = "CNY"
    orders["channel"] = "store"
    orders["origin_source"] = orders["origin_order_id"].where(orders["origin_order_id"].isna(), "marketplace")
    orders["source_record_id"] = orders["order_id"]
    return {"order": to_entity_table("order", orders), "order_line": line_table}


MEMBERS = connector_from_mapping(Path(__file__).resolve().parent)
CONNECTOR = replace(
    MEMBERS,
    streams=MEMBERS.streams + (Stream("order", key=("order_id",), cursor="ordered_at"),
                               Stream("order_line", key=("order_id", "line_no"))),
    files=MEMBERS.files + (FileReader("pos_transactions*.csv", read_pos, "csv", tuple(POS_COLUMNS),
                                      tuple(POS_REQUIRED), ("交易时间", "金额", "数量", "单价"),
                                      in_parts=True, group_by=("小票号",)),),
)

"""Offline stores: membership and POS exports, GBK-encoded CSV with Chinese headers, local time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sources.categories import canonical_category
from sources.sdk import (Connector, FileReader, ReadContext, RowErrors, Stream, clean_text, csv_row_numbers,
                         parse_date, parse_flag, parse_number, parse_timestamp, read_csv_text, require_columns,
                         to_entity_table)

ENCODING = "gbk"
MEMBER_COLUMNS = ["会员卡号", "姓名", "手机号", "性别", "生日", "省份", "城市", "入会时间", "短信订阅"]
POS_COLUMNS = ["小票号", "行号", "会员卡号", "手机号", "交易时间", "门店编号", "商品编码", "品类", "数量", "单价", "金额", "交易类型"]


def read_members(path: Path, ctx: ReadContext) -> dict:
    raw = read_csv_text(path, ENCODING)
    require_columns(path, raw, MEMBER_COLUMNS)
    errors = RowErrors(len(raw))
    frame = pd.DataFrame({
        "source_customer_id": clean_text(raw["会员卡号"]),
        "member_id": clean_text(raw["会员卡号"]),
        "name": clean_text(raw["姓名"]),
        "phone": clean_text(raw["手机号"]),
        "gender": clean_text(raw["性别"]).map({"男": "M", "女": "F"}),
        "birth_date": parse_date(raw["生日"], "生日", errors, fmt="%Y/%m/%d"),
        "province": clean_text(raw["省份"]),
        "city": clean_text(raw["城市"]),
        "registered_at": parse_timestamp(raw["入会时间"], "入会时间", errors, fmt="%Y-%m-%d %H:%M:%S",
                                         tz=ctx.timezone),
        "sms_opt_in": parse_flag(raw["短信订阅"], "短信订阅", errors, ["是"], ["否"]),
        "_row": csv_row_numbers(raw),
    })
    frame["updated_at"] = frame["registered_at"]
    frame["source_record_id"] = frame["source_customer_id"]
    extra = raw.drop(columns=MEMBER_COLUMNS)
    return {"customer_record": to_entity_table("customer_record", frame, errors, extra)}


def read_pos(path: Path, ctx: ReadContext) -> dict:
    """POS rows are order lines; an order (receipt) is the group of lines with one 小票号."""
    raw = read_csv_text(path, ENCODING)
    require_columns(path, raw, POS_COLUMNS)
    errors = RowErrors(len(raw))
    lines = pd.DataFrame({
        "order_id": clean_text(raw["小票号"]),
        "line_no": parse_number(raw["行号"], "行号", errors),
        "sku": clean_text(raw["商品编码"]),
        "category": canonical_category(raw["品类"]),
        "quantity": parse_number(raw["数量"], "数量", errors),
        "unit_price": parse_number(raw["单价"], "单价", errors),
        "_row": csv_row_numbers(raw),
    })
    lines["source_record_id"] = lines["order_id"] + "#" + raw["行号"].astype("string")
    line_table = to_entity_table("order_line", lines.assign(line_no=lines["line_no"].astype("Int32")), errors)

    header = pd.DataFrame({
        "order_id": lines["order_id"],
        "source_customer_id": clean_text(raw["会员卡号"]),
        "ordered_at": parse_timestamp(raw["交易时间"], "交易时间", errors, fmt="%Y/%m/%d %H:%M", tz=ctx.timezone),
        "amount": parse_number(raw["金额"], "金额", errors),
        "refund": clean_text(raw["交易类型"]) == "退货",
        "store_id": clean_text(raw["门店编号"]),
        "_row": lines["_row"],
        "_errors": errors.column(),
    })
    orders = header.groupby("order_id", sort=False, dropna=False).agg(
        source_customer_id=("source_customer_id", "first"),
        ordered_at=("ordered_at", "min"),
        amount=("amount", lambda a: a.sum(min_count=len(a))),
        refund=("refund", "any"),
        store_id=("store_id", "first"),
        _row=("_row", "min"),
        _errors=("_errors", lambda e: "; ".join(dict.fromkeys(x for x in e if isinstance(x, str))) or None),
    ).reset_index()
    orders["status"] = orders.pop("refund").map({True: "refunded", False: "paid"})
    orders["currency"] = "CNY"
    orders["channel"] = "store"
    orders["source_record_id"] = orders["order_id"]
    return {"order": to_entity_table("order", orders), "order_line": line_table}


CONNECTOR = Connector(
    name="store",
    description="Offline stores: members and POS receipts (GBK CSV, Chinese headers, local time).",
    streams=(
        Stream("customer_record", key=("source_customer_id",), cursor="updated_at"),
        Stream("order", key=("order_id",), cursor="ordered_at"),
        Stream("order_line", key=("order_id", "line_no")),
    ),
    files=(
        FileReader("members*.csv", read_members),
        FileReader("pos_transactions*.csv", read_pos),
    ),
    encoding=ENCODING,
)

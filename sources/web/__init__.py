"""Web shop exports: registrations, click events and online orders as JSON Lines (UTC)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sources.errors import SourceError
from sources.sdk import (Connector, FileReader, ReadContext, RowErrors, Stream, clean_text, enforce_contract,
                         parse_date, parse_flag, parse_number, parse_timestamp, read_export, to_entity_table)


def _load(path: Path, ctx: ReadContext, columns: list[str], required: tuple[str, ...],
          nested_in_arrow: bool = False) -> tuple[pd.DataFrame, RowErrors]:
    """JSON Lines as a frame; keys other than ``columns`` are new fields under the contract."""
    frame, errors = read_export(path, "jsonl", "utf-8", ctx.part, nested_in_arrow)
    if frame.empty:
        raise SourceError(path, "the file holds no records", fix="re-deliver the export")
    # A JSON line may simply omit a NULL field: only a field absent from every line is missing.
    return enforce_contract(path, frame, columns, required, ctx.contract, errors), errors


USER_FIELDS = ["user_id", "email", "mobile", "real_name", "member_card", "nickname", "gender", "birthday",
               "province", "city", "registered_at", "email_opt_in", "updated_at"]
EVENT_FIELDS = ["event_id", "user_id", "anonymous_id", "type", "ts", "session_id"]
ORDER_FIELDS = ["order_id", "user_id", "created_at", "total", "currency", "status", "items"]
USER_REQUIRED, EVENT_REQUIRED, ORDER_REQUIRED = ("user_id",), ("event_id", "ts"), ("order_id", "created_at", "total")


def read_users(path: Path, ctx: ReadContext) -> dict:
    raw, errors = _load(path, ctx, USER_FIELDS, USER_REQUIRED)
    frame = pd.DataFrame({
        "source_customer_id": clean_text(raw["user_id"]),
        "email": raw["email"],  # kept raw; staging normalises and keeps both
        "phone": clean_text(raw["mobile"]),
        "name": clean_text(raw["real_name"]),
        "gender": clean_text(raw["gender"]),
        "birth_date": parse_date(raw["birthday"], "birthday", errors),
        "province": clean_text(raw["province"]),
        "city": clean_text(raw["city"]),
        "registered_at": parse_timestamp(raw["registered_at"], "registered_at", errors),
        "member_id": clean_text(raw["member_card"]),
        "email_opt_in": parse_flag(raw["email_opt_in"].astype("string"), "email_opt_in", errors,
                                   ["true", "1"], ["false", "0"]),
        "updated_at": parse_timestamp(raw["updated_at"], "updated_at", errors),
        "_row": raw["_row"],
    })
    frame["source_record_id"] = frame["source_customer_id"]
    extra = raw.drop(columns=[c for c in USER_FIELDS if c != "nickname"] + ["_row"])
    return {"customer_record": to_entity_table("customer_record", frame, errors, extra)}


def read_events(path: Path, ctx: ReadContext) -> dict:
    raw, errors = _load(path, ctx, EVENT_FIELDS, EVENT_REQUIRED)
    frame = pd.DataFrame({
        "event_id": clean_text(raw["event_id"]),
        "source_customer_id": clean_text(raw["user_id"]),
        "anonymous_id": clean_text(raw["anonymous_id"]),
        "event_type": clean_text(raw["type"]),
        "occurred_at": parse_timestamp(raw["ts"], "ts", errors),
        "session_id": clean_text(raw["session_id"]),
        "_row": raw["_row"],
    })
    frame["source_record_id"] = frame["event_id"]
    return {"event": to_entity_table("event", frame, errors, raw.drop(columns=[*EVENT_FIELDS, "_row"]))}


ITEM_FIELDS = ("sku", "category", "qty", "price")


def _order_items(items: pd.Series) -> tuple[np.ndarray, dict[str, pd.Series]]:
    """Every item of every order: the position of its order, and its fields (NULL where the item
    lacks one), indexed 0..n-1.  An item that is not an object is skipped.  Arrow's lists of objects (a file
    Arrow read) are flattened by Arrow; Python's (a file read line by line) by pandas."""
    kind = items.dtype.pyarrow_dtype if isinstance(items.dtype, pd.ArrowDtype) else None
    if kind is not None and pa.types.is_list(kind) and pa.types.is_struct(kind.value_type):
        lists = pa.array(items)
        flat, order_of_item = pc.list_flatten(lists), pc.list_parent_indices(lists)
        present = flat.is_valid()
        flat, order_of_item = flat.filter(present), order_of_item.filter(present).to_numpy()
        found = {f.name: pc.struct_field(flat, f.name).to_pandas() for f in kind.value_type if f.name in ITEM_FIELDS}
    else:
        exploded = items.astype("object").reset_index(drop=True).explode().dropna()
        exploded = exploded.loc[exploded.map(lambda v: isinstance(v, dict)).astype(bool)]
        detail, order_of_item = pd.DataFrame(exploded.tolist()), exploded.index.to_numpy()
        found = {f: detail[f] for f in ITEM_FIELDS if f in detail.columns}
    missing = pd.Series([None] * len(order_of_item), dtype="object")
    return order_of_item, {f: found.get(f, missing) for f in ITEM_FIELDS}


def read_orders(path: Path, ctx: ReadContext) -> dict:
    raw, errors = _load(path, ctx, ORDER_FIELDS, ORDER_REQUIRED, nested_in_arrow=True)
    orders = pd.DataFrame({
        "order_id": clean_text(raw["order_id"]),
        "source_customer_id": clean_text(raw["user_id"]),
        "ordered_at": parse_timestamp(raw["created_at"], "created_at", errors),
        "amount": parse_number(raw["total"], "total", errors),
        "currency": clean_text(raw["currency"]),
        "status": clean_text(raw["status"]),
        "channel": "web",
        "_row": raw["_row"],
    })
    orders["source_record_id"] = orders["order_id"]
    order_of_item, detail = _order_items(raw["items"])
    line_errors = RowErrors(len(order_of_item))
    # Text stays in Arrow (Series.take, no .to_numpy()): a NumPy array of Python strings per
    # column, made and turned back into Arrow, was a quarter of reading a part of the orders.
    lines = pd.DataFrame({
        "order_id": orders["order_id"].take(order_of_item).reset_index(drop=True),
        "line_no": pd.Series(order_of_item).groupby(order_of_item).cumcount().to_numpy() + 1,
        "sku": clean_text(detail["sku"]),
        "category": clean_text(detail["category"]),
        "_row": raw["_row"].to_numpy()[order_of_item],
    })
    lines["quantity"] = parse_number(detail["qty"], "qty", line_errors)
    lines["unit_price"] = parse_number(detail["price"], "price", line_errors)
    lines["source_record_id"] = lines["order_id"] + "#" + lines["line_no"].astype(str)
    return {"order": to_entity_table("order", orders, errors, raw.drop(columns=[*ORDER_FIELDS, "_row"])),
            "order_line": to_entity_table("order_line", lines, line_errors)}


CONNECTOR = Connector(
    name="web",
    description="Web shop: registrations, click events and online orders (JSON Lines, UTC timestamps).",
    streams=(
        Stream("customer_record", key=("source_customer_id",), cursor="updated_at"),
        Stream("event", key=("event_id",), cursor="occurred_at"),
        Stream("order", key=("order_id",), cursor="ordered_at"),
        Stream("order_line", key=("order_id", "line_no")),
    ),
    files=(
        FileReader("users*.jsonl", read_users, "jsonl", tuple(USER_FIELDS), USER_REQUIRED,
                   ("birthday", "registered_at", "updated_at"), in_parts=True),
        FileReader("events*.jsonl", read_events, "jsonl", tuple(EVENT_FIELDS), EVENT_REQUIRED, ("ts",), in_parts=True),
        FileReader("orders*.jsonl", read_orders, "jsonl", tuple(ORDER_FIELDS), ORDER_REQUIRED, ("created_at", "total"),
                   in_parts=True),
    ),
)

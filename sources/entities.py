"""The canonical entities: the contract between sources/ and warehouse/ (DESIGN.md).

A connector emits any subset of these.  Column names are fixed; anything else a source
knows goes into the JSON ``attributes`` column.  Every record also carries
``source_record_id`` (unique per source and entity), ``_row`` (1-based row or line number
in the file) and ``_errors`` (parse problems, NULL when the row parsed cleanly); the land
stage adds ``source`` and ``_file``.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

COMMON = [
    ("source_record_id", pa.string()),
    ("_row", pa.int64()),
    ("_errors", pa.string()),
    ("attributes", pa.string()),
]

ENTITIES: dict[str, pa.Schema] = {
    "customer_record": pa.schema(
        [
            ("source_customer_id", pa.string()),
            ("email", pa.string()),
            ("phone", pa.string()),
            ("name", pa.string()),
            ("gender", pa.string()),
            ("birth_date", pa.date32()),
            ("province", pa.string()),
            ("city", pa.string()),
            ("registered_at", TIMESTAMP),
            ("member_id", pa.string()),
            ("email_opt_in", pa.bool_()),
            ("sms_opt_in", pa.bool_()),
            ("updated_at", TIMESTAMP),
            *COMMON,
        ]
    ),
    "order": pa.schema(
        [
            ("order_id", pa.string()),
            ("source_customer_id", pa.string()),
            ("ordered_at", TIMESTAMP),
            ("amount", pa.float64()),
            ("currency", pa.string()),
            ("status", pa.string()),
            ("channel", pa.string()),
            ("store_id", pa.string()),
            # Set when this source re-records an order placed in another source (a marketplace
            # order picked up in a store): that source and its order id.  Staging keeps one.
            ("origin_source", pa.string()),
            ("origin_order_id", pa.string()),
            *COMMON,
        ]
    ),
    "order_line": pa.schema(
        [
            ("order_id", pa.string()),
            ("line_no", pa.int32()),
            ("sku", pa.string()),
            ("category", pa.string()),
            ("quantity", pa.float64()),
            ("unit_price", pa.float64()),
            *COMMON,
        ]
    ),
    "event": pa.schema(
        [
            ("event_id", pa.string()),
            ("source_customer_id", pa.string()),
            ("anonymous_id", pa.string()),
            ("event_type", pa.string()),
            ("occurred_at", TIMESTAMP),
            ("session_id", pa.string()),
            *COMMON,
        ]
    ),
    "interaction": pa.schema(
        [
            ("interaction_id", pa.string()),
            ("source_customer_id", pa.string()),
            ("channel", pa.string()),
            ("kind", pa.string()),
            ("occurred_at", TIMESTAMP),
            ("rating", pa.float64()),
            ("text", pa.string()),
            *COMMON,
        ]
    ),
}

ORDER_STATUSES = ("paid", "refunded", "cancelled")
ORDER_CHANNELS = ("web", "store", "marketplace")
EVENT_TYPES = ("page_view", "search", "add_to_cart", "login")
INTERACTION_CHANNELS = ("phone", "chat", "email", "store")
INTERACTION_KINDS = ("complaint", "inquiry", "feedback", "return")

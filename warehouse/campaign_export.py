"""``tagwright export``: the customers holding one tag value, as CSV for campaign tools.

Reads the published warehouse (read-only) and writes one UTF-8 CSV (with BOM, so spreadsheet
programs read the Chinese text) under ``exports/campaigns/``: customer id, the tag's value
and score, consent, and pseudonymised and masked contacts; raw PII never leaves the pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from warehouse import dialect
from warehouse.errors import StageError
from warehouse.settings import Settings


@dataclass
class ExportResult:
    path: Path
    rows: int
    as_of: str


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text, flags=re.UNICODE).strip("_") or "value"


def export_tag_value(settings: Settings, tag: str, value: str, out: Path | None = None) -> ExportResult:
    if not settings.warehouse.exists():
        raise StageError("export", f"no warehouse at {settings.warehouse}", "run `tagwright run` first")
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        as_of = con.execute("SELECT max(as_of) FROM analytics.customer_tags").fetchone()[0]
        values = [r[0] for r in con.execute("SELECT DISTINCT value FROM analytics.customer_tags WHERE tag = ?"
                                            " ORDER BY 1", [tag]).fetchall()]
        if not values:
            tags = ", ".join(r[0] for r in con.execute("SELECT DISTINCT tag FROM analytics.customer_tags ORDER BY 1"
                                                       ).fetchall())
            raise StageError("export", f"no customer holds tag {tag!r} on {as_of}", f"use one of: {tags}")
        if value not in values:
            shown = ", ".join(values[:30]) + (" ..." if len(values) > 30 else "")
            raise StageError("export", f"no customer holds {tag} = {value!r} on {as_of}", f"use one of: {shown}")
        path = out or settings.exports / "campaigns" / f"{_slug(tag)}={_slug(value)}" / f"customers_{as_of}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        query = """SELECT t.customer_id, t.tag, t.value, t.score, t.as_of, c.email_opt_in, c.sms_opt_in,
                          c.email_pseudonym, c.email_masked, c.phone_pseudonym, c.phone_masked
                   FROM analytics.customer_tags t LEFT JOIN analytics.customers c USING (customer_id)
                   WHERE t.tag = $tag AND t.value = $value ORDER BY t.customer_id"""
        rows = con.execute(f"COPY ({query}) TO {dialect.quote(str(path))} (HEADER, DELIMITER ',')",
                           {"tag": tag, "value": value}).fetchall()[0][0]  # COPY returns the rows written
    data = path.read_bytes()
    path.write_bytes(b"\xef\xbb\xbf" + data)
    return ExportResult(path=path, rows=rows, as_of=str(as_of))

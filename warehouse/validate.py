"""Validate: Great Expectations suites per entity on each landed batch; bad rows to quarantine.

The suites are the committed GX file context's ``<entity>_rows`` (warehouse/gx, see
warehouse/quality.py): required values, value sets, ranges, email shape, no future or
implausible dates, unique keys within the batch.  Each batch gets a synthetic ``_rid`` so
rows with duplicated business keys stay
distinguishable.  Rows failing a row-level expectation go to ``ops.quarantine`` (one row per
failed expectation, with the offending value); the rest are written to the validated lake.
A batch whose bad-row share exceeds ``max_bad_share`` is rejected whole, every row
quarantined with that reason.  For every batch: rows_in = rows_loaded + rows_quarantined.
Data Docs of every run are built in ``<data dir>/restricted/gx/uncommitted/data_docs``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from warehouse.errors import StageError
from warehouse.faults import failpoint
from warehouse.quality import QualityContext, expectation_columns
from warehouse.settings import Settings


# Expectations on keys: a duplicate within one batch keeps its first row and sets the others aside.
UNIQUENESS = ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique")


@dataclass
class ValidateResult:
    batches: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rejected: list[str] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return self.rows_loaded


def _findings(results, frame: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """Validation rows and quarantine findings (one per failing row and expectation)."""
    validations, findings = [], []
    for r in results.results:
        columns = expectation_columns(r.expectation_config.kwargs)
        kind, column = r.expectation_config.type, ",".join(columns) or None
        validations.append({"expectation": kind, "column": column, "success": bool(r.success),
                            "element_count": r.result.get("element_count"),
                            "unexpected_count": r.result.get("unexpected_count")})
        items = r.result.get("unexpected_index_list") or []
        if kind in UNIQUENESS:
            items = _later_duplicates(items, columns)
        for item in items:
            values = [item[c] if c in item else frame.at[int(item["_rid"]), c] for c in columns]
            shown = [None if v is None or (not isinstance(v, (list, tuple)) and pd.isna(v)) else str(v) for v in values]
            findings.append({"_rid": int(item["_rid"]), "expectation": kind, "column": column,
                             "value": None if all(v is None for v in shown) else "|".join(str(v) for v in shown)})
    return validations, findings


def _later_duplicates(items: list[dict], columns: list[str]) -> list[dict]:
    """Of the rows sharing a key, all but the first (a duplicated key keeps one row)."""
    first: dict[tuple, int] = {}
    for item in items:
        key = tuple(str(item.get(c)) for c in columns)
        first[key] = min(first.get(key, item["_rid"]), item["_rid"])
    return [item for item in items if item["_rid"] != first[tuple(str(item.get(c)) for c in columns)]]


def _suite_columns(suite) -> list[str]:
    return list(dict.fromkeys(c for e in suite.expectations for c in expectation_columns(e.configuration.kwargs)))


def _reason(f: dict, entity: str) -> str:
    value = f["value"]
    if f["column"] == "_errors":
        return f"{value}; fix the value in the source export"
    return (f"{f['column']} = {value!r} fails {f['expectation']} for {entity}; "
            "correct the source row or extend the suite if the value is legitimate")


def _previous_delivery_rows(con: duckdb.DuckDBPyConnection, load: dict) -> int | None:
    """Rows of the last loaded delivery of the same file name and entity (None: first delivery)."""
    rows = con.execute("""SELECT rows_in FROM ops.loads WHERE source = ? AND file = ? AND entity = ? AND load_id < ?
                          AND status = 'validated' ORDER BY load_id DESC LIMIT 1""",
                       [load["source"], load["file"], load["entity"], load["load_id"]]).fetchall()
    return rows[0][0] if rows else None


def _erased_rows(con: duckdb.DuckDBPyConnection, table: pa.Table, source: str) -> list[dict]:
    """Rows of people erased with ``tagwright forget``: set aside (value withheld) when a source
    delivers them again; they do not count towards the file's bad-row share."""
    if "source_customer_id" not in table.column_names:
        return []
    con.register("batch_ids", table.select(["_rid", "source_customer_id"]))
    rows = con.execute("""SELECT b._rid, s.erasure_id FROM batch_ids b JOIN identity.suppressed s
                          ON s.source = ? AND s.source_customer_id = b.source_customer_id""", [source]).fetchall()
    con.unregister("batch_ids")
    return [{"_rid": rid, "expectation": "not_erased", "column": "source_customer_id", "value": None,
             "reason": f"the person was erased on request (erasure {erasure}, ops.erasures); the row is not loaded"}
            for rid, erasure in rows]


def _validate_batch(con: duckdb.DuckDBPyConnection, settings: Settings, run_id: str, quality: QualityContext,
                    load: dict, result: ValidateResult) -> None:
    table = pq.read_table(load["lake_path"])
    n = table.num_rows
    table = table.append_column("_rid", pa.array(range(n), pa.int64()))
    suite = quality.suite(f"{load['entity']}_rows")
    checked = [c for c in _suite_columns(suite) if c not in ("_rid", "_row", "source_record_id")]
    frame = table.select(["_rid", "_row", "source_record_id", *checked]).to_pandas()
    frame.index = frame["_rid"]
    previous = _previous_delivery_rows(con, load)
    min_rows = math.ceil(previous * settings.min_row_share) if previous else 0
    results = quality.validate(suite, f"{load['file']}/{load['entity']}", frame, "_rid", min_rows=min_rows)
    validations, findings = _findings(results, frame)
    bad_rids = sorted({f["_rid"] for f in findings})
    bad_share = len(bad_rids) / n if n else 0.0
    findings += _erased_rows(con, table, load["source"])
    bad_rids = sorted({f["_rid"] for f in findings})
    reason = None
    if n < min_rows:
        reason = (f"file rejected: {n} rows where its previous delivery under this name had {previous} "
                  f"(fewer than TAGWRIGHT_MIN_ROW_SHARE={settings.min_row_share:g} of them: a truncated export?); "
                  "deliver the complete export, or raise the share if the drop is real")
        gate = "batch_row_count_collapse"
    elif n and bad_share > settings.max_bad_share:
        reason = (f"file rejected: {bad_share:.0%} of its rows fail validation (threshold "
                  f"{settings.max_bad_share:.0%}); fix the export and deliver it again")
        gate = "batch_bad_share"
    if reason:
        findings = findings + [{"_rid": rid, "expectation": gate, "column": None, "value": None,
                                "reason": reason} for rid in range(n)]
        bad_rids = list(range(n))
        status = "rejected"
        result.rejected.append(f"{load['source']}/{load['file']} ({load['entity']}): {reason}")
    else:
        status = "validated"
    if findings:
        q = pd.DataFrame(findings)
        q["reason"] = [f.get("reason") or _reason(f, load["entity"]) for f in findings]
        q["row"] = frame.loc[q["_rid"], "_row"].to_numpy()
        q["source_record_id"] = frame.loc[q["_rid"], "source_record_id"].to_numpy()
        con.register("quarantined_rows", q)
        con.execute(
            "INSERT INTO ops.quarantine SELECT ?, ?, ?, ?, ?, \"row\", source_record_id, expectation,"
            " \"column\", value, reason FROM quarantined_rows", [run_id, load["load_id"], load["source"],
                                                                  load["file"], load["entity"]])
        con.unregister("quarantined_rows")
    con.register("validation_rows", pd.DataFrame(validations))
    con.execute("INSERT INTO ops.validations SELECT ?, ?, ?, ?, ?, expectation, \"column\", success,"
                " element_count, unexpected_count FROM validation_rows",
                [run_id, load["load_id"], load["source"], load["entity"], suite.name])
    con.unregister("validation_rows")
    keep = pc.invert(pc.is_in(table["_rid"], pa.array(bad_rids, pa.int64())))
    valid = table.filter(keep).drop_columns(["_rid"])
    valid_path = Path(str(load["lake_path"]).replace(f"{os.sep}raw{os.sep}", f"{os.sep}valid{os.sep}", 1))
    valid_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(valid, valid_path)
    failpoint("validate")
    con.execute("UPDATE ops.loads SET status = ?, rows_loaded = ?, rows_quarantined = ? WHERE load_id = ?",
                [status, valid.num_rows, len(bad_rids), load["load_id"]])
    result.batches += 1
    result.rows_loaded += valid.num_rows
    result.rows_quarantined += len(bad_rids)


def validate(con: duckdb.DuckDBPyConnection, settings: Settings, run_id: str) -> ValidateResult:
    """Validate every landed batch not yet validated (also those a killed run left behind)."""
    result = ValidateResult()
    pending = con.execute("SELECT load_id, source, file, entity, lake_path FROM ops.loads"
                          " WHERE status = 'landed' ORDER BY load_id").fetchdf().to_dict("records")
    if not pending:
        return result
    quality = QualityContext(settings, run_id)
    for load in pending:
        con.execute("BEGIN")
        _validate_batch(con, settings, run_id, quality, load, result)
        con.execute("COMMIT")
    quality.build_docs()
    unbalanced = con.execute("SELECT file, entity, rows_in, rows_loaded, rows_quarantined FROM ops.loads"
                             " WHERE status IN ('validated', 'rejected')"
                             " AND rows_in <> rows_loaded + rows_quarantined").fetchall()
    if unbalanced:
        raise StageError("validate", f"row accounting broken (rows_in != loaded + quarantined): {unbalanced}",
                         "this is a bug in tagwright; report it with the files named")
    return result


def quality_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict]:
    """Per file and entity landed by the run: status and row accounting, with the top reason."""
    return con.execute("""
        SELECT l.source, l.file, l.entity, l.status, l.rows_in, l.rows_loaded, l.rows_quarantined,
               coalesce(l.message, (SELECT mode(q.reason) FROM ops.quarantine q WHERE q.load_id = l.load_id))
                   AS top_reason
        FROM ops.loads l WHERE l.run_id = ? ORDER BY l.load_id""", [run_id]).fetchdf().to_dict("records")

"""Validate: Great Expectations suites per entity on each landed batch; bad rows to quarantine.

GX runs through its pandas data source (its SQL source over DuckDB returns no rows, see
DESIGN.md).  Each batch gets a synthetic ``_rid`` so rows with duplicated business keys stay
distinguishable.  Rows failing a row-level expectation go to ``ops.quarantine`` (one row per
failed expectation, with the offending value); the rest are written to the validated lake.
A batch whose bad-row share exceeds ``max_bad_share`` is rejected whole, every row
quarantined with that reason.  For every batch: rows_in = rows_loaded + rows_quarantined.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sources.entities import (EVENT_TYPES, INTERACTION_CHANNELS, INTERACTION_KINDS, ORDER_CHANNELS,
                               ORDER_STATUSES)
from warehouse.errors import StageError
from warehouse.faults import failpoint
from warehouse.settings import Settings

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
import great_expectations as gx  # noqa: E402  (the variable above must be set first)
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

log = logging.getLogger(__name__)

EMAIL_SHAPE = r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$"

# Row-level expectations per entity: (expectation class name, kwargs).
SUITES: dict[str, list[tuple[str, dict]]] = {
    "customer_record": [
        ("ExpectColumnValuesToNotBeNull", {"column": "source_customer_id"}),
        ("ExpectColumnValuesToBeNull", {"column": "_errors"}),
        ("ExpectColumnValuesToMatchRegex", {"column": "email", "regex": EMAIL_SHAPE}),
        ("ExpectColumnValuesToBeInSet", {"column": "gender", "value_set": ["M", "F"]}),
    ],
    "order": [
        ("ExpectColumnValuesToNotBeNull", {"column": "order_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "ordered_at"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "amount"}),
        ("ExpectColumnValuesToBeNull", {"column": "_errors"}),
        ("ExpectColumnValuesToBeBetween", {"column": "amount", "min_value": 0, "max_value": 10_000_000}),
        ("ExpectColumnValuesToBeInSet", {"column": "status", "value_set": list(ORDER_STATUSES)}),
        ("ExpectColumnValuesToBeInSet", {"column": "channel", "value_set": list(ORDER_CHANNELS)}),
        ("ExpectColumnValuesToBeInSet", {"column": "currency", "value_set": ["CNY", "HKD", "USD"]}),
    ],
    "order_line": [
        ("ExpectColumnValuesToNotBeNull", {"column": "order_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "line_no"}),
        ("ExpectColumnValuesToBeNull", {"column": "_errors"}),
        ("ExpectColumnValuesToBeBetween", {"column": "quantity", "min_value": 0}),
    ],
    "event": [
        ("ExpectColumnValuesToNotBeNull", {"column": "event_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "occurred_at"}),
        ("ExpectColumnValuesToBeNull", {"column": "_errors"}),
        ("ExpectColumnValuesToBeInSet", {"column": "event_type", "value_set": list(EVENT_TYPES)}),
    ],
    "interaction": [
        ("ExpectColumnValuesToNotBeNull", {"column": "interaction_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "occurred_at"}),
        ("ExpectColumnValuesToBeNull", {"column": "_errors"}),
        ("ExpectColumnValuesToBeInSet", {"column": "channel", "value_set": list(INTERACTION_CHANNELS)}),
        ("ExpectColumnValuesToBeInSet", {"column": "kind", "value_set": list(INTERACTION_KINDS)}),
        ("ExpectColumnValuesToBeBetween", {"column": "rating", "min_value": 0, "max_value": 5}),
    ],
}


@dataclass
class ValidateResult:
    batches: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rejected: list[str] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return self.rows_loaded


class _Validator:
    """One ephemeral GX context with a suite per entity, reused for every batch of a run."""

    def __init__(self) -> None:
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self.context.data_sources.add_pandas("landed").add_dataframe_asset("batch")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self.suites = {}
        for entity, expectations in SUITES.items():
            suite = gx.ExpectationSuite(name=f"{entity}_rows")
            for class_name, kwargs in expectations:
                suite.add_expectation(getattr(gx.expectations, class_name)(**kwargs))
            self.suites[entity] = self.context.suites.add(suite)

    def run(self, entity: str, frame: pd.DataFrame):
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(self.suites[entity], result_format={
            "result_format": "COMPLETE", "unexpected_index_column_names": ["_rid"]})


def _findings(results, frame: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """Validation rows and quarantine findings (one per failing row and expectation)."""
    validations, findings = [], []
    for r in results.results:
        kind, column = r.expectation_config.type, r.expectation_config.kwargs.get("column")
        validations.append({"expectation": kind, "column": column, "success": bool(r.success),
                            "element_count": r.result.get("element_count"),
                            "unexpected_count": r.result.get("unexpected_count")})
        for item in r.result.get("unexpected_index_list") or []:
            rid = int(item["_rid"])
            value = frame.at[rid, column] if column else None
            findings.append({"_rid": rid, "expectation": kind, "column": column,
                             "value": None if pd.isna(value) else str(value)})
    return validations, findings


def _reason(f: dict, entity: str) -> str:
    value = f["value"]
    if f["column"] == "_errors":
        return f"{value}; fix the value in the source export"
    return (f"{f['column']} = {value!r} fails {f['expectation']} for {entity}; "
            "correct the source row or extend the suite if the value is legitimate")


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


def _validate_batch(con: duckdb.DuckDBPyConnection, settings: Settings, run_id: str, validator: _Validator,
                    load: dict, result: ValidateResult) -> None:
    table = pq.read_table(load["lake_path"])
    n = table.num_rows
    table = table.append_column("_rid", pa.array(range(n), pa.int64()))
    checked = dict.fromkeys(k["column"] for _, k in SUITES[load["entity"]])
    frame = table.select(["_rid", "_row", "source_record_id", *checked]).to_pandas()
    frame.index = frame["_rid"]
    validations, findings = _findings(validator.run(load["entity"], frame), frame)
    bad_rids = sorted({f["_rid"] for f in findings})
    bad_share = len(bad_rids) / n if n else 0.0
    findings += _erased_rows(con, table, load["source"])
    bad_rids = sorted({f["_rid"] for f in findings})
    if n and bad_share > settings.max_bad_share:
        reason = (f"file rejected: {bad_share:.0%} of its rows fail validation (threshold "
                  f"{settings.max_bad_share:.0%}); fix the export and deliver it again")
        findings = findings + [{"_rid": rid, "expectation": "batch_bad_share", "column": None, "value": None,
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
                [run_id, load["load_id"], load["source"], load["entity"], f"{load['entity']}_rows"])
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
    validator = _Validator()
    for load in pending:
        con.execute("BEGIN")
        _validate_batch(con, settings, run_id, validator, load, result)
        con.execute("COMMIT")
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

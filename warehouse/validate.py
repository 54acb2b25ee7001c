"""Validate: Great Expectations suites per entity on each landed batch; bad rows to quarantine.

The suites are the committed GX file context's ``<entity>_rows`` (warehouse/gx, see
warehouse/quality.py): required values, value sets, ranges, email shape, no future or
implausible dates, unique keys within the batch.  Each row is known by ``_rid``, its position
in the raw Parquet (DuckDB's ``file_row_number``), so rows with duplicated business keys stay
distinguishable.  A batch larger than ``validate_slice_rows`` is given to GX one slice at a
time (memory stays bounded; each slice is read while GX checks the one before it), its keys
checked in SQL over the whole batch by DuckDB beside GX (GX would see one slice at a time).
GX is given only the columns its suite checks.  Rows failing a row-level expectation go to
``ops.quarantine`` (one row per failed expectation, with the offending value, line number and
source record id); the rest are written to the validated lake, on a thread while GX checks the
next batch.
A batch whose bad-row share exceeds ``max_bad_share`` is rejected whole, every row
quarantined with that reason.  For every batch: rows_in = rows_loaded + rows_quarantined.
Data Docs of every run are built in ``<data dir>/restricted/gx/uncommitted/data_docs``.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse import dialect
from warehouse.errors import StageError
from warehouse.faults import failpoint
from warehouse.quality import (UNIQUENESS, QualityContext, expectation_columns, key_expectations, key_summary,
                               merge_summaries, summary)
from warehouse.settings import Settings


VALIDATION_COLUMNS = ["expectation", "column", "success", "element_count", "unexpected_count"]


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
    """Validation rows and quarantine findings: one per failing row and expectation, with the
    row's ``_rid`` and values; :func:`_locate` adds its line number and source record id."""
    validations, findings = [], []
    for r in results.results:
        validations.append(summary(r))
        kind, column = validations[-1]["expectation"], validations[-1]["column"]
        columns = expectation_columns(r.expectation_config.kwargs)
        items = r.result.get("unexpected_index_list") or []
        if kind in UNIQUENESS:
            items = _later_duplicates(items, columns)
        rids = [int(item["_rid"]) for item in items]
        failing = frame.loc[rids, columns]  # one lookup
        failing = {c: failing[c].tolist() for c in failing.columns}
        for i, (rid, item) in enumerate(zip(rids, items)):
            values = [item[c] if c in item else failing[c][i] for c in columns]
            shown = [None if v is None or (not isinstance(v, (list, tuple)) and pd.isna(v)) else str(v) for v in values]
            findings.append({"_rid": rid, "expectation": kind, "column": column,
                             "value": None if all(v is None for v in shown) else "|".join(str(v) for v in shown)})
    return validations, findings


def _locate(raw: pq.ParquetFile, findings: list[dict]) -> None:
    """Add each finding's line number (``_row``) and ``source_record_id``, read from the row
    groups of the landed file that hold failing rows.  GX is given only the columns it checks:
    the two columns read and converted for every row took 1.5 of every 2 s spent reading the
    slices of the web events."""
    if not findings:
        return
    starts = list(itertools.accumulate((raw.metadata.row_group(i).num_rows for i in range(raw.num_row_groups)),
                                       initial=0))
    groups = sorted({bisect.bisect_right(starts, f["_rid"]) - 1 for f in findings})
    rids_read = np.concatenate([np.arange(starts[g], starts[g + 1]) for g in groups])
    found = raw.read_row_groups(groups, columns=["_row", "source_record_id"]).take(
        np.searchsorted(rids_read, [f["_rid"] for f in findings])).to_pydict()
    for f, row, record_id in zip(findings, found["_row"], found["source_record_id"]):
        f["row"], f["source_record_id"] = row, record_id


def _later_duplicates(items: list[dict], columns: list[str]) -> list[dict]:
    """Of the rows sharing a key, all but the first (a duplicated key keeps one row)."""
    first: dict[tuple, int] = {}
    for item in items:
        key = tuple(str(item.get(c)) for c in columns)
        first[key] = min(first.get(key, item["_rid"]), item["_rid"])
    return [item for item in items if item["_rid"] != first[tuple(str(item.get(c)) for c in columns)]]


def _repeated_key_rows(con: duckdb.DuckDBPyConnection, raw: str, expectation) -> list[dict]:
    """The rows of the batch whose key (every part present) an earlier row already has: the
    findings of a uniqueness expectation checked over the whole batch in SQL."""
    kind, columns = expectation.configuration.type, expectation_columns(expectation.configuration.kwargs)
    keys, present, shown = dialect.key_sql(columns)
    rows = f"read_parquet({dialect.quote(raw)}, file_row_number = true)"
    return [{"_rid": rid, "expectation": kind, "column": ",".join(columns), "value": value, "row": row,
             "source_record_id": record_id}
            for rid, row, record_id, value in con.execute(f"""
                WITH repeated AS (SELECT {keys} FROM {rows} WHERE {present} GROUP BY ALL HAVING count(*) > 1)
                SELECT _rid, _row, source_record_id, {shown} FROM (
                    SELECT file_row_number AS _rid, _row, source_record_id, {keys},
                           min(file_row_number) OVER (PARTITION BY {keys}) AS first_rid
                    FROM {rows} SEMI JOIN repeated USING ({keys}))
                WHERE _rid > first_rid ORDER BY _rid""").fetchall()]


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


def _erased_rows(con: duckdb.DuckDBPyConnection, raw: str, source: str) -> list[dict]:
    """Rows of people erased with ``tagwright forget``: set aside (value withheld) when a source
    delivers them again; they do not count towards the file's bad-row share."""
    columns = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({dialect.quote(raw)})").fetchall()}
    if "source_customer_id" in columns:
        column, suppressed = "source_customer_id", "identity.suppressed"
    elif "order_id" in columns:  # order lines name no customer: by their orders' ids
        column, suppressed = "order_id", "identity.suppressed_orders"
    else:
        return []
    rows = con.execute(f"""SELECT b.file_row_number, b._row, b.source_record_id, s.erasure_id
                           FROM read_parquet({dialect.quote(raw)}, file_row_number = true) b
                           JOIN {suppressed} s ON s.source = ? AND s.{column} = b.{column}""",
                       [source]).fetchall()
    return [{"_rid": rid, "expectation": "not_erased", "column": column, "value": None,
             "row": row, "source_record_id": record_id,
             "reason": f"the person was erased on request (erasure {erasure}, ops.erasures); the row is not loaded"}
            for rid, row, record_id, erasure in rows]


def _validate_slices(con: duckdb.DuckDBPyConnection, quality: QualityContext, load: dict, suite,
                     min_rows: int, slice_rows: int, erased: set[int]) -> tuple[int, list[dict], list[dict]]:
    """GX validation of the batch ``slice_rows`` rows at a time, so memory stays bounded
    however large the file: rows, validations, findings.  A batch of several slices has its
    keys checked in SQL over the whole batch instead (GX would see one slice at a time).  The
    ``erased`` rows (by ``_rid``) are left out of both: their values must not be quoted again."""
    n = pq.ParquetFile(load["lake_path"]).metadata.num_rows
    sliced = n > slice_rows
    keys = key_expectations(suite) if sliced else []
    with con.cursor() as checking, ThreadPoolExecutor(max_workers=1) as beside:
        # DuckDB checks the keys on the core GX leaves idle (GX works on one thread).
        checks = [beside.submit(_repeated_key_rows, checking, load["lake_path"], e) for e in keys]
        try:
            per_slice, findings = _validate_each_slice(quality, load, quality.per_slice(suite) if sliced else suite,
                                                       n, min_rows, slice_rows, erased)
        except BaseException:
            checking.interrupt()  # the failure goes on now, not when the key check is done
            raise
        repeated_per_key = [check.result() for check in checks]
    for expectation, found in zip(keys, repeated_per_key):
        repeated = [f for f in found if f["_rid"] not in erased]
        findings += repeated
        # GX counts every row of a repeated key; the first of each stays loaded.
        unexpected = len(repeated) + len({f["value"] for f in repeated})
        per_slice.append([key_summary(expectation, n, unexpected, [f["value"] for f in repeated])])
    validations = merge_summaries(per_slice)
    for v in validations:  # the row-count gate is about the whole batch
        if v["expectation"] == "expect_table_row_count_to_be_between":
            v["success"] = n >= min_rows
    return n, validations, findings


def _validate_each_slice(quality: QualityContext, load: dict, suite, n: int, min_rows: int,
                         slice_rows: int, erased: set[int]) -> tuple[list[list[dict]], list[dict]]:
    """Validations of each slice and findings; the Parquet reader and its buffers are gone
    when it returns (before the key check, which DuckDB runs on the whole file)."""
    raw = pq.ParquetFile(load["lake_path"])
    sliced = n > slice_rows
    columns = [c for c in _suite_columns(suite) if c != "_rid"] or ["_row"]
    batches = _read_ahead(raw.iter_batches(batch_size=slice_rows, columns=columns)) if n else \
        [raw.schema_arrow.empty_table().select(columns)]
    per_slice, findings, offset = [], [], 0
    batch = f"{load['file']}/{load['entity']}"
    for rows in batches:
        name = f"{batch} rows {offset + 1}-{offset + rows.num_rows}" if sliced else batch
        validations, found = _validate_slice(quality, suite, name, rows, offset, 0 if sliced else min_rows, erased)
        per_slice.append(validations)
        findings += found
        offset += rows.num_rows
    _locate(raw, findings)
    return per_slice, findings


def _read_ahead(slices: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The slices, each read on a thread while GX validates the one before it."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="next-slice") as reading:
        upcoming = reading.submit(next, slices, None)
        while (rows := upcoming.result()) is not None:
            upcoming = reading.submit(next, slices, None)
            yield rows


def _validate_slice(quality: QualityContext, suite, name: str, rows: pa.RecordBatch, offset: int,
                    min_rows: int, erased: set[int]) -> tuple[list[dict], list[dict]]:
    frame = rows.to_pandas()
    frame.insert(0, "_rid", range(offset, offset + len(frame)))
    frame.index = frame["_rid"]
    if erased:
        frame = frame.drop(index=[rid for rid in erased if offset <= rid < offset + len(frame)])
    results = quality.validate(suite, name, frame, "_rid", min_rows=min_rows)
    return _findings(results, frame)


@dataclass
class _CheckedBatch:
    """A landed batch once validated, before anything is recorded: what is quarantined and why."""

    load: dict
    suite: str
    rows: int
    validations: list[dict]
    findings: list[dict]
    bad_rids: pa.Table
    rejection: tuple[str, str] | None  # (gate, reason) when the batch is rejected whole

    @property
    def rows_quarantined(self) -> int:
        return self.rows if self.rejection else self.bad_rids.num_rows


def _check_batch(con: duckdb.DuckDBPyConnection, settings: Settings, quality: QualityContext,
                 load: dict) -> _CheckedBatch:
    """GX over the batch and the batch-level gates; reads only."""
    suite = quality.suite(f"{load['entity']}_rows")
    previous = _previous_delivery_rows(con, load)
    min_rows = math.ceil(previous * settings.min_row_share) if previous else 0
    erased = _erased_rows(con, load["lake_path"], load["source"])
    n, validations, findings = _validate_slices(con, quality, load, suite, min_rows, settings.validate_slice_rows,
                                                {f["_rid"] for f in erased})
    bad_share = len({f["_rid"] for f in findings}) / n if n else 0.0
    findings += erased
    rejection = None
    if n < min_rows:
        rejection = ("batch_row_count_collapse",
                     f"file rejected: {n} rows where its previous delivery under this name had {previous} "
                     f"(fewer than TAGWRIGHT_MIN_ROW_SHARE={settings.min_row_share:g} of them: a truncated "
                     "export?); deliver the complete export, or raise the share if the drop is real")
    elif n and bad_share > settings.max_bad_share:
        rejection = ("batch_bad_share",
                     f"file rejected: {bad_share:.0%} of its rows fail validation (threshold "
                     f"{settings.max_bad_share:.0%}); fix the export and deliver it again")
    bad_rids = pa.table({"_rid": pa.array(sorted({f["_rid"] for f in findings}), pa.int64())})
    return _CheckedBatch(load, suite.name, n, validations, findings, bad_rids, rejection)


def _raw_rows(load: dict) -> str:
    return f"read_parquet({dialect.quote(load['lake_path'])}, file_row_number = true)"


def _record_batch(con: duckdb.DuckDBPyConnection, run_id: str, batch: _CheckedBatch, result: ValidateResult) -> None:
    """The batch's quarantine, validations and status, in the open transaction."""
    load = batch.load
    keys = [run_id, load["load_id"], load["source"], load["file"], load["entity"]]
    if batch.findings:
        q = pd.DataFrame(batch.findings)
        q["reason"] = [f.get("reason") or _reason(f, load["entity"]) for f in batch.findings]
        con.register("quarantined_rows", q)
        con.execute("INSERT INTO ops.quarantine SELECT ?, ?, ?, ?, ?, \"row\", source_record_id, expectation,"
                    " \"column\", value, reason FROM quarantined_rows", keys)
        con.unregister("quarantined_rows")
    if batch.rejection:
        con.execute(f"INSERT INTO ops.quarantine SELECT ?, ?, ?, ?, ?, _row, source_record_id, ?, NULL, NULL, ?"
                    f" FROM {_raw_rows(load)} ORDER BY file_row_number", [*keys, *batch.rejection])
        result.rejected.append(f"{load['source']}/{load['file']} ({load['entity']}): {batch.rejection[1]}")
    con.register("validation_rows", pd.DataFrame(batch.validations, columns=VALIDATION_COLUMNS))
    con.execute("INSERT INTO ops.validations SELECT ?, ?, ?, ?, ?, expectation, \"column\", success,"
                " element_count, unexpected_count FROM validation_rows",
                [run_id, load["load_id"], load["source"], load["entity"], batch.suite])
    con.unregister("validation_rows")
    con.execute("UPDATE ops.loads SET status = ?, rows_loaded = ?, rows_quarantined = ? WHERE load_id = ?",
                ["rejected" if batch.rejection else "validated", batch.rows - batch.rows_quarantined,
                 batch.rows_quarantined, load["load_id"]])
    result.batches += 1
    result.rows_loaded += batch.rows - batch.rows_quarantined
    result.rows_quarantined += batch.rows_quarantined


def _write_valid_file(con: duckdb.DuckDBPyConnection, batch: _CheckedBatch) -> None:
    """The batch's rows that passed, in the validated lake: the landed file itself when all did."""
    raw = Path(batch.load["lake_path"])
    valid = Path(str(raw).replace(f"{os.sep}raw{os.sep}", f"{os.sep}valid{os.sep}", 1))
    valid.parent.mkdir(parents=True, exist_ok=True)
    if not batch.rejection and not batch.bad_rids.num_rows:
        _same_file(raw, valid)
        return
    con.register("bad_rids", batch.bad_rids)
    keep = "false" if batch.rejection else "file_row_number NOT IN (SELECT _rid FROM bad_rids)"
    con.execute(f"COPY (SELECT * EXCLUDE (file_row_number) FROM {_raw_rows(batch.load)} WHERE {keep})"
                f" TO {dialect.quote(str(valid))} (FORMAT parquet)")
    con.unregister("bad_rids")


def _same_file(raw: Path, valid: Path) -> None:
    """Every row of the batch is valid: the validated file is the landed one, hard-linked (copied
    where a link cannot be made), not written again.  Lake files are never written in place:
    land writes a new path (unlinking a stale one first) and erasure replaces a file whole."""
    valid.unlink(missing_ok=True)
    try:
        os.link(raw, valid)
    except OSError:
        shutil.copyfile(raw, valid)


def _validate_batches(con: duckdb.DuckDBPyConnection, settings: Settings, run_id: str, quality: QualityContext,
                      pending: list[dict], result: ValidateResult) -> None:
    """Each batch checked, then recorded in a transaction of its own.  A batch with bad rows has
    its validated file written without them (DuckDB reads and writes the whole file: 1.8 s for
    the 3.7M web order lines at 1M customers) on a thread while GX checks the next batch on its
    one; the batch commits once its file is written.  A failure checking the next batch still
    commits the batch before it (unless DuckDB failed on this connection, which aborts the open
    transaction: that batch then stays landed too, and the next run validates both); a failure
    writing a file leaves its batch landed."""
    with con.cursor() as writing, ThreadPoolExecutor(max_workers=1, thread_name_prefix="valid-file") as beside:
        unfinished: Future | None = None  # the file of the batch whose transaction is open
        try:
            for load in pending:
                checked = _check_batch(con, settings, quality, load)
                if unfinished is not None:
                    done, unfinished = unfinished, None
                    _commit_once_written(con, done)
                con.execute("BEGIN")
                _record_batch(con, run_id, checked, result)
                unfinished = beside.submit(_write_valid_file, writing, checked)
        except BaseException:
            if unfinished is not None:  # the batch before the failure is complete: it is kept
                with contextlib.suppress(Exception):
                    _commit_once_written(con, unfinished)
            raise
        if unfinished is not None:
            _commit_once_written(con, unfinished)


def _commit_once_written(con: duckdb.DuckDBPyConnection, writing: Future) -> None:
    try:
        writing.result()
    except BaseException:
        con.execute("ROLLBACK")  # nothing of the batch is recorded: it stays landed, for the next run
        raise
    failpoint("validate")
    con.execute("COMMIT")


def validate(con: duckdb.DuckDBPyConnection, settings: Settings, run_id: str) -> ValidateResult:
    """Validate every landed batch not yet validated (also those a killed run left behind)."""
    result = ValidateResult()
    pending = con.execute("SELECT load_id, source, file, entity, lake_path FROM ops.loads"
                          " WHERE status = 'landed' ORDER BY load_id").fetchdf().to_dict("records")
    if not pending:
        return result
    quality = QualityContext(settings, run_id)
    # GX holds a slice of a batch in pandas (about 1 GB at a million rows) beside DuckDB, which
    # gets half its limit here: at 1M customers validation peaked at 2,425 and 2,432 MiB, against
    # 2,817 to 3,289 with DuckDB's whole limit (its key check over the 23M events kept 1.5 GB,
    # and ran as fast in 1 GB).
    con.execute(f"SET memory_limit = {dialect.quote(dialect.memory_share(settings.memory_limit, 0.5))}")
    try:
        _validate_batches(con, settings, run_id, quality, pending, result)
    except Exception:
        # The batches validated before the failure get their Data Docs, to look into it; the
        # failure goes on unmasked whatever building them does (an interrupt goes on at once).
        with contextlib.suppress(Exception):
            quality.build_docs()
        raise
    finally:  # after a DuckDB error the transaction refuses it; that error goes on, unmasked
        with contextlib.suppress(duckdb.Error):
            con.execute(f"SET memory_limit = {dialect.quote(settings.memory_limit)}")
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

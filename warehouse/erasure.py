"""``tagwright forget``: erase people from every layer the pipeline keeps, and log it.

One command erases any number of customers in one pass: each layer is read and rewritten once
for all of them (at 1M customers one person took 54 s and twenty 48 s).  Under the run lock (no run
can interleave), for the customers' source records, derived copies first and the work file last
(a failed erasure is finished by running it again):

1. the lake (raw and validated Parquet) is rewritten without their rows: customer records,
   orders, order lines of those orders, events and interactions;
2. staging, identity (source ids, golden record, normalised-key cache entries of their raw
   phones and names), features, tags, overrides and quarantined rows (known by the record ids
   staged for them or by their rows in the raw lake) are deleted in the work file, and the Great
   Expectations results and Data Docs pages of the batches those rows were in (they quote
   failing values);
3. the published warehouse is copied, the customer deleted from every ``analytics`` table
   (order lines and order copies by their orders) and from ``ops.quarantine``, the copy's
   tables copied into a new file (without the deleted rows' bytes), and that swapped in
   atomically (readers see before or after);
4. the Parquet exports of every as_of and the campaign CSVs are rewritten without them;
5. their source ids and their orders' ids go on suppression lists, so a re-delivered export
   does not bring them back (validation sets such rows aside, value withheld, before Great
   Expectations or the key check sees them; order lines, which name no customer, by their
   order), and ``ops.erasures`` logs who asked, why, when and how many rows went, without any
   personal data.

The inbox holds the sources' own deliveries and is not changed: the command lists the inbox
files that still contain the person, to be re-exported or deleted at the source.  Until then a
full rebuild lands those files again into the raw lake (restricted), and validation keeps the
person's rows out of everything after it.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from warehouse import dialect
from warehouse.errors import StageError
from warehouse.runs import run_lock
from warehouse.settings import Settings
from warehouse.workdb import open_work_db

# The customers being erased, in every database the erasure writes (a temp table or a registered frame).
GONE_CUSTOMERS = "(SELECT customer_id FROM gone_customers)"
WORK_TABLES_BY_SOURCE_ID = ("stage.customer_records", "stage.order_versions", "stage.events", "stage.interactions")


@dataclass
class ErasureResult:
    erasures: list[tuple[int, str, int]]  # (erasure_id, customer_id, source records), one per person
    rows_removed: dict[str, int] = field(default_factory=dict)  # all of them together
    inbox_files: list[str] = field(default_factory=list)


def find_customer(settings: Settings, email: str) -> str:
    """The customer id whose golden or source record has this email (normalised)."""
    from warehouse.stage import EMAIL_KEY

    with run_lock(settings), closing(open_work_db(settings)) as con:
        key = con.execute(f"SELECT {EMAIL_KEY} FROM (SELECT ?::VARCHAR AS email)", [email]).fetchone()[0]
        found = con.execute("""SELECT DISTINCT m.customer_id FROM stage.customer_records r
                               JOIN identity.node_customer m USING (source, source_customer_id)
                               WHERE r.email_key = ?""", [key]).fetchall()
    if len(found) != 1:
        raise StageError("forget", f"{len(found)} customers have that email", "give the CUSTOMER_ID instead")
    return found[0][0]


def forget(settings: Settings, customer_ids: list[str], reason: str, requested_by: str) -> ErasureResult:
    """Erase the customers ``customer_ids`` together; each gets an erasure id of their own."""
    if not reason.strip() or not requested_by.strip():
        raise StageError("forget", "an erasure needs a reason and who requested it", "pass --reason and --requested-by")
    people = list(dict.fromkeys(customer_ids))
    if not people:
        raise StageError("forget", "no customer to erase", "give CUSTOMER_IDs, --email or --customers FILE")
    with run_lock(settings), closing(open_work_db(settings)) as con:
        first_id = con.execute("SELECT coalesce(max(erasure_id), 0) + 1 FROM ops.erasures").fetchone()[0]
        con.execute("CREATE OR REPLACE TEMP TABLE gone_customers (customer_id VARCHAR, erasure_id BIGINT)")
        con.executemany("INSERT INTO gone_customers VALUES (?, ?)",
                        [(customer, first_id + i) for i, customer in enumerate(people)])
        unknown = [r[0] for r in con.execute("""SELECT customer_id FROM gone_customers
                                                ANTI JOIN identity.node_customer USING (customer_id)
                                                ORDER BY erasure_id""").fetchall()]
        if unknown:
            raise StageError("forget", f"no customer {', '.join(map(repr, unknown[:5]))}"
                             f"{f' (and {len(unknown) - 5} more)' if len(unknown) > 5 else ''} in the work file",
                             "give customer_ids from analytics.customers")
        con.execute("""CREATE OR REPLACE TEMP TABLE gone AS
                       SELECT n.source, n.source_customer_id, g.erasure_id
                       FROM identity.node_customer n JOIN gone_customers g USING (customer_id)""")
        con.execute("""CREATE OR REPLACE TEMP TABLE gone_orders AS
                       SELECT DISTINCT o.source, o.order_id, g.erasure_id FROM stage.order_versions o
                       JOIN gone g USING (source, source_customer_id)""")
        con.execute("""CREATE OR REPLACE TEMP TABLE gone_records AS
                       SELECT source, source_customer_id AS record_id FROM gone
                       UNION SELECT source, order_id FROM gone_orders
                       UNION SELECT source, event_id FROM stage.events SEMI JOIN gone USING (source, source_customer_id)
                       UNION SELECT source, interaction_id FROM stage.interactions
                             SEMI JOIN gone USING (source, source_customer_id)""")
        # Derived copies first, the work file last: if anything fails, the customers are still in
        # the work file and running the same command again finishes the job.
        _find_quarantined_rows(con, settings)  # before the lake loses the rows that tell whose they were
        customers = con.execute("SELECT customer_id FROM gone_customers").fetchdf()
        removed = _erase_published(settings, customers, con.execute("SELECT * FROM gone_quarantine").fetchdf(),
                                   con.execute("SELECT source, order_id FROM gone_orders").fetchdf())
        removed.update(_erase_exports(settings, customers))
        removed.update(_erase_data_docs(con, settings, first_id))
        # Last of the derived copies: a rerun after a failure here could no longer find their
        # quarantined rows by their rows in the lake.
        removed.update(_erase_lake(con, settings))
        inbox = _inbox_files(con, settings)
        con.execute("BEGIN")
        removed.update(_erase_work(con))
        con.execute("INSERT INTO identity.suppressed SELECT source, source_customer_id, erasure_id FROM gone")
        con.execute("INSERT INTO identity.suppressed_orders SELECT source, order_id, erasure_id FROM gone_orders")
        logged = dict(removed, **({"people erased together": len(people)} if len(people) > 1 else {}))
        erasures = con.execute("""
            INSERT INTO ops.erasures
            SELECT c.erasure_id, c.customer_id, now(), $reason, $requested_by, count(g.source_customer_id), $removed
            FROM gone_customers c LEFT JOIN gone g USING (erasure_id) GROUP BY ALL ORDER BY c.erasure_id
            RETURNING erasure_id, customer_id, source_records""",
                               {"reason": reason.strip(), "requested_by": requested_by.strip(),
                                "removed": json.dumps(logged, sort_keys=True)}).fetchall()
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    return ErasureResult(sorted(erasures), removed, inbox)


def _erase_data_docs(con: duckdb.DuckDBPyConnection, settings: Settings, erasure_id: int) -> dict[str, int]:
    """Delete the Great Expectations results and Data Docs pages of every batch in which a row of
    the person was quarantined: they quote the failing values (``ops.validations`` keeps the counts)."""
    batches = {(run_id, f"{file}/{entity}") for run_id, file, entity in con.execute(
        "SELECT DISTINCT run_id, file, entity FROM gone_quarantine").fetchall()}
    if not batches:
        return {"data docs results": 0}
    from warehouse.quality import QualityContext  # GX is slow to import; most erasures never need it

    return {"data docs results": QualityContext(settings, f"erasure-{erasure_id}").forget_batches(batches)}


def _persons_rows(con: duckdb.DuckDBPyConnection, path: Path) -> str | None:
    """The condition on a lake file's rows that holds for the person's (by their source ids, or
    their orders' ids in a file without those), with parameter ``$source``; None: no such column."""
    columns = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {dialect.read_parquet(path)}").fetchall()}
    if "source_customer_id" in columns:
        return "source_customer_id IN (SELECT source_customer_id FROM gone WHERE source = $source)"
    if "order_id" in columns:
        return "order_id IN (SELECT order_id FROM gone_orders WHERE source = $source)"
    return None


def _find_quarantined_rows(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """``gone_lake_rows``: the person's rows in every lake file (path relative to the lake, row),
    which ``_erase_lake`` removes; ``gone_quarantine``: the (load_id, row) of every quarantined
    row of the person, with its run and batch: by the record ids staged for them, or by their
    rows in the raw lake (a row quarantined before it was staged, e.g. an order with a negative
    amount)."""
    con.execute('CREATE OR REPLACE TEMP TABLE gone_lake_rows (lake_path VARCHAR, "row" BIGINT)')
    for path in sorted(settings.lake.glob("*/*/*/*.parquet")):
        condition = _persons_rows(con, path)
        if condition is not None:
            con.execute(f"INSERT INTO gone_lake_rows SELECT $path, _row FROM {dialect.read_parquet(path)}"
                        f" WHERE coalesce({condition}, false)",
                        {"source": path.parent.parent.name, "path": str(path.relative_to(settings.lake))})
    con.execute("""
        CREATE OR REPLACE TEMP TABLE gone_quarantine AS
        SELECT DISTINCT q.load_id, q."row", q.run_id, q.file, q.entity
        FROM ops.quarantine q LEFT JOIN ops.loads l USING (load_id)
        WHERE (q.source, q.source_record_id) IN (SELECT * FROM gone_records)
           OR EXISTS (SELECT 1 FROM gone_lake_rows g  -- the manifest names raw files (by absolute path)
                      WHERE g."row" = q."row" AND starts_with(g.lake_path, 'raw/')
                        AND ends_with(l.lake_path, g.lake_path))""")


def _erase_lake(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict[str, int]:
    """Rewrite the lake files holding the person's rows (``gone_lake_rows``) without them;
    ``lake_hits`` lists the raw files that had them, relative to the lake."""
    removed = {"lake rows": 0}
    con.execute("CREATE OR REPLACE TEMP TABLE lake_hits (lake_path VARCHAR)")
    for relative, hits in con.execute('SELECT lake_path, count(*) FROM gone_lake_rows GROUP BY 1 ORDER BY 1'
                                      ).fetchall():
        path = settings.lake / relative
        condition = _persons_rows(con, path)
        rewritten = path.with_name(f".{path.name}.erasing")
        con.execute(f"COPY (SELECT * FROM {dialect.read_parquet(path)} WHERE NOT coalesce({condition}, false))"
                    f" TO {dialect.quote(str(rewritten))} (FORMAT parquet)", {"source": path.parent.parent.name})
        os.replace(rewritten, path)
        removed["lake rows"] += hits
        con.execute("INSERT INTO lake_hits VALUES (?)", [str(Path("raw", *Path(relative).parts[1:]))])
    return removed


def _erase_work(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    def delete(sql: str) -> int:
        return len(con.execute(sql + " RETURNING 1").fetchall())

    removed = {}
    removed["key cache rows"] = (
        delete("DELETE FROM stage.phone_keys WHERE raw IN (SELECT phone FROM stage.customer_records"
               " SEMI JOIN gone USING (source, source_customer_id))")
        + delete("DELETE FROM stage.name_keys WHERE raw IN (SELECT name FROM stage.customer_records"
                 " SEMI JOIN gone USING (source, source_customer_id))"))
    removed["work rows"] = _delete_by_order(con, "stage.order_lines") + _delete_by_order(con, "stage.order_copies")
    for table in WORK_TABLES_BY_SOURCE_ID:
        removed["work rows"] += delete(f"DELETE FROM {table} WHERE (source, source_customer_id) IN"
                                       " (SELECT source, source_customer_id FROM gone)")
    for table in ("identity.golden", "features.customer_features", "tags.customer_tags", "tags.customer_tags_wide",
                  "tags.overrides", "identity.links", "identity.node_customer"):
        removed["work rows"] += delete(f"DELETE FROM {table} WHERE customer_id IN {GONE_CUSTOMERS}")
    removed["work rows"] += delete(f"DELETE FROM identity.review WHERE customer_id_a IN {GONE_CUSTOMERS}"
                                   f" OR customer_id_b IN {GONE_CUSTOMERS}")
    # Their hashed identifier values go too.  With their records gone, the next run has nothing to
    # start from to find whom their absence touches, so it resolves everyone again.
    removed["work rows"] += delete("DELETE FROM identity.resolved_keys WHERE record_hash IN"
                                   " (SELECT hash(source, source_customer_id) FROM gone)")
    con.execute("DELETE FROM identity.resolved")
    removed["quarantine rows"] = delete(
        'DELETE FROM ops.quarantine WHERE (load_id, "row") IN (SELECT load_id, "row" FROM gone_quarantine)')
    return removed


def _delete_by_order(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Delete the rows of the person's orders (``gone_orders``) from a table keyed by order (no
    customer id: order lines, order copies, where the order may be the kept one)."""
    columns = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    kept = " OR (kept_source, kept_order_id) IN (SELECT source, order_id FROM gone_orders)" \
        if "kept_order_id" in columns else ""
    return len(con.execute(f"DELETE FROM {table} WHERE (source, order_id) IN (SELECT source, order_id FROM gone_orders)"
                           f"{kept} RETURNING 1").fetchall())


def _inbox_files(con: duckdb.DuckDBPyConnection, settings: Settings) -> list[str]:
    """Inbox files, still present, whose landed rows included the person, and the files skipped as
    copies of those (same checksum), from the manifest."""
    return [r[0] for r in con.execute("""
        SELECT DISTINCT file FROM ops.loads
        WHERE checksum IN (SELECT l.checksum FROM ops.loads l JOIN lake_hits h ON ends_with(l.lake_path, h.lake_path))
        ORDER BY 1""").fetchall()
            if (settings.inbox / r[0]).exists()]


def _erase_published(settings: Settings, customers: pd.DataFrame, quarantined: pd.DataFrame,
                     orders: pd.DataFrame) -> dict[str, int]:
    if not settings.warehouse.exists():
        return {}
    building = settings.warehouse.with_name(f".{settings.warehouse.name}.erasing")
    compacted = settings.warehouse.with_name(f".{settings.warehouse.name}.compacted")
    shutil.copyfile(settings.warehouse, building)
    removed = 0
    try:
        with duckdb.connect(str(building)) as con:
            con.register("gone_customers", customers)
            con.register("gone_quarantine", quarantined)
            con.register("gone_orders", orders)
            removed += len(con.execute('DELETE FROM ops.quarantine WHERE (load_id, "row") IN'
                                       ' (SELECT load_id, "row" FROM gone_quarantine) RETURNING 1').fetchall())
            removed += _delete_by_order(con, "analytics.order_lines") + _delete_by_order(con, "ops.order_copies")
            tables = con.execute("""SELECT table_name FROM duckdb_columns() WHERE schema_name = 'analytics'
                                    AND column_name = 'customer_id' AND database_name = current_database()""").fetchall()
            for (table,) in tables:
                removed += len(con.execute(f"DELETE FROM analytics.{table} WHERE customer_id IN {GONE_CUSTOMERS}"
                                           " RETURNING 1").fetchall())
            removed += len(con.execute(f"DELETE FROM ops.identity_review WHERE customer_id_a IN {GONE_CUSTOMERS}"
                                       f" OR customer_id_b IN {GONE_CUSTOMERS} RETURNING 1").fetchall())
            con.execute("CHECKPOINT")
        _compact(building, compacted)
        os.replace(compacted, settings.warehouse)
    finally:
        building.unlink(missing_ok=True)
        compacted.unlink(missing_ok=True)
    return {"published rows": removed}


def _compact(source: Path, target: Path) -> None:
    """Copy every table of ``source`` into a new file ``target``: deleted rows and freed blocks
    can keep their bytes in a DuckDB file, and each night's publish starts from a copy of the
    published file, so without this the erased person's history would stay in it."""
    target.unlink(missing_ok=True)
    with duckdb.connect() as con:
        dialect.attach(con, source, "erased")
        dialect.attach(con, target, "compacted", read_only=False)
        con.execute("COPY FROM DATABASE erased TO compacted")


def _erase_exports(settings: Settings, customers: pd.DataFrame) -> dict[str, int]:
    removed = 0
    with duckdb.connect() as con:
        con.register("gone_customers", customers)
        for path in sorted(settings.exports.glob("**/*.parquet")) + sorted(settings.exports.glob("campaigns/**/*.csv")):
            reader = dialect.read_parquet(path) if path.suffix == ".parquet" else \
                f"read_csv({dialect.quote(str(path))}, header = true, all_varchar = true)"
            hits = con.execute(f"SELECT count(*) FROM {reader} WHERE customer_id IN {GONE_CUSTOMERS}").fetchone()[0]
            if not hits:
                continue
            rewritten = path.with_name(f".{path.name}.erasing")
            options = "(FORMAT parquet)" if path.suffix == ".parquet" else "(HEADER, DELIMITER ',')"
            con.execute(f"COPY (SELECT * FROM {reader} WHERE customer_id NOT IN {GONE_CUSTOMERS})"
                        f" TO {dialect.quote(str(rewritten))} {options}")
            os.replace(rewritten, path)
            removed += hits
    return {"export rows": removed}

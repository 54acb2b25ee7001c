"""Publish: build the analysts' warehouse in a new DuckDB file, then swap it in atomically.

The new file is written beside ``warehouse.duckdb`` and moved over it with ``os.replace``
(an atomic rename on POSIX): a reader that opened the old file keeps reading the old run,
a reader that opens after the swap sees the new run, nobody sees a mix, and a run that dies
before the swap leaves the published warehouse untouched.  The new file starts as a copy of
the published one (made while the run's other stages work, :class:`WarehouseCopy`): tag
history, tag changes and tag stats are updated in it with the day's changes, orders and order
lines with the orders that changed, customers and their source ids with the customers that
changed (the SQL costs what changed; the copy grows with the history kept), every other table
is built again from the work database.  They too change only when a run publishes.  PII is
pseudonymised here; raw values stay in the pipeline's work file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb

from rules.model import RuleSet
from warehouse import dialect
from warehouse.runs import RunRecord, finish_run
from warehouse.privacy import MASK_EMAIL_SQL, MASK_PHONE_SQL, PII_COLUMNS, hmac_pads, pii_key, pseudonym_sql
from warehouse.faults import failpoint
from warehouse.settings import Settings
from warehouse.tagging import overrides_in_force_sql
from warehouse.workdb import staged_files


@dataclass
class PublishResult:
    warehouse: Path
    export: Path
    tables: dict[str, int]
    orders: str = "rebuilt"      # how orders and order lines were published: updated | rebuilt
    customers: str = "rebuilt"   # how customers and their source ids were published: updated | rebuilt
    copied_bytes: int = 0        # the published file copied to start from: grows with the history kept
    copy_seconds: float = 0.0    # how long that copy took (on its thread, while other stages ran)
    copy_wait_seconds: float = 0.0  # how long publishing waited for it

    @property
    def row_count(self) -> int:
        return self.tables.get("analytics.customer_tags", 0)


def _catalog(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> None:
    rows = [(t.id, t.names.get("en"), t.names.get("zh"), t.category[0], t.category[1], t.value_type, t.kind,
             t.values, t.owner, t.definition, t.status, t.version, t.refresh, t.file, t.marketing,
             {str(k): str(v) for k, v in t.colours.items()} or None) for t in rules.tags.values()]
    con.execute("""CREATE TABLE analytics.tag_catalog (tag VARCHAR PRIMARY KEY, name_en VARCHAR, name_zh VARCHAR,
                   category_l1 VARCHAR, category_l2 VARCHAR, value_type VARCHAR, rule_kind VARCHAR, "values" VARCHAR[],
                   owner VARCHAR, definition VARCHAR, status VARCHAR, version INTEGER, refresh VARCHAR,
                   rule_file VARCHAR, marketing BOOLEAN, colours MAP(VARCHAR, VARCHAR), coverage DOUBLE)""")
    con.executemany("INSERT INTO analytics.tag_catalog VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    rows)


def _customers_sql(only: str | None = None) -> str:
    """``analytics.customers`` from the golden records; ``only``: a relation of customer_id to limit
    them to.  Binds the pads of :func:`warehouse.privacy.hmac_pads`."""
    return f"""
        SELECT g.customer_id,
               {pseudonym_sql('g.email_key')} AS email_pseudonym, {MASK_EMAIL_SQL.format(c='g.email_key')} AS email_masked,
               {pseudonym_sql('g.phone_e164')} AS phone_pseudonym,
               coalesce({MASK_PHONE_SQL.format(c='g.phone_e164')}, g.phone_masked_key) AS phone_masked,
               g.gender, g.province, g.city, g.first_registered_at, g.acquisition_source, g.email_opt_in, g.sms_opt_in,
               g.member_id IS NOT NULL AS is_member, g.sources,
               (SELECT count(*) FROM work.identity.node_customer n WHERE n.customer_id = g.customer_id)
                   AS source_records
        FROM work.identity.golden g {f"SEMI JOIN {only} USING (customer_id)" if only else ""}
        ORDER BY g.customer_id"""


def _source_ids_sql(only: str | None = None) -> str:
    """``analytics.customer_source_ids``; ``only``: a relation of customer_id to limit them to."""
    return f"""
        SELECT m.customer_id, m.source, m.source_customer_id,
               r.member_id IS NOT NULL AS has_member_id, r.email_key IS NOT NULL AS has_email,
               r.phone_e164 IS NOT NULL AS has_phone, r.phone_masked_key IS NOT NULL AS has_masked_phone,
               r.name_key IS NOT NULL AS has_name
        FROM work.identity.node_customer m {f"SEMI JOIN {only} USING (customer_id)" if only else ""}
        LEFT JOIN work.stage.customer_records r USING (source, source_customer_id)
        ORDER BY m.customer_id, m.source, m.source_customer_id"""


def _customers(con: duckdb.DuckDBPyConnection, settings: Settings, how: str) -> None:
    """Customers and their source ids, built afresh or updated in place with ``changed_customers``,
    as :func:`_find_changes` decided (``how``); the links inside each customer and the review pairs."""
    pads = hmac_pads(pii_key(settings))
    if how == "rebuilt":
        con.execute(f"CREATE TABLE analytics.customers AS {_customers_sql()}", pads)
        con.execute(f"CREATE TABLE analytics.customer_source_ids AS {_source_ids_sql()}")
    else:
        con.execute(f"""
            DELETE FROM analytics.customers WHERE customer_id IN (SELECT customer_id FROM changed_customers);
            INSERT INTO analytics.customers {_customers_sql("changed_customers")}""", pads)
        con.execute(f"""
            DELETE FROM analytics.customer_source_ids WHERE customer_id IN (SELECT customer_id FROM changed_customers);
            INSERT INTO analytics.customer_source_ids {_source_ids_sql("changed_customers")}""")
    con.execute("CREATE TABLE analytics.customer_links AS SELECT * FROM work.identity.links")
    con.execute("CREATE TABLE ops.identity_review AS SELECT * FROM work.identity.review")


def _orders_sql(settings: Settings, day: str, only: str | None = None) -> str:
    """Published orders as of ``day`` (a SQL date); ``only``: a relation of (source, order_id)
    to limit them to."""
    order_date = dialect.local_date("o.ordered_at", settings.timezone)
    return f"""
        SELECT o.source, o.order_id, m.customer_id, o.ordered_at, {order_date} AS order_date, o.amount,
               o.currency, o.status, o.channel, o.store_id
        FROM work.stage.orders o {f"SEMI JOIN {only} USING (source, order_id)" if only else ""}
        LEFT JOIN work.identity.node_customer m USING (source, source_customer_id)
        WHERE {order_date} <= {day}"""


def _order_lines_sql(only: str | None = None) -> str:
    """The lines of the published orders; ``only``: a relation of (source, order_id) to limit them to."""
    orders = f"(SELECT source, order_id FROM analytics.orders SEMI JOIN {only} USING (source, order_id))" \
        if only else "analytics.orders"
    return f"""
        SELECT l.source, l.order_id, l.line_no, l.sku, l.category, l.quantity, l.unit_price
        FROM work.stage.order_lines l SEMI JOIN {orders} o USING (source, order_id)"""


PUBLISH_STATE = "ops.publish_state"
# The tables a night updates in place in the copy of the published file, each with the stage table
# its rows come from: ops.publish_state keeps, per table, that stage table's newest load and files.
UPDATED_IN_PLACE = {"orders": "order_versions", "order_lines": "order_lines", "customers": "customer_records"}


def _find_changes(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: date, rebuild: bool,
                  definitions: dict[str, str]) -> dict[str, str]:
    """How the copy of the published file gets tonight's orders (with their lines) and customers
    (with their source ids): each ``"updated"`` in place with what can have changed since they
    were published, or ``"rebuilt"`` from the whole work file.

    Both start from the source customers that moved to another customer, went or came
    (``moved_source_customers``: the published ``customer_source_ids`` against
    ``identity.node_customer``).  Orders that can have changed (``changed_orders``): those staged
    from a newer load, those of a moved source customer, those set aside as another source's copy
    or taken back since (the published ``ops.order_copies``) and those dated after the published
    as_of; their lines, and the orders with lines from a newer load (``changed_lines``).
    Customers that can have changed (``changed_customers``): the customers a moved source
    customer left or joined, and those with a record from a newer load (their golden record and
    source ids are built from nothing else).

    Each is rebuilt on the first publish, with ``rebuild``, when its definition changed
    (``definitions``, from :func:`_definitions`), when its stage table was staged again from the whole lake since (:func:`_published_state`), and
    orders when as_of is earlier than the published one.
    """
    orders = _published_state(con, ("orders", "order_lines"), definitions)
    customers = _published_state(con, ("customers",), definitions)
    how = {"orders": "updated" if orders and not rebuild and orders["orders"][0] <= as_of else "rebuilt",
           "customers": "updated" if customers and not rebuild else "rebuilt"}
    if "updated" not in how.values():
        return how
    con.execute("""
        CREATE OR REPLACE TEMP TABLE moved_source_customers AS
        SELECT source, source_customer_id, n.customer_id, p.customer_id AS published_customer_id
        FROM work.identity.node_customer n FULL JOIN analytics.customer_source_ids p USING (source, source_customer_id)
        WHERE n.customer_id IS DISTINCT FROM p.customer_id""")
    if how["customers"] == "updated":
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE changed_customers AS
            SELECT customer_id FROM moved_source_customers WHERE customer_id IS NOT NULL
            UNION
            SELECT published_customer_id FROM moved_source_customers WHERE published_customer_id IS NOT NULL
            UNION
            SELECT m.customer_id FROM work.identity.node_customer m
            JOIN work.stage.customer_records r USING (source, source_customer_id)
            WHERE r._load_id > {customers['customers'][1]}""")
    if how["orders"] == "updated":
        day = f"DATE {dialect.quote(as_of.isoformat())}"
        published_day = f"DATE {dialect.quote(orders['orders'][0].isoformat())}"
        order_date = dialect.local_date("o.ordered_at", settings.timezone)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE changed_orders AS
            SELECT source, order_id FROM work.stage.order_versions WHERE _load_id > {orders['orders'][1]}
            UNION
            SELECT source, order_id FROM work.stage.order_versions o
            WHERE {order_date} > {published_day} AND {order_date} <= {day}
            UNION
            SELECT source, order_id FROM work.stage.order_versions SEMI JOIN moved_source_customers
                USING (source, source_customer_id)
            UNION
            (SELECT source, order_id FROM work.stage.order_copies EXCEPT SELECT source, order_id FROM ops.order_copies)
            UNION
            (SELECT source, order_id FROM ops.order_copies EXCEPT SELECT source, order_id FROM work.stage.order_copies);
            CREATE OR REPLACE TEMP TABLE changed_lines AS
            SELECT source, order_id FROM changed_orders
            UNION
            SELECT source, order_id FROM work.stage.order_lines WHERE _load_id > {orders['order_lines'][1]}""")
    return how


def _definitions(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict[str, str]:
    """Per table updated in place, a digest of what its rows are built with: their SQL (with the
    time zone); for customers also the golden records' definition (``identity.golden_built``) and
    the pseudonym key (an HMAC of a constant: not the key)."""
    orders = hashlib.sha256((_orders_sql(settings, "as_of") + _order_lines_sql()).encode()).hexdigest()[:16]
    golden = con.execute("SELECT list(definition) FROM work.identity.golden_built").fetchone()[0]
    key = hmac.new(pii_key(settings), b"tagwright publish state", "sha256").hexdigest()
    customers = hashlib.sha256((_customers_sql() + _source_ids_sql() + str(golden) + key).encode()).hexdigest()[:16]
    return {"orders": orders, "order_lines": orders, "customers": customers}


def _published_state(con: duckdb.DuckDBPyConnection, tables: tuple[str, ...],
                     definitions: dict[str, str]) -> dict[str, tuple[date, int]] | None:
    """(as_of, newest load) each of ``tables`` in the copy was published with, when they can be
    updated in place: published with its definition in ``definitions``, from stage tables only
    added to since (each file they were staged from then is still staged, unchanged: a stage table
    staged again from the whole lake holds other rows under the same loads).  Else None (also
    before the first publish, and in a file published before the state kept the staged files)."""
    if not con.execute("SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database()"
                       " AND schema_name || '.' || table_name = ? AND column_name = 'staged_files'",
                       [PUBLISH_STATE]).fetchone()[0]:
        return None
    state = {}
    for table, definition, as_of, loads, files in con.execute(
            f"SELECT published, definition, as_of, loads_through, staged_files FROM {PUBLISH_STATE}").fetchall():
        if table in tables and definition == definitions[table] \
                and set(files) <= set(staged_files(con, UPDATED_IN_PLACE[table], "work")):
            state[table] = (as_of, loads)
    return state if set(state) == set(tables) else None


def _remember_published(con: duckdb.DuckDBPyConnection, as_of: date, definitions: dict[str, str]) -> None:
    """``ops.publish_state`` for the next night's :func:`_find_changes`."""
    con.execute(f"CREATE TABLE {PUBLISH_STATE} (published VARCHAR, definition VARCHAR, as_of DATE,"
                " loads_through BIGINT, staged_files VARCHAR[])")
    for table, stage_table in UPDATED_IN_PLACE.items():
        con.execute(f"""
            INSERT INTO {PUBLISH_STATE}
            SELECT $table, $definition, $as_of, max(_load_id), $files
            FROM work.stage.{stage_table} HAVING count(*) > 0""",
                    {"table": table, "definition": definitions[table], "as_of": as_of,
                     "files": staged_files(con, stage_table, "work")})


def _orders(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: date, how: str) -> None:
    """Orders, interactions and order lines as of the run date, in no particular order (sorting
    millions of rows by their keys cost seconds and helps no query by customer or date), and the
    orders set aside as copies.  Orders and order lines are built afresh or updated in place, as
    :func:`_find_changes` decided (``how``)."""
    day = f"DATE {dialect.quote(as_of.isoformat())}"
    con.execute("CREATE TABLE ops.order_copies AS SELECT * FROM work.stage.order_copies")
    con.execute(f"""
        CREATE TABLE analytics.interactions AS
        SELECT i.source, i.interaction_id, m.customer_id, i.channel, i.kind, i.occurred_at,
               {dialect.local_date("i.occurred_at", settings.timezone)} AS occurred_on, i.rating
        FROM work.stage.interactions i
        LEFT JOIN work.identity.node_customer m USING (source, source_customer_id)
        WHERE {dialect.local_date("i.occurred_at", settings.timezone)} <= {day}""")
    if how == "rebuilt":
        con.execute(f"""
            CREATE TABLE analytics.orders AS {_orders_sql(settings, day)};
            CREATE TABLE analytics.order_lines AS {_order_lines_sql()}""")
    else:
        con.execute(f"""
            DELETE FROM analytics.orders WHERE (source, order_id) IN (SELECT source, order_id FROM changed_orders);
            INSERT INTO analytics.orders {_orders_sql(settings, day, "changed_orders")};
            DELETE FROM analytics.order_lines WHERE (source, order_id) IN (SELECT source, order_id FROM changed_lines);
            INSERT INTO analytics.order_lines {_order_lines_sql("changed_lines")}""")


def _tags(con: duckdb.DuckDBPyConnection, as_of: date) -> None:
    # The tags stage stores its rows by customer_id and tag (overrides' rows last), the wide table
    # and the features by customer_id: a scan of one table keeps that order.
    con.execute("CREATE TABLE analytics.customer_tags AS SELECT * FROM work.tags.customer_tags")
    con.execute(f"""CREATE TABLE analytics.customer_features AS
                    SELECT DATE {dialect.quote(as_of.isoformat())} AS as_of, *
                    FROM work.features.customer_features""")
    in_force = overrides_in_force_sql(as_of, "work.tags.overrides")
    con.execute(f"""CREATE TABLE analytics.tag_overrides AS
                    SELECT o.override_id, o.customer_id, o.tag, o.value, o.reason, o.author, o.created_at,
                           o.effective_from, o.expires_on, o.revoked_at,
                           o.override_id IN (SELECT override_id FROM ({in_force})) AS in_force
                    FROM work.tags.overrides o ORDER BY o.override_id""")
    con.execute("CREATE TABLE analytics.customer_tags_wide AS SELECT * FROM work.tags.customer_tags_wide")


HISTORY_TABLES = {
    "tag_history": "customer_id VARCHAR, tag VARCHAR, value VARCHAR, valid_from DATE, valid_to DATE",
    "tag_changes": "as_of DATE, customer_id VARCHAR, tag VARCHAR, old_value VARCHAR, new_value VARCHAR",
    "tag_stats": "as_of DATE, tag VARCHAR, value VARCHAR, customers BIGINT, coverage DOUBLE",
}


def _keep_tables_updated_in_place(con: duckdb.DuckDBPyConnection, how: dict[str, str]) -> None:
    """In a copy of the previous warehouse: drop everything but the history tables and the tables
    :func:`_find_changes` found can be ``"updated"`` in place (the SQL then costs what changed, not
    the length of the history kept, the number of orders or of customers)."""
    kept = {("analytics", t) for t in HISTORY_TABLES}
    if how["orders"] == "updated":
        kept |= {("analytics", "orders"), ("analytics", "order_lines")}
    if how["customers"] == "updated":
        kept |= {("analytics", "customers"), ("analytics", "customer_source_ids")}
    objects = con.execute("""
        SELECT 'TABLE', schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database()
        UNION ALL
        SELECT 'VIEW', schema_name, view_name FROM duckdb_views()
        WHERE database_name = current_database() AND NOT internal""").fetchall()
    for kind, schema, name in objects:
        if (schema, name) not in kept:
            con.execute(f'DROP {kind} "{schema}"."{name}"')
    con.execute("CHECKPOINT")  # tonight's tables reuse the blocks just freed: the file does not grow


def _history(con: duckdb.DuckDBPyConnection, as_of: date, retention_days: int, memory_limit: str) -> None:
    """Add as_of to the SCD2 history, changes and stats carried in the file.

    Rows the file holds for as_of or later are recomputed first, so re-running a day gives the
    same result as running it once.  History rows that ended, and changes and stats dated, more
    than ``retention_days`` before as_of are dropped.  Rows keep the order they were published
    in, each night's follow.
    """
    day = f"DATE {dialect.quote(as_of.isoformat())}"
    con.execute(f"""
        DELETE FROM analytics.tag_history WHERE valid_from >= {day};
        UPDATE analytics.tag_history SET valid_to = NULL WHERE valid_to >= {day};
        DELETE FROM analytics.tag_changes WHERE as_of >= {day};
        DELETE FROM analytics.tag_stats WHERE as_of = {day}""")
    # Today's changes: the open rows whose tag moved or went, the tags that are new (customer_tags
    # has a value on every row, checked before publishing: a value is NULL only where there is no
    # row), compared a slice of customers at a time.  They then close and open history rows.
    for customers in _customer_slices(con, memory_limit):
        con.execute(f"""
            INSERT INTO analytics.tag_changes
            SELECT {day}, coalesce(o.customer_id, t.customer_id), coalesce(o.tag, t.tag), o.value, t.value
            FROM (SELECT customer_id, tag, value FROM analytics.tag_history WHERE valid_to IS NULL AND {customers}) o
            FULL JOIN (SELECT customer_id, tag, value FROM analytics.customer_tags WHERE {customers}) t
                USING (customer_id, tag)
            WHERE o.value IS DISTINCT FROM t.value""")
    con.execute(f"""
        UPDATE analytics.tag_history h SET valid_to = {day} FROM analytics.tag_changes c
        WHERE c.as_of = {day} AND c.old_value IS NOT NULL
          AND h.valid_to IS NULL AND h.customer_id = c.customer_id AND h.tag = c.tag;
        INSERT INTO analytics.tag_history
        SELECT customer_id, tag, new_value, {day}, NULL FROM analytics.tag_changes
        WHERE as_of = {day} AND new_value IS NOT NULL;
        INSERT INTO analytics.tag_stats
        SELECT {day}, tag, value, count(*) AS customers,
               count(*) / (SELECT count(*) FROM analytics.customer_tags_wide) AS coverage
        FROM analytics.customer_tags GROUP BY tag, value ORDER BY tag, value""")
    horizon = f"DATE {dialect.quote((as_of - timedelta(days=retention_days)).isoformat())}"
    con.execute(f"""
        DELETE FROM analytics.tag_history WHERE valid_to < {horizon};
        DELETE FROM analytics.tag_changes WHERE as_of < {horizon};
        DELETE FROM analytics.tag_stats WHERE as_of < {horizon};""")
    con.execute(f"""
        UPDATE analytics.tag_catalog c SET coverage = s.coverage
        FROM (SELECT tag, sum(coverage) AS coverage FROM analytics.tag_stats WHERE as_of = {day} GROUP BY tag) s
        WHERE s.tag = c.tag""")


# Bytes a tag row takes in the hash table of the join that compares today's tags with the open
# history (its customer id, tag, value and the table's own): 24.9M rows went over a 2 GB limit.
COMPARED_TAG_ROW_BYTES = 100


def _customer_slices(con: duckdb.DuckDBPyConnection, memory_limit: str) -> list[str]:
    """Conditions on customer_id that split the customers into ranges whose tag rows fit half the
    memory limit in the join comparing them with the open history (its hash table holds the
    smaller side).  Compared at once, the 24.9M rows a side of 1.7M customers spilled at a 2 GB
    limit: the join took 5.1 to 6.4 s, in three ranges 2.4 s.  With no history yet (the first
    night) there is one range: three would only scan three times."""
    limit = dialect.memory_bytes(memory_limit)
    rows = con.execute("""SELECT least((SELECT count(*) FROM analytics.customer_tags),
                                       (SELECT count(*) FROM analytics.tag_history WHERE valid_to IS NULL))"""
                       ).fetchone()[0]
    slices = math.ceil(rows * COMPARED_TAG_ROW_BYTES / (limit / 2)) if limit else 1
    if slices <= 1:
        return ["true"]
    bounds = con.execute("SELECT quantile_disc(customer_id, ?) FROM analytics.customer_tags_wide",
                         [[i / slices for i in range(1, slices)]]).fetchone()[0]
    edges = [f"customer_id < {dialect.quote(bounds[0])}"]
    edges += [f"customer_id >= {dialect.quote(lo)} AND customer_id < {dialect.quote(hi)}"
              for lo, hi in zip(bounds, bounds[1:])]
    return edges + [f"customer_id >= {dialect.quote(bounds[-1])}"]


def _ops(con: duckdb.DuckDBPyConnection, record: RunRecord) -> None:
    """The run ledger (with this run as it finishes), the data-quality tables, and which sources
    are stale (a file of theirs was not loaded by this run); quarantined PII values are withheld."""
    for table in ("runs", "loads", "validations", "identity_changes", "erasures"):
        con.execute(f"CREATE TABLE ops.{table} AS SELECT * FROM work.ops.{table}")
    finish_run(con, record)
    con.execute(f"""
        CREATE TABLE analytics.source_status AS
        SELECT source, {dialect.quote(record.run_id)} AS run_id,
               count(*) FILTER (WHERE run_id = {dialect.quote(record.run_id)} AND status IN ('failed', 'rejected'))
                   AS files_not_loaded_this_run,
               files_not_loaded_this_run > 0 AS stale,
               max(landed_at) FILTER (WHERE status = 'validated') AS last_loaded_at,
               max(landed_at) AS last_delivery_at
        FROM work.ops.loads GROUP BY source ORDER BY source""")
    pii = dialect.is_in('"column"', PII_COLUMNS)
    pii_error = " OR ".join(f"starts_with(reason, {dialect.quote(c + ':')})" for c in PII_COLUMNS)
    con.execute(f"""
        CREATE TABLE ops.quarantine AS
        SELECT run_id, load_id, source, file, entity, "row", source_record_id, expectation, "column",
               CASE WHEN {pii} OR "column" = '_errors' THEN NULL ELSE value END AS value,
               CASE WHEN {pii}
                    THEN "column" || ' fails ' || expectation || ' (value withheld: personal data)'
                    WHEN {pii_error}
                    THEN split_part(reason, ':', 1) || ': value cannot be read (withheld: personal data)'
                    ELSE reason END AS reason
        FROM work.ops.quarantine""")


def latest_published_as_of(settings: Settings) -> date | None:
    """The newest as_of in the published warehouse, or None before the first publish."""
    if not settings.warehouse.exists():
        return None
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        return con.execute("SELECT max(as_of) FROM analytics.tag_stats").fetchone()[0]


class WarehouseCopy:
    """The published warehouse copied, on a thread, to the file this run's publish builds in.

    The copy holds the whole tag history kept, so it grows night after night (gigabytes at a
    million customers after months); it is disk-bound, and the stages before publishing are
    CPU-bound, so the nightly starts it before them and publishing waits only for what is left.
    Only publishing and ``tagwright forget`` write the published file, both under the run lock
    the run holds: the copy cannot go stale while it waits.
    """

    def __init__(self, settings: Settings, run_id: str) -> None:
        target = settings.warehouse
        self.path = target.with_name(f".{target.name}.{run_id}.building")
        self.discarded = False
        for stale in target.parent.glob(f".{target.name}.*.building*"):
            stale.unlink()  # left by a killed run; we hold the run lock, so nobody else is building
        self._copied, self._stop = None, threading.Event()
        if target.exists():
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse-copy")
            self._copied = pool.submit(_copy_file, target, self.path, self._stop)
            pool.shutdown(wait=False)  # its thread ends with the copy

    def wait(self) -> tuple[int, float]:
        """(bytes, seconds) of the finished copy, (0, 0.0) before the first publish; raises what
        the copy raised."""
        return self._copied.result() if self._copied is not None else (0, 0.0)

    def discard(self) -> None:
        """The run will not publish from it (it failed, or publishing failed and a retry copies
        afresh): stop the copy where it is and delete it (a failed run need not wait for
        gigabytes it will not use)."""
        self.discarded = True
        self._stop.set()
        with contextlib.suppress(Exception):  # a copy that failed left nothing to keep
            self.wait()
        self.path.unlink(missing_ok=True)


COPY_CHUNK = 64 << 20  # a stopped copy ends within one chunk


def _copy_file(source: Path, target: Path, stop: threading.Event) -> tuple[int, float]:
    """Copy ``source`` to ``target`` in the kernel (sendfile, as ``shutil.copyfile`` does on
    Linux) a chunk at a time until done or ``stop`` is set: (bytes copied, seconds)."""
    started, copied = time.perf_counter(), 0
    with open(source, "rb", buffering=0) as reading, open(target, "wb", buffering=0) as writing:
        while not stop.is_set():
            sent = _copy_chunk(reading, writing, copied)
            if sent == 0:
                break
            copied += sent
    return copied, time.perf_counter() - started


def _copy_chunk(reading, writing, offset: int) -> int:
    try:
        return os.sendfile(writing.fileno(), reading.fileno(), offset, COPY_CHUNK)
    except (AttributeError, OSError):  # no sendfile between files here (not Linux): through Python
        reading.seek(offset)
        return writing.write(reading.read(COPY_CHUNK))


def publish(settings: Settings, rules: RuleSet, record: RunRecord, copy: WarehouseCopy | None = None,
            rebuild: bool = False) -> PublishResult:
    """Build the new warehouse file from the work database and swap it in.

    ``record`` is this run's ledger row as it will finish; it is published with the run.
    ``copy`` is the published file's copy the run started earlier (see :class:`WarehouseCopy`);
    without one, or after it was discarded, publishing copies the file itself first.
    ``rebuild`` builds the orders, order lines, customers and their source ids from the whole
    work file (see :func:`_find_changes`).
    """
    as_of, run_id = record.as_of, record.run_id
    target = settings.warehouse
    if copy is None or copy.discarded:
        copy = WarehouseCopy(settings, run_id)
    building = copy.path
    con = None
    try:
        waiting = time.perf_counter()
        copied_bytes, copy_seconds = copy.wait()  # the history, orders and order lines come with it
        copy_wait_seconds = time.perf_counter() - waiting
        con = dialect.connect(building, settings.memory_limit)
        dialect.attach(con, settings.work_db, "work")
        con.execute("CREATE SCHEMA IF NOT EXISTS analytics; CREATE SCHEMA IF NOT EXISTS ops;")
        definitions = _definitions(con, settings)
        how = _find_changes(con, settings, as_of, rebuild, definitions)
        _keep_tables_updated_in_place(con, how)
        for table, columns in HISTORY_TABLES.items():
            con.execute(f"CREATE TABLE IF NOT EXISTS analytics.{table} ({columns})")
        _catalog(con, rules)
        _customers(con, settings, how["customers"])
        _orders(con, settings, as_of, how["orders"])
        _tags(con, as_of)
        _history(con, as_of, settings.history_retention_days, settings.memory_limit)
        _ops(con, record)
        _remember_published(con, as_of, definitions)
        tables = {f"{s}.{t}": con.execute(f'SELECT count(*) FROM {s}."{t}"').fetchone()[0]
                  for s, t in con.execute("SELECT schema_name, table_name FROM duckdb_tables()"
                                          " WHERE database_name = current_database() ORDER BY 1, 2").fetchall()}
        export = _export(con, settings, as_of, run_id)
        con.execute("DETACH work")
        con.execute("CHECKPOINT")
        con.close()
        failpoint("publish")
    except BaseException:
        if con is not None:
            con.close()
        copy.discard()
        raise
    os.replace(building, target)
    return PublishResult(warehouse=target, export=export, tables=tables, orders=how["orders"],
                         customers=how["customers"], copied_bytes=copied_bytes,
                         copy_seconds=copy_seconds, copy_wait_seconds=copy_wait_seconds)


def _export(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: date, run_id: str) -> Path:
    """Parquet copy of customer_tags under exports/customer_tags/as_of=YYYY-MM-DD/, swapped in whole."""
    final = settings.exports / "customer_tags" / f"as_of={as_of.isoformat()}"
    staging = final.with_name(f".{final.name}.{run_id}")
    for stale in final.parent.glob(f".{final.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging.mkdir(parents=True)
    # The table was built ORDER BY customer_id, tag and a scan keeps insertion order: no second sort.
    con.execute(f"COPY analytics.customer_tags TO {dialect.quote(str(staging / 'customer_tags.parquet'))}"
                " (FORMAT parquet)")
    old = final.with_name(f".{final.name}.{run_id}.old")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final

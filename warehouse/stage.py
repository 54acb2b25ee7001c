"""Stage: validated lake Parquet -> canonical, cleaned, deduplicated tables in ``stage.*``.

- customer records: one per (source, source_customer_id), the newest version (``updated_at``,
  then the newest load, then the last row); normalised keys beside the raw values:
  ``email_key`` (trimmed, lower case, +tag and gmail dots folded), ``phone_e164``,
  ``phone_masked_key`` and ``name_key`` (phones and names are normalised once per distinct
  raw value and cached in ``stage.phone_keys`` / ``stage.name_keys``);
- orders (``stage.order_versions``): one per (source, order_id), the version from the newest
  load (a re-export carries the latest status); amounts as DECIMAL(18, 2).  An order that also
  arrived through another source (``origin_source``/``origin_order_id``) is kept once, by
  ``order_source_precedence``: the copies are listed in ``stage.order_copies`` and the view
  ``stage.orders`` holds the kept orders;
- order lines: per order, the lines of its newest load holding lines (a copy's lines too: join
  ``stage.orders`` for the kept orders' lines, as features and publishing do);
- events: one per (source, event_id), with only what identity, features and erasure read of
  them (the customer and the time; type, session and anonymous id stay in the validated lake);
- interactions (service tickets, complaints, returns): one per (source, interaction_id).

Every table is staged incrementally: a night that adds files merges only those
(``stage.staged_files`` records what each table was built from); a night that changed or
removed a file builds it from the whole lake again.  Either way the table is the one a build
from the whole lake gives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from sources.entities import ENTITIES
from warehouse import dialect
from warehouse.identity import load_identity_config
from warehouse.land import lake_schema
from warehouse.normalize import NAME_KEY_VERSION, name_keys, phone_keys
from warehouse.faults import failpoint
from warehouse.settings import Settings

# The domain and local part by regexp_extract: DuckDB 2.0 fails to bind split_part(...) = '...'
# on a column that is NULL in every row (a deployment whose sources carry no email).
EMAIL_KEY = """
CASE WHEN regexp_matches(lower(trim(email)), '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$') THEN
    CASE WHEN regexp_extract(lower(trim(email)), '@(.+)$', 1) IN ('gmail.com', 'googlemail.com')
         THEN replace(regexp_extract(lower(trim(email)), '^([^@+]*)', 1), '.', '') || '@gmail.com'
         ELSE regexp_extract(lower(trim(email)), '^([^@+]*)', 1) || '@' || regexp_extract(lower(trim(email)), '@(.+)$', 1)
    END
END"""


@dataclass
class StageResult:
    rows: dict[str, int] = field(default_factory=dict)
    order_copies: int = 0  # orders set aside as another source's copy of an order
    incremental: dict[str, str] = field(default_factory=dict)  # table: kept | merged | rebuilt

    @property
    def row_count(self) -> int:
        return sum(self.rows.values())


def _valid_files(settings: Settings, entity: str) -> list[Path]:
    return sorted((settings.lake / "valid").glob(f"*/{entity}/*.parquet"))


def _register_lake(con: duckdb.DuckDBPyConnection, settings: Settings, entity: str) -> str:
    """A view over all validated Parquet of the entity (an empty one if nothing landed yet)."""
    view = f"lake_{entity}"
    files = _valid_files(settings, entity)
    if files:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {dialect.read_parquet(files)}")
    else:
        con.register(f"{view}_empty", lake_schema(ENTITIES[entity]).empty_table())
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {view}_empty")
    return view


def _extend_key_cache(con: duckdb.DuckDBPyConnection, table: str, column: str,
                      normalise: Callable[[list[str]], pa.Table], variant: str) -> None:
    """Normalise only the raw values not seen before (``variant``: e.g. the phone region the
    keys were made for) and add them to the cache table ``stage.<table>``."""
    new = [r[0] for r in con.execute(f"""
        SELECT DISTINCT {column} FROM latest_records
        WHERE {column} IS NOT NULL
          AND {column} NOT IN (SELECT raw FROM stage.{table} WHERE variant = {dialect.quote(variant)})
        ORDER BY 1""").fetchall()]
    con.register("new_keys", normalise(new))
    con.execute(f"INSERT INTO stage.{table} SELECT *, {dialect.quote(variant)} FROM new_keys")
    con.unregister("new_keys")


ORDER_COLUMNS = ("source_customer_id, ordered_at, CAST(amount AS DECIMAL(18, 2)) AS amount, currency, status, "
                 "channel, store_id, origin_source, origin_order_id, attributes")


INTERACTION_COLUMNS = "source_customer_id, channel, kind, occurred_at, rating, text, attributes"


def _events_sql(relation: str) -> str:
    """The newest version of each event, narrowed to what later stages read.  The events are the
    largest table (52M rows at the issue's volume): with every column, this one table took 22 s
    to stage; narrowed, 13 s."""
    newest = _newest_sql(relation, "event_id", "source_customer_id, occurred_at")
    return f"SELECT source, event_id, source_customer_id, occurred_at, _load_id FROM ({newest})"


def _newest_record_sql(relation: str) -> str:
    """One row per (source, source_customer_id): the newest version (``updated_at``, then the
    newest load, then the last row)."""
    return f"""
        SELECT * FROM {relation}
        QUALIFY row_number() OVER (PARTITION BY source, source_customer_id
                                   ORDER BY updated_at DESC NULLS LAST, _load_id DESC, _row DESC) = 1"""


def _records_sql(settings: Settings) -> str:
    """The staged columns of ``latest_records``: raw values and their normalised keys."""
    return f"""
        SELECT r.source, r.source_customer_id, r.source_record_id,
               r.email, {EMAIL_KEY} AS email_key,
               r.phone, p.e164 AS phone_e164, p.masked_key AS phone_masked_key,
               r.name, n.name_key,
               r.gender, r.birth_date, r.province, r.city, r.registered_at, r.member_id,
               r.email_opt_in, r.sms_opt_in, r.updated_at, r.attributes, r._file, r._row, r._load_id
        FROM latest_records r
        LEFT JOIN stage.phone_keys p ON p.raw = r.phone AND p.variant = {dialect.quote(settings.phone_region)}
        LEFT JOIN stage.name_keys n ON n.raw = r.name AND n.variant = {dialect.quote(NAME_KEY_VERSION)}"""


def _stage_customer_records(con: duckdb.DuckDBPyConnection, settings: Settings) -> str:
    """``stage.customer_records``; a night that only added files compares their newest version of
    each record with the staged one (a newer load may carry an older ``updated_at``)."""
    def newest(relation: str) -> None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE latest_records AS {_newest_record_sql(relation)}")
        _extend_key_cache(con, "phone_keys", "phone", lambda raw: phone_keys(raw, settings.phone_region),
                          settings.phone_region)
        _extend_key_cache(con, "name_keys", "name", name_keys, NAME_KEY_VERSION)

    def rebuild(lake: str) -> None:
        newest(lake)
        con.execute(f"CREATE OR REPLACE TABLE stage.customer_records AS {_records_sql(settings)}"
                    " ORDER BY source, source_customer_id")

    def merge(arriving: str) -> bool:
        newest(f"""(SELECT * EXCLUDE (email_key, phone_e164, phone_masked_key, name_key) FROM stage.customer_records
                    WHERE (source, source_customer_id) IN (SELECT source, source_customer_id FROM {arriving})
                    UNION ALL BY NAME SELECT * FROM {arriving})""")
        con.execute(f"""DELETE FROM stage.customer_records
                        WHERE (source, source_customer_id) IN (SELECT source, source_customer_id FROM latest_records);
                        INSERT INTO stage.customer_records {_records_sql(settings)}""")
        return True

    definition = _newest_record_sql("lake") + _records_sql(settings)
    return _stage_incrementally(con, settings, "customer_record", "customer_records", definition, rebuild, merge)


def _several_loads(relation: str) -> str:
    """SQL: whether ``relation`` holds rows of more than one load.  A validated file holds each
    key once (the suites' uniqueness expectations quarantine the repeats), so only rows of
    different loads can share a key."""
    return f"(SELECT min(_load_id) <> max(_load_id) FROM {relation})"


def _newest_sql(relation: str, key: str, columns: str) -> str:
    """One row per (source, key) of ``relation``: the version from the newest load (a re-export
    carries the latest state), the last row of that file on a tie.  Only the keys that occur
    more than once go through the window (sorting every row was most of the time), and keys are
    counted only when the rows come from several loads (the 23M events of one file: 20 s
    counted, 15 to 18 s not, on a slow day).  ``versions`` is read where it is used rather than
    materialised (23M events: 16 s materialised, 11 s not)."""
    return f"""
        WITH versions AS NOT MATERIALIZED (SELECT source, {key}, {columns}, _file, _row, _load_id FROM {relation}),
             repeated AS (SELECT source, {key} FROM versions WHERE {_several_loads('versions')}
                          GROUP BY ALL HAVING count(*) > 1)
        SELECT * FROM versions ANTI JOIN repeated USING (source, {key})
        UNION ALL
        SELECT * FROM (SELECT * FROM versions SEMI JOIN repeated USING (source, {key})
                       QUALIFY row_number() OVER (PARTITION BY source, {key} ORDER BY _load_id DESC, _row DESC) = 1)"""


def _lake_files(settings: Settings, entity: str) -> dict[str, tuple[int, int]]:
    """The entity's validated Parquet files: path inside the lake -> (bytes, modified ns).  Paths
    are recorded relative to the lake, so a data directory moved or copied with its files'
    times (``cp -a``, ``rsync -a``) keeps staging incrementally."""
    files = {}
    for path in _valid_files(settings, entity):
        stat = path.stat()
        files[path.relative_to(settings.lake).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return files


def _stage_incrementally(con: duckdb.DuckDBPyConnection, settings: Settings, entity: str, table: str,
                         definition: str, rebuild: Callable[[str], None], merge: Callable[[str], bool]) -> str:
    """``stage.<table>`` as ``rebuild`` builds it from a relation of the entity's whole validated
    lake, reading only what changed in the lake since it was last staged (recorded in
    ``stage.staged_files`` with ``definition``, the table's SQL in this code):

    - no file added, changed or removed: the table is kept (``"kept"``);
    - files only added: ``merge`` folds the relation of those files into the table, or declines
      (``"merged"``);
    - anything else (a full rebuild's new lake, an erasure rewriting a file, a new definition of
      the table), or a declined merge: the table is built from the whole lake (``"rebuilt"``).
    """
    definition = hashlib.sha256(definition.encode()).hexdigest()[:16]
    now = _lake_files(settings, entity)
    staged = {path: (size, modified) for path, size, modified in con.execute(
        "SELECT path, bytes, modified_ns FROM stage.staged_files WHERE \"table\" = ? AND definition = ?",
        [table, definition]).fetchall()}
    added = sorted(set(now) - set(staged))
    unchanged = bool(staged) and all(now.get(path) == state for path, state in staged.items())
    how = "rebuilt"
    if unchanged and not added:
        how = "kept"
    elif unchanged and merge(dialect.read_parquet([settings.lake / p for p in added])):
        how = "merged"
    if how == "rebuilt":
        rebuild(_register_lake(con, settings, entity))
    con.execute("DELETE FROM stage.staged_files WHERE \"table\" = ?", [table])
    if now:
        con.executemany("INSERT INTO stage.staged_files VALUES (?, ?, ?, ?, ?)",
                        [(table, definition, path, size, modified) for path, (size, modified) in sorted(now.items())])
    return how


def _stage_by_newest_load(con: duckdb.DuckDBPyConnection, settings: Settings, entity: str, table: str, key: str,
                          build: Callable[[str], str]) -> str:
    """:func:`_stage_incrementally` for a table that ``build`` (a query over a relation of the
    entity's rows) makes per (source, key) from that key's rows of the newest load holding it:
    added files, all from loads newer than every staged row, replace the staged rows of the keys
    they hold with what they build (a newer load wins, as in a full build)."""
    def rebuild(lake: str) -> None:
        con.execute(f"CREATE OR REPLACE TABLE stage.{table} AS {build(lake)}")

    def merge(arriving: str) -> bool:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table}_arriving AS {build(arriving)}")
        newer = con.execute(f"SELECT coalesce((SELECT min(_load_id) FROM {table}_arriving) > "
                            f"(SELECT max(_load_id) FROM stage.{table}), true)").fetchone()[0]
        if newer:
            con.execute(f"""
                DELETE FROM stage.{table} WHERE (source, {key}) IN (SELECT source, {key} FROM {table}_arriving);
                INSERT INTO stage.{table} SELECT * FROM {table}_arriving""")
        con.execute(f"DROP TABLE {table}_arriving")
        return newer

    return _stage_incrementally(con, settings, entity, table, build("lake"), rebuild, merge)


def _order_lines_sql(relation: str) -> str:
    """Per order, the lines of its newest load holding lines, one per line_no (the last row of
    that file).  A validated file holds each (order_id, line_no) once (:func:`_several_loads`),
    so the lines of an order that only one load holds are kept as they are; only orders with
    lines in several loads go through the windows (8.9M lines at 1M customers: 10 s windowed,
    6 s so, on a slow day).  Both windows share one partition (one pass): in (line_no, newest
    load, last row) order the first row of each line_no is its newest version, kept if it is of
    the newest load."""
    columns = ("source, order_id, line_no, sku, category, quantity, CAST(unit_price AS DECIMAL(18, 2)) AS unit_price, "
               "attributes, _file, _row, _load_id")
    return f"""
        WITH lines AS NOT MATERIALIZED (SELECT * FROM {relation}),
             reloaded AS (SELECT source, order_id FROM lines WHERE {_several_loads('lines')}
                          GROUP BY ALL HAVING min(_load_id) <> max(_load_id))
        SELECT {columns} FROM lines ANTI JOIN reloaded USING (source, order_id)
        UNION ALL
        SELECT {columns}
        FROM (SELECT *, max(_load_id) OVER (PARTITION BY source, order_id) AS order_load,
                     lag(line_no) OVER (PARTITION BY source, order_id ORDER BY line_no, _load_id DESC, _row DESC)
                         AS line_before
              FROM lines SEMI JOIN reloaded USING (source, order_id))
        WHERE _load_id = order_load AND line_before IS DISTINCT FROM line_no"""


def _stage_orders(con: duckdb.DuckDBPyConnection, settings: Settings, result: StageResult) -> None:
    result.incremental["orders"] = _stage_by_newest_load(
        con, settings, "order", "order_versions", "order_id", lambda lake: _newest_sql(lake, "order_id", ORDER_COLUMNS))
    _drop_cross_source_copies(con)
    result.incremental["order_lines"] = _stage_by_newest_load(
        con, settings, "order_line", "order_lines", "order_id", _order_lines_sql)


def _drop_cross_source_copies(con: duckdb.DuckDBPyConnection) -> None:
    """One order arriving through two sources (a store receipt for a marketplace order picked up
    in the store names it in ``origin_source``/``origin_order_id``) is kept once: from the source
    first in ``order_source_precedence`` (warehouse/identity.yaml).  The copies set aside are
    listed in ``stage.order_copies`` with the order kept."""
    precedence = load_identity_config()["order_source_precedence"]
    ranks = ", ".join(f"({dialect.quote(s)}, {i})" for i, s in enumerate(precedence))
    # Only orders naming an origin, and the orders they name, can be copies or have one: the
    # window ranks those few instead of all orders (4.5M at 1M customers: 2.1 to 2.6 s, now 0.1 s).
    con.execute(f"""
        CREATE OR REPLACE TABLE stage.order_copies AS
        WITH named AS (SELECT * FROM stage.order_versions WHERE origin_source IS NOT NULL OR origin_order_id IS NOT NULL),
             paired AS (SELECT * FROM named
                        UNION ALL
                        SELECT * FROM stage.order_versions
                        WHERE origin_source IS NULL AND origin_order_id IS NULL
                          AND (source, order_id) IN (SELECT coalesce(origin_source, source),
                                                            coalesce(origin_order_id, order_id) FROM named))
        SELECT * FROM (
            SELECT o.source, o.order_id,
                   first_value(o.source) OVER w AS kept_source, first_value(o.order_id) OVER w AS kept_order_id
            FROM paired o LEFT JOIN (VALUES {ranks}) AS p(source, rank) USING (source)
            WINDOW w AS (PARTITION BY coalesce(o.origin_source, o.source), coalesce(o.origin_order_id, o.order_id)
                         ORDER BY coalesce(p.rank, {len(precedence)}), o.source, o.order_id))
        WHERE (source, order_id) <> (kept_source, kept_order_id) ORDER BY ALL""")
    if con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()"
                   " AND schema_name = 'stage' AND table_name = 'orders'").fetchone()[0]:
        con.execute("DROP TABLE stage.orders")  # a table before order versions were staged incrementally
    con.execute("""CREATE OR REPLACE VIEW stage.orders AS
                   SELECT * FROM stage.order_versions ANTI JOIN stage.order_copies USING (source, order_id)""")


def stage(con: duckdb.DuckDBPyConnection, settings: Settings) -> StageResult:
    """The staging tables of the whole validated lake (idempotent), reading only the files added
    since they were last staged."""
    result = StageResult()
    con.execute("BEGIN")
    result.incremental["customer_records"] = _stage_customer_records(con, settings)
    _stage_orders(con, settings, result)
    failpoint("stage")
    result.incremental["events"] = _stage_by_newest_load(con, settings, "event", "events", "event_id", _events_sql)
    result.incremental["interactions"] = _stage_by_newest_load(
        con, settings, "interaction", "interactions", "interaction_id",
        lambda lake: _newest_sql(lake, "interaction_id", INTERACTION_COLUMNS))
    con.execute("COMMIT")
    for table in ("customer_records", "orders", "order_lines", "events", "interactions"):
        result.rows[table] = con.execute(f"SELECT count(*) FROM stage.{table}").fetchall()[0][0]
    result.order_copies = con.execute("SELECT count(*) FROM stage.order_copies").fetchall()[0][0]
    return result

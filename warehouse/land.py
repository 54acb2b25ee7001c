"""Land: read new source files through their connectors into raw Parquet, with a manifest.

Every file under ``<inbox>/<connector>/`` that a connector claims is checksummed; the checksum
of a file whose size and modification time are those it had when last hashed is taken from
``ops.inbox_checksums`` (the inbox keeps every delivery, so each night would otherwise read
them all again: 4.6 GB at 1M customers).  A file whose bytes were landed before (a
re-delivery, even under another name) is recorded as ``duplicate`` and skipped; a file the
connector cannot read at all is recorded as ``failed`` with the reason.
Each (file, entity) the connector produces becomes one immutable Parquet file in the lake and
one ``landed`` row in ``ops.loads``, waiting for validation.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sources.errors import SourceError
from sources.parts import PartsAbandoned
from sources.sdk import Connector, discover
from warehouse.faults import failpoint
from warehouse.settings import Settings

log = logging.getLogger(__name__)

# What land adds to every row of the lake: the connector, the inbox file and the manifest row.
LAKE_COLUMNS = [("source", pa.string()), ("_file", pa.string()), ("_load_id", pa.int64())]


@dataclass
class LandResult:
    files_seen: int = 0
    files_landed: int = 0
    duplicates: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rows_landed: int = 0

    @property
    def row_count(self) -> int:
        return self.rows_landed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record(con: duckdb.DuckDBPyConnection, run_id: str, source: str, file: str, checksum: str, size: int,
            entity: str | None, status: str, rows_in: int, lake_path: str | None = None,
            message: str | None = None) -> int:
    load_id = con.execute("SELECT nextval('ops.load_ids')").fetchone()[0]
    con.execute(
        "INSERT INTO ops.loads (load_id, run_id, source, file, checksum, bytes, entity, status, rows_in,"
        " lake_path, message, landed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [load_id, run_id, source, file, checksum, size, entity, status, rows_in, lake_path, message])
    return load_id


def _land_file(con: duckdb.DuckDBPyConnection, settings: Settings, run_id: str, connector: Connector,
               path: Path, checksum: str, result: LandResult) -> None:
    relative = str(path.relative_to(settings.inbox))
    size = path.stat().st_size
    earlier = con.execute("SELECT file FROM ops.loads WHERE checksum = ? AND status NOT IN ('failed', 'superseded')"
                          " LIMIT 1",
                          [checksum]).fetchone()
    if earlier:
        log.info("skipping %s: same bytes as %s, landed before", relative, earlier[0])
        _record(con, run_id, connector.name, relative, checksum, size, None, "duplicate", 0,
                message=f"same bytes as {earlier[0]}; skipped")
        result.duplicates.append(relative)
        return
    ctx = connector.context(settings.timezone)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-write") as writing:
        lake_files = _LakeFiles(con, settings, run_id, connector.name, relative, checksum, size, writing)
        try:
            try:
                for tables in connector.read_in_parts(path, ctx, settings.land_part_bytes):
                    lake_files.write(tables)
            except PartsAbandoned as exc:
                log.warning("%s is landed read whole: its parts cannot stand (%s)", relative, exc)
                lake_files.discard()
                lake_files.write(connector.read(path, ctx))
        except SourceError as exc:
            lake_files.discard()
            log.error("cannot read %s: %s", relative, exc)
            _record(con, run_id, connector.name, relative, checksum, size, None, "failed", 0, message=str(exc))
            result.failures.append(str(exc))
            return
        result.rows_landed += lake_files.close()
    result.files_landed += 1


class _LakeFiles:
    """The lake files one inbox file is landed into, one per entity, written a part at a time,
    each with its ``landed`` row in ops.loads.

    A part is written on the ``writing`` thread while the main thread takes the next from the
    readers (the Parquet writer releases the GIL); the main thread used to write each part itself
    and only then wait for the next (docs/performance-history.md, "Lake parts written on a
    thread").  One part is written at a time, so memory holds one part more than before."""

    def __init__(self, con: duckdb.DuckDBPyConnection, settings: Settings, run_id: str, source: str,
                 relative: str, checksum: str, size: int, writing: ThreadPoolExecutor) -> None:
        self.con, self.settings, self.run_id = con, settings, run_id
        self.source, self.relative, self.checksum, self.size = source, relative, checksum, size
        self.loads: dict[str, tuple[int, Path, pq.ParquetWriter]] = {}  # entity -> (load id, lake file, writer)
        self.rows: dict[str, int] = {}
        self.writing = writing
        self.written: Future | None = None  # the part being written

    def write(self, tables: dict[str, pa.Table]) -> None:
        """Hand the part's tables (one per entity) to the writing thread together, once the part
        before them is written."""
        writes = []
        for entity, table in tables.items():
            if entity not in self.loads:
                lake_path = self.settings.lake / "raw" / self.source / entity / f"{self.checksum[:20]}.parquet"
                load_id = _record(self.con, self.run_id, self.source, self.relative, self.checksum, self.size,
                                  entity, "landed", 0, lake_path=str(lake_path))
                lake_path.parent.mkdir(parents=True, exist_ok=True)
                lake_path.unlink(missing_ok=True)  # never write through a link to a validated file
                writer = pq.ParquetWriter(lake_path, lake_schema(table.schema),
                                          use_dictionary=_repetitive_columns(table))
                self.loads[entity] = (load_id, lake_path, writer)
                self.rows[entity] = 0
            load_id, _, writer = self.loads[entity]
            n = table.num_rows
            if not n:
                continue
            values = (pa.scalar(self.source), pa.scalar(self.relative), pa.scalar(load_id, pa.int64()))
            writes.append((writer, pa.Table.from_arrays([*table.columns, *(pa.repeat(v, n) for v in values)],
                                                        schema=writer.schema)))
            self.rows[entity] += n
        if writes:
            self._written()
            self.written = self.writing.submit(_write_all, writes)

    def _written(self) -> None:
        """Wait for the part being written; its writer's error, if any, is raised here."""
        written, self.written = self.written, None
        if written is not None:
            written.result()

    def discard(self) -> None:
        """Forget what was written: the files and their manifest rows."""
        with contextlib.suppress(Exception):  # a write that failed: its file goes too
            self._written()
        for load_id, lake_path, writer in self.loads.values():
            writer.close()
            lake_path.unlink()
            self.con.execute("DELETE FROM ops.loads WHERE load_id = ?", [load_id])
        self.loads.clear()
        self.rows.clear()

    def close(self) -> int:
        """Finish the files and record their row counts; returns the rows landed."""
        self._written()
        for entity, (load_id, _, writer) in self.loads.items():
            writer.close()
            self.con.execute("UPDATE ops.loads SET rows_in = ? WHERE load_id = ?", [self.rows[entity], load_id])
            failpoint("land")
        return sum(self.rows.values())


def _write_all(writes: list[tuple[pq.ParquetWriter, pa.Table]]) -> None:
    for writer, rows in writes:
        writer.write_table(rows)


def _repetitive_columns(table: pa.Table) -> list[str]:
    """The columns worth a dictionary in the lake file: those whose first part holds at most one
    distinct value in two rows, and the bookkeeping columns.  A dictionary tried on a column of
    unique ids (event ids, sessions) is dropped again, and cost a third of the write."""
    half = table.num_rows // 2
    return [*(name for name in table.column_names
              if pc.count_distinct(table.column(name), mode="all").as_py() <= half),
            *(name for name, _ in LAKE_COLUMNS)]


def lake_schema(schema: pa.Schema) -> pa.Schema:
    """An entity's schema with the lake's bookkeeping columns."""
    for name, kind in LAKE_COLUMNS:
        schema = schema.append(pa.field(name, kind))
    return schema


def land(con: duckdb.DuckDBPyConnection, settings: Settings, run_id: str,
         connectors: dict[str, Connector] | None = None) -> LandResult:
    """Land every new file of every connector (default: all discovered), in sorted order so
    runs are reproducible."""
    result = LandResult()
    files = [(connector, path) for name, connector in (connectors or discover()).items()
             if (settings.inbox / name).is_dir()
             for path in sorted(p for p in (settings.inbox / name).rglob("*") if p.is_file())
             if connector.readers_for(path.name)]
    known = {file: (size, modified, checksum) for file, size, modified, checksum
             in con.execute("SELECT file, bytes, modified_ns, checksum FROM ops.inbox_checksums").fetchall()}
    # The checksums are computed ahead on a thread (hashlib and file reads release the GIL), so
    # hashing a large file (2.4 s for the 3.4 GB event file at 1M customers) overlaps landing
    # the files before it.
    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checksum")
    try:
        checksums = []
        for _, path in files:
            file, stat = str(path.relative_to(settings.inbox)), path.stat()
            size, modified, checksum = known.get(file, (None, None, None))
            if (size, modified) == (stat.st_size, stat.st_mtime_ns):
                checksums.append((file, stat, _done(checksum)))
            else:
                checksums.append((file, stat, hashing.submit(_sha256, path)))
        for (connector, path), (file, stat, checksum) in zip(files, checksums):
            result.files_seen += 1
            con.execute("BEGIN")
            # The size and time seen before hashing: a file changed while being hashed is hashed again.
            con.execute("INSERT OR REPLACE INTO ops.inbox_checksums VALUES (?, ?, ?, ?)",
                        [file, stat.st_size, stat.st_mtime_ns, checksum.result()])
            _land_file(con, settings, run_id, connector, path, checksum.result(), result)
            con.execute("COMMIT")
    finally:
        hashing.shutdown(cancel_futures=True)
    return result


def _done(value: str) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def forget_lake(con: duckdb.DuckDBPyConnection, settings: Settings) -> int:
    """For a full rebuild: mark every landed file superseded and delete the lake, so the next
    land reads every inbox file again.  Customer ids and published history are kept."""
    forgotten = con.execute("UPDATE ops.loads SET status = 'superseded' WHERE status <> 'superseded'"
                            " RETURNING load_id").fetchall()
    con.execute("DELETE FROM ops.inbox_checksums")  # every file is read again
    shutil.rmtree(settings.lake, ignore_errors=True)
    log.info("full rebuild: %d manifest rows superseded, lake cleared", len(forgotten))
    return len(forgotten)

"""The run ledger (ops.runs) and the lock that keeps two runs off one data directory."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

import duckdb

from warehouse.errors import RunLockedError
from warehouse.settings import Settings


@dataclass
class RunRecord:
    run_id: str
    as_of: date
    status: str = "running"
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)  # process CPU (all threads); not stored
    stage_peak_rss_mib: dict[str, float] = field(default_factory=dict)  # the process's peak so far; not stored
    row_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def params(self) -> list:
        return [self.run_id, self.as_of, self.status, json.dumps(self.stage_seconds),
                json.dumps(self.row_counts), json.dumps(self.warnings, ensure_ascii=False), self.error]


def start_run(con: duckdb.DuckDBPyConnection, record: RunRecord) -> None:
    """Record the run as running.  Runs still marked running were killed (we hold the lock, so
    none is alive): they are marked failed first."""
    con.execute("""UPDATE ops.runs SET status = 'failed', finished_at = now(),
                   error = 'interrupted: the process ended before the run finished'
                   WHERE status = 'running'""")
    con.execute("INSERT INTO ops.runs (run_id, as_of, started_at, status) VALUES (?, ?, now(), 'running')",
                [record.run_id, record.as_of])


def finish_run(con: duckdb.DuckDBPyConnection, record: RunRecord) -> None:
    con.execute("""UPDATE ops.runs SET finished_at = now(), status = ?3, stage_seconds = ?4, row_counts = ?5,
                   warnings = ?6, error = ?7 WHERE run_id = ?1 AND as_of = ?2""", record.params())


@contextmanager
def run_lock(settings: Settings) -> Iterator[None]:
    """Hold an exclusive lock on the data directory for the whole run, or refuse to start."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / ".run.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunLockedError("run", f"another run is in progress on {settings.data_dir} (held by {holder})",
                             "wait for it to finish; the nightly deployment never overlaps runs") from None
    try:
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()

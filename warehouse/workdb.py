"""The pipeline's working DuckDB file: opened once per stage, schema created on first use."""

from __future__ import annotations

from importlib.resources import files

import duckdb

from warehouse import dialect
from warehouse.settings import Settings


def open_work_db(settings: Settings) -> duckdb.DuckDBPyConnection:
    moved = settings.ensure_restricted()
    settings.spill.mkdir(exist_ok=True)
    con = dialect.connect(settings.work_db, settings.memory_limit, temp_dir=settings.spill)
    con.execute(files("warehouse").joinpath("sql/work_schema.sql").read_text(encoding="utf-8"))
    for old, new in moved:  # the manifest names lake files by path
        con.execute("UPDATE ops.loads SET lake_path = ? || substr(lake_path, ?) WHERE starts_with(lake_path, ?)",
                    [str(new), len(str(old)) + 1, str(old)])
    return con


def staged_files(con: duckdb.DuckDBPyConnection, table: str, catalog: str = "") -> list[str]:
    """The lake files ``stage.<table>`` was staged from (``stage.staged_files``), each as its
    staging definition, path, size and time.  What was built from the table keeps them: while
    they are all still staged so, the table was only added to since (a new definition, a changed
    or removed file, or a full rebuild restages it whole, under the same loads).  ``catalog``: the
    work file's name where it is attached to another file."""
    prefix = f"{catalog}." if catalog else ""
    return con.execute(f"""SELECT coalesce(list(definition || ' ' || path || ' ' || bytes || ' ' || modified_ns), [])
                           FROM {prefix}stage.staged_files WHERE "table" = ?""", [table]).fetchone()[0]

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

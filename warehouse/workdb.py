"""The pipeline's working DuckDB file: opened once per stage, schema created on first use."""

from __future__ import annotations

from importlib.resources import files

import duckdb

from warehouse import dialect
from warehouse.settings import Settings


def open_work_db(settings: Settings) -> duckdb.DuckDBPyConnection:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "tmp").mkdir(exist_ok=True)
    con = dialect.connect(settings.work_db, settings.memory_limit, temp_dir=settings.data_dir / "tmp")
    con.execute(files("warehouse").joinpath("sql/work_schema.sql").read_text(encoding="utf-8"))
    return con

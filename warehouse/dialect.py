"""Everything DuckDB-specific the stages need, in one place (a Spark backend would add a twin).

Stages build their SQL from sqlglot expressions or from the helpers here; they never call
DuckDB-only functions directly.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

NAME = "duckdb"


def connect(path: Path | str, memory_limit: str = "4GB", read_only: bool = False,
            temp_dir: Path | None = None) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file with a memory limit; larger work spills to ``temp_dir``."""
    con = duckdb.connect(str(path), read_only=read_only)
    if not read_only:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        if temp_dir is not None:
            con.execute(f"SET temp_directory = '{temp_dir}'")
    con.execute("SET TimeZone = 'UTC'")
    return con


MEMORY_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
                "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def memory_bytes(limit: str) -> int | None:
    """A DuckDB memory limit such as ``2GB`` or ``512MiB`` in bytes; None when it is not of that form."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*", limit.lower())
    if match is None or match.group(2) not in MEMORY_UNITS:
        return None
    return int(float(match.group(1)) * MEMORY_UNITS[match.group(2)])


def memory_share(limit: str, share: float) -> str:
    """``share`` of a DuckDB memory limit such as ``2GB`` or ``512MiB``, as a limit DuckDB
    accepts; the limit itself when it is not of that form."""
    size = memory_bytes(limit)
    return limit if size is None else f"{int(size * share)}B"


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def quote_identifier(name: str) -> str:
    """A SQL identifier (a column name from a suite or an export)."""
    return '"' + name.replace('"', '""') + '"'


def key_sql(columns: list[str]) -> tuple[str, str, str]:
    """A key of one or more columns in SQL: the column list (for GROUP BY or PARTITION BY), the
    condition that every part is present, and the key shown as text (``a|b``)."""
    quoted = [quote_identifier(c) for c in columns]
    return (", ".join(quoted), " AND ".join(f"{q} IS NOT NULL" for q in quoted),
            " || '|' || ".join(f"CAST({q} AS VARCHAR)" for q in quoted))


def is_in(column_sql: str, values: list[str] | tuple[str, ...], negate: bool = False) -> str:
    """``column IN ('a', 'b')`` (or NOT IN); an empty list is FALSE (or TRUE), never ``IN (NULL)``."""
    if not values:
        return "TRUE" if negate else "FALSE"
    listed = ", ".join(quote(v) for v in values)
    return f"{column_sql} {'NOT IN' if negate else 'IN'} ({listed})"


def read_parquet(paths: list[Path] | Path | str, union_by_name: bool = True) -> str:
    """A table function reading Parquet files (a glob, or an explicit list)."""
    if isinstance(paths, list):
        listed = ", ".join(quote(str(p)) for p in paths)
        return f"read_parquet([{listed}], union_by_name = {str(union_by_name).lower()})"
    return f"read_parquet({quote(str(paths))}, union_by_name = {str(union_by_name).lower()})"


def local_date(timestamp_sql: str, timezone: str) -> str:
    """The business-time-zone calendar date of a UTC timestamp with time zone."""
    return f"CAST(timezone({quote(timezone)}, {timestamp_sql}) AS DATE)"


def age_years(birth_date_sql: str, day_sql: str) -> str:
    """Completed years of age on ``day`` (a birthday counts from that day on)."""
    return f"date_part('year', age({day_sql}, {birth_date_sql}))"


def days_between(earlier_sql: str, later_sql: str) -> str:
    return f"date_diff('day', {earlier_sql}, {later_sql})"


def attach(con: duckdb.DuckDBPyConnection, path: Path, alias: str, read_only: bool = True) -> None:
    mode = " (READ_ONLY)" if read_only else ""
    con.execute(f"ATTACH {quote(str(path))} AS {alias}{mode}")

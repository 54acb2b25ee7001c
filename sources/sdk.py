"""The small SDK every connector shares: declarations, vectorised parsers, the registry.

A connector is a folder ``sources/<name>/`` whose ``__init__.py`` exposes ``CONNECTOR``::

    CONNECTOR = Connector(
        name="web",
        description="Web shop: registrations, click events and online orders (JSON Lines, UTC).",
        streams=(Stream("customer_record", key=("source_customer_id",), cursor="updated_at"),),
        files=(FileReader("users*.jsonl", read_users),),
    )

Readers take a path and a :class:`ReadContext` and return ``{entity: pandas.DataFrame}``
with canonical column names; :func:`to_entity_table` turns each frame into an Arrow table of
the entity's schema.  Values that do not parse become NULL and the row's ``_errors`` column
says which field held what, so validation can quarantine the row instead of losing it.
Sources never import Prefect.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from sources.entities import ENTITIES
from sources.errors import SourceError

ENTRY_POINT_GROUP = "tagwright.sources"


@dataclass(frozen=True)
class ReadContext:
    """What a reader may know about the run: the business time zone and connector options."""

    timezone: str = "Asia/Shanghai"
    options: dict = field(default_factory=dict)


Reader = Callable[[Path, ReadContext], dict[str, pd.DataFrame]]


@dataclass(frozen=True)
class Stream:
    """One canonical entity a connector produces, with its primary key and cursor."""

    entity: str
    key: tuple[str, ...]
    cursor: str | None = None


@dataclass(frozen=True)
class FileReader:
    """Files matching ``pattern`` (relative to the connector's inbox folder) go to ``read``."""

    pattern: str
    read: Reader


@dataclass(frozen=True)
class Connector:
    name: str
    description: str
    streams: tuple[Stream, ...]
    files: tuple[FileReader, ...]
    encoding: str = "utf-8"

    def reader_for(self, relative_path: str) -> Reader | None:
        """The reader whose pattern matches the file, or None if the file is not ours."""
        for spec in self.files:
            if fnmatch.fnmatch(Path(relative_path).name, spec.pattern):
                return spec.read
        return None

    def stream(self, entity: str) -> Stream:
        for stream in self.streams:
            if stream.entity == entity:
                return stream
        raise KeyError(f"connector {self.name!r} declares no stream for entity {entity!r}")


class RowErrors:
    """Collects per-row parse problems; ``column()`` gives the ``_errors`` values (NULL if none)."""

    def __init__(self, n_rows: int) -> None:
        self._messages: list[pd.Series] = []
        self._n = n_rows

    def add(self, bad: pd.Series, field_name: str, raw: pd.Series, expected: str) -> None:
        if bad.any():
            text = field_name + ": cannot read " + raw.astype(str).map(repr) + f" as {expected}"
            self._messages.append(text.where(bad))

    def column(self) -> pd.Series:
        if not self._messages:
            return pd.Series([None] * self._n, dtype="object")
        joined = pd.concat(self._messages, axis=1).apply(
            lambda row: "; ".join(m for m in row if isinstance(m, str)) or None, axis=1
        )
        return joined.astype("object")


def _present(raw: pd.Series) -> pd.Series:
    return raw.notna() & (raw.astype("string").str.strip() != "")


def parse_timestamp(
    raw: pd.Series, field_name: str, errors: RowErrors, fmt: str | None = None, tz: str = "UTC"
) -> pd.Series:
    """Parse text to UTC timestamps; naive values are read in ``tz`` (the source's local zone)."""
    text = raw.astype("string").str.strip()
    parsed = pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce", utc=False)
    if getattr(parsed.dt, "tz", None) is None:
        parsed = parsed.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    parsed = parsed.dt.tz_convert("UTC")
    errors.add(_present(raw) & parsed.isna(), field_name, raw, f"a timestamp ({fmt or 'ISO 8601'})")
    return parsed


def parse_date(raw: pd.Series, field_name: str, errors: RowErrors, fmt: str | None = None) -> pd.Series:
    text = raw.astype("string").str.strip()
    parsed = pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce")
    errors.add(_present(raw) & parsed.isna(), field_name, raw, f"a date ({fmt or 'YYYY-MM-DD'})")
    return parsed.dt.date


_MONEY_NOISE = r"[¥￥$,，\s]|RMB|CNY"


def parse_number(raw: pd.Series, field_name: str, errors: RowErrors) -> pd.Series:
    """Numbers, tolerating currency symbols and thousands separators (¥1,299.00)."""
    text = raw.astype("string").str.replace(_MONEY_NOISE, "", regex=True)
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    errors.add(_present(raw) & parsed.isna(), field_name, raw, "a number")
    return parsed


def parse_flag(
    raw: pd.Series, field_name: str, errors: RowErrors, true: Iterable[str], false: Iterable[str]
) -> pd.Series:
    text = raw.astype("string").str.strip().str.lower()
    true_set, false_set = {t.lower() for t in true}, {f.lower() for f in false}
    result = pd.Series(np.where(text.isin(true_set), True, np.where(text.isin(false_set), False, None)),
                       index=raw.index, dtype="object")
    allowed = "/".join(sorted(true_set | false_set))
    errors.add(_present(raw) & result.isna(), field_name, raw, f"one of {allowed}")
    return result


def clean_text(raw: pd.Series) -> pd.Series:
    """Strip whitespace; empty text becomes NULL."""
    text = raw.astype("string").str.strip()
    return text.mask(text == "").astype("object")


def to_entity_table(entity: str, frame: pd.DataFrame, errors: RowErrors | None = None,
                    extra: pd.DataFrame | None = None) -> pa.Table:
    """Build the entity's Arrow table: canonical columns in order, missing ones NULL,
    ``extra`` columns packed into ``attributes`` JSON."""
    schema = ENTITIES[entity]
    n = len(frame)
    frame = frame.reset_index(drop=True)
    if errors is not None:
        frame["_errors"] = errors.column().to_numpy()
    if extra is not None and not extra.empty:
        extra = extra.reset_index(drop=True).astype("object").where(extra.notna(), None)
        frame["attributes"] = [json.dumps(r, ensure_ascii=False, default=str) for r in extra.to_dict("records")]
    arrays = []
    for f in schema:
        if f.name in frame.columns:
            values = frame[f.name].astype("object").where(frame[f.name].notna(), None)
            arrays.append(pa.array(values.tolist(), type=f.type, from_pandas=True))
        else:
            arrays.append(pa.nulls(n, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def read_csv_text(path: Path, encoding: str, **kwargs) -> pd.DataFrame:
    """Read a CSV as text columns, naming the file and byte offset if it does not decode."""
    try:
        return pd.read_csv(path, encoding=encoding, dtype=str, keep_default_na=False,
                           na_values=[""], skipinitialspace=False, **kwargs)
    except UnicodeDecodeError as exc:
        raise SourceError(path, f"bytes at offset {exc.start} are not valid {encoding}",
                          fix=f"re-export the file as {encoding} or set the connector's encoding") from exc
    except pd.errors.EmptyDataError as exc:
        raise SourceError(path, "the file is empty (no header row)",
                          fix="re-deliver the export; an empty file carries no columns") from exc


def csv_row_numbers(frame: pd.DataFrame) -> pd.Series:
    """1-based line numbers of data rows in a CSV with one header line."""
    return pd.Series(np.arange(len(frame), dtype="int64") + 2)


def require_columns(path: Path, frame: pd.DataFrame, required: Iterable[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SourceError(path, f"missing required column(s) {missing}; found {list(frame.columns)}",
                          fix="re-export with the standard column set or update the connector's mapping")


def discover() -> dict[str, Connector]:
    """Built-in connectors (every ``sources/<name>/`` exposing CONNECTOR) plus installed ones
    registered under the ``tagwright.sources`` entry point group."""
    import sources

    found: dict[str, Connector] = {}
    for module in pkgutil.iter_modules(sources.__path__):
        if not module.ispkg:
            continue
        connector = getattr(importlib.import_module(f"sources.{module.name}"), "CONNECTOR", None)
        if isinstance(connector, Connector):
            found[connector.name] = connector
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        connector = ep.load()
        found[connector.name] = connector
    return dict(sorted(found.items()))

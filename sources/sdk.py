"""The small SDK every connector shares: declarations, vectorised parsers, the registry.

A connector is a folder ``sources/<name>/`` with a ``mapping.yaml`` (sources/mapping.py) or an
``__init__.py`` exposing ``CONNECTOR``::

    CONNECTOR = Connector(
        name="web",
        description="Web shop: registrations, click events and online orders (JSON Lines, UTC).",
        streams=(Stream("customer_record", key=("source_customer_id",), cursor="updated_at"),),
        files=(FileReader("users*.jsonl", read_users),),
    )

Readers take a path and a :class:`ReadContext` and return ``{entity: pyarrow.Table}``:
:func:`read_export` reads the file as text (whole-file problems raise SourceError),
:func:`enforce_contract` applies the schema contract, the ``parse_*`` helpers convert
columns, and :func:`to_entity_table` builds the entity's Arrow table.  Values that do not
parse become NULL and the row's ``_errors`` column says which field held what, so validation
quarantines the row instead of losing it.  Sources never import Prefect.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from sources.entities import ENTITIES
from sources.errors import SourceError
from sources.csv_read import ends_in_newline, read_csv
from sources.jsonl import read_jsonl
from sources.parts import Part, csv_parts, jsonl_parts

ENTRY_POINT_GROUP = "tagwright.sources"
CONTRACT_MODES = ("evolve", "freeze", "discard_row")
PARTS_AHEAD = 2  # parts of a large file being read at once (one core each)


@dataclass(frozen=True)
class ReadContext:
    """What a reader may know about the run: the business time zone, the connector's schema
    contract mode and its options (config and secrets resolved by name, never in code)."""

    timezone: str = "Asia/Shanghai"
    contract: str = "evolve"
    options: dict = field(default_factory=dict)
    part: "Part | None" = None  # set when a large file is read in parts (pass it to read_export)


Reader = Callable[[Path, ReadContext], dict[str, pa.Table]]


@dataclass(frozen=True)
class Stream:
    """One canonical entity a connector produces, with its primary key and cursor."""

    entity: str
    key: tuple[str, ...]
    cursor: str | None = None


@dataclass(frozen=True)
class FileReader:
    """Files matching ``pattern`` go to ``read``.  ``columns`` are the export's columns under
    the schema contract (``required`` ones must be present; ``typed`` ones are parsed as
    dates, numbers or flags), as the conformance suite checks."""

    pattern: str
    read: Reader
    format: str = "csv"
    columns: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    typed: tuple[str, ...] = ()
    # The reader passes ctx.part to read_export and groups rows only by ``group_by`` columns
    # (each line gives its own rows, or the lines of one receipt one order): a large JSON Lines
    # or CSV file is then read part by part, in bounded memory (sources/parts.py).
    in_parts: bool = False
    group_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Connector:
    """A source: what it produces (streams), which files it reads and how, its encoding and
    schema contract (evolve: new columns go to attributes; freeze: a new or missing column
    fails the file; discard_row: rows with values in unknown columns are quarantined)."""

    name: str
    description: str
    streams: tuple[Stream, ...]
    files: tuple[FileReader, ...]
    encoding: str = "utf-8"
    contract: str = "evolve"
    options: tuple[str, ...] = ()  # names of settings it reads from TAGWRIGHT_SOURCE_<NAME>_<OPTION>
    folder: Path | None = None      # where the connector lives (README, mapping, samples)

    def __post_init__(self) -> None:
        if self.contract not in CONTRACT_MODES:
            raise ValueError(f"connector {self.name!r}: contract {self.contract!r} is not one of {CONTRACT_MODES}")
        for stream in self.streams:
            if stream.entity not in ENTITIES:
                raise ValueError(f"connector {self.name!r}: entity {stream.entity!r} is not one of {list(ENTITIES)}")
            missing = [k for k in stream.key if k not in ENTITIES[stream.entity].names]
            if missing:
                raise ValueError(f"connector {self.name!r}: key {missing} is not a column of {stream.entity}")
        if not self.files:
            raise ValueError(f"connector {self.name!r} reads no files; declare at least one FileReader")

    def context(self, timezone: str) -> ReadContext:
        """The read context for a run: options come from the environment by name."""
        prefix = f"TAGWRIGHT_SOURCE_{self.name.upper()}_"
        options = {o: os.environ.get(prefix + o.upper()) for o in self.options}
        return ReadContext(timezone=timezone, contract=self.contract, options=options)

    def readers_for(self, relative_path: str) -> list[FileReader]:
        """The file readers whose pattern matches the file (none: the file is not ours)."""
        return [spec for spec in self.files if fnmatch.fnmatch(Path(relative_path).name, spec.pattern)]

    def read(self, path: Path, ctx: ReadContext) -> dict[str, pa.Table]:
        """Every entity the file yields; one file may feed several readers (e.g. a ticket export
        gives interactions and the customer records they name)."""
        tables: dict[str, pa.Table] = {}
        for spec in self.readers_for(path.name):
            for entity, table in spec.read(path, ctx).items():
                tables[entity] = pa.concat_tables([tables[entity], table]) if entity in tables else table
        return tables

    def read_in_parts(self, path: Path, ctx: ReadContext, part_bytes: int):
        """``read``, one part of the file at a time when every reader of it reads in parts and
        the file is larger than ``part_bytes``; else the whole file at once.  The next part is
        read on a second thread while the caller writes this one (Arrow and pandas release the
        GIL for most of it), so readers must not share mutable state between calls.  Raises
        ``PartsAbandoned`` when the parts given out cannot stand (a CSV whose groups' rows turn out
        not to be adjacent, or that pyarrow cannot read): the caller drops them and reads whole."""
        parts = self._parts(path, part_bytes)
        if parts is None:
            yield self.read(path, ctx)
            return
        with ThreadPoolExecutor(max_workers=PARTS_AHEAD, thread_name_prefix=f"read-{self.name}") as pool:
            pending: deque[tuple[Part, Future]] = deque()

            def oldest() -> dict[str, pa.Table]:
                part, future = pending.popleft()
                return self._checked(path, part, future.result())

            try:
                for part in parts:
                    pending.append((part, pool.submit(self.read, path, replace(ctx, part=part))))
                    if len(pending) >= PARTS_AHEAD:
                        yield oldest()
                while pending:
                    yield oldest()
            finally:
                for _, future in pending:  # the caller stopped early: read no further
                    future.cancel()

    def _checked(self, path: Path, part: Part, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        for entity, table in tables.items():
            rows = table.column("_row")
            if len(rows) and (pa.compute.min(rows).as_py() < part.first_line
                              or pa.compute.max(rows).as_py() > part.last_line):
                raise SourceError(path, f"connector {self.name!r} read rows outside the part it was given "
                                        f"(lines {part.first_line}-{part.last_line})",
                                  fix="pass ctx.part to read_export, or leave in_parts off for this file")
        return tables

    def _parts(self, path: Path, part_bytes: int):
        specs = self.readers_for(path.name)
        formats = {s.format for s in specs}
        if not specs or not all(s.in_parts for s in specs) or len(formats) != 1 or path.stat().st_size <= part_bytes:
            return None
        if formats == {"jsonl"}:
            return jsonl_parts(path, part_bytes)
        if formats == {"csv"}:
            return csv_parts(path, self.encoding, part_bytes, tuple(dict.fromkeys(g for s in specs for g in s.group_by)))
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
        """The message for each row where ``bad`` holds, quoting its raw value (built for those
        rows only: quoting every row of a POS part for its few bad ones took most of a second)."""
        if bad.any():
            shown = raw[bad.to_numpy(dtype=bool, na_value=False)].astype(str).map(repr)
            self._messages.append((field_name + ": cannot read " + shown + f" as {expected}").reindex(bad.index))

    def note(self, bad: pd.Series, message: str) -> None:
        """The same message for every row where ``bad`` holds."""
        if bad.any():
            self._messages.append(pd.Series(message, index=bad.index).where(bad))

    def column(self) -> pd.Series:
        """One text per row joining its problems with '; ' (NULL for clean rows), vectorised."""
        result = pd.Series([None] * self._n, dtype="object")
        for message in self._messages:
            message = message.reset_index(drop=True)
            both = result.notna() & message.notna()
            joined = result.where(~both, result.astype("string") + "; " + message.astype("string"))
            result = joined.where(message.isna() | both, message).astype("object")
        return result


def _present(raw: pd.Series) -> pd.Series:
    """Values that are there: not NULL and, for text, not blank."""
    if pd.api.types.is_numeric_dtype(raw.dtype):  # JSON numbers: no text to look at
        return raw.notna()
    return raw.notna() & (raw.astype("string").str.strip() != "")


Formats = str | list[str] | tuple[str, ...] | None
# An offset ends the value: Z, +08:00, +0800, or +08 after a time (a date's -21 is no offset).
_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2}|[T ]\d{2}(?::\d{2}){0,2}(?:\.\d+)?[+-]\d{2})$"


def _formats(fmt: Formats, default: str) -> list[str]:
    return [fmt] if isinstance(fmt, str) else list(fmt or [default])


def _first_format(text: pd.Series, formats: list[str]) -> pd.Series:
    """Parse with each format in turn; a value takes the first format that reads it.  A later
    format is tried only on the values no earlier one read: pandas takes about 2.5 microseconds
    for each value a format does not fit (a second and a third format over 540,000 store members
    took 2.7 s where the first had read nearly all of them)."""
    parsed = pd.to_datetime(text, format=formats[0], errors="coerce")
    for fmt in formats[1:]:
        unread = parsed.isna() & text.notna()
        if not unread.any():
            break
        parsed = parsed.fillna(pd.to_datetime(text[unread], format=fmt, errors="coerce"))
    return parsed


def _iso_with_offsets(text: pd.Series) -> pd.Series | None:
    """UTC timestamps when Arrow reads every value as ISO 8601 with an offset (the usual JSON
    export, ten times faster than pandas), else None."""
    try:
        cast = pa.compute.cast(pa.array(text, from_pandas=True), pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a naive, malformed or blank value
        return None
    return cast.to_pandas().set_axis(text.index)


def parse_timestamp(raw: pd.Series, field_name: str, errors: RowErrors, fmt: Formats = None,
                    tz: str = "UTC") -> pd.Series:
    """Parse text to UTC timestamps.  Values with an offset (``Z``, ``+08:00``) keep it; naive
    values are read in ``tz`` (the source's local zone) with the given format(s), tried in order."""
    text = raw.astype("string").str.strip()
    parsed = _iso_with_offsets(text) if fmt is None else None
    if parsed is None:
        parsed = _parse_each_kind(text, fmt, tz)
    described = " or ".join(_formats(fmt, "ISO 8601"))
    errors.add(_present(raw) & parsed.isna(), field_name, raw, f"a timestamp ({described})")
    return parsed


def _parse_each_kind(text: pd.Series, fmt: Formats, tz: str) -> pd.Series:
    """Values with an offset by pandas' ISO 8601 reader; naive ones with the format(s), in ``tz``."""
    aware = text.str.contains(_OFFSET, regex=True, na=False)
    parts = []
    if aware.any():
        parts.append(pd.to_datetime(text[aware], format="ISO8601", errors="coerce", utc=True))
    if (~aware).any():
        naive = _first_format(text[~aware], _formats(fmt, "ISO8601"))
        parts.append(naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC"))
    return pd.concat([p.astype("datetime64[us, UTC]") for p in parts]).reindex(text.index) if parts else \
        pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")


def parse_date(raw: pd.Series, field_name: str, errors: RowErrors, fmt: Formats = None) -> pd.Series:
    """Parse text to dates with the given format(s), tried in order."""
    text = raw.astype("string").str.strip()
    parsed = _first_format(text, _formats(fmt, "ISO8601"))
    errors.add(_present(raw) & parsed.isna(), field_name, raw, f"a date ({' or '.join(_formats(fmt, 'YYYY-MM-DD'))})")
    return parsed.dt.date


_MONEY_NOISE = r"[¥￥$,，\s]|RMB|CNY"


def _as_numbers(raw: pd.Series) -> pd.Series:
    """float64, NaN where a value is not a plain number.  Arrow text where every value is one
    (the usual export) is cast by Arrow; anything else goes through pandas."""
    if isinstance(raw.dtype, pd.StringDtype) and raw.dtype.storage == "pyarrow":
        try:
            cast = pa.compute.cast(pa.Array.from_pandas(raw), pa.float64())
            return pd.Series(cast.to_numpy(zero_copy_only=False), index=raw.index)
        except pa.ArrowInvalid:  # some value is not a plain number (" 12", "¥1,299.00")
            pass
    return pd.to_numeric(raw, errors="coerce").astype("float64")


def parse_number(raw: pd.Series, field_name: str, errors: RowErrors) -> pd.Series:
    """Numbers, tolerating currency symbols and thousands separators (¥1,299.00)."""
    parsed = _as_numbers(raw)  # numbers and plain numeric text
    present = _present(raw)
    noisy = present & parsed.isna()
    if noisy.any():  # only those values go through the symbol and separator clean-up
        text = raw[noisy].astype("string").str.replace(_MONEY_NOISE, "", regex=True)
        parsed[noisy] = pd.to_numeric(text, errors="coerce").astype("float64")
    errors.add(present & parsed.isna(), field_name, raw, "a number")
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


_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_CONTROL_KEPT = np.array([0x09, 0x0a, 0x0d], np.uint8)  # tab and line ends: whitespace, stripped at the ends


def _control_free(text: pd.Series) -> bool:
    """No value holds a control character: none of their bytes is one.  In UTF-8 each is a byte
    of its own, never part of another character, so the text's bytes are scanned at once, a
    tenth of the regex's time (which ran on every column with a character beyond ASCII)."""
    array = pa.array(text, from_pandas=True)
    for chunk in array.chunks if isinstance(array, pa.ChunkedArray) else [array]:
        if len(chunk) == 0:
            continue
        _, offsets, data = chunk.buffers()
        offsets = np.frombuffer(offsets, np.int64 if pa.types.is_large_string(chunk.type) else np.int32)
        start, end = int(offsets[chunk.offset]), int(offsets[chunk.offset + len(chunk)])
        values = np.frombuffer(data, np.uint8)[start:end] if data is not None else np.empty(0, np.uint8)
        if (values == 0x7F).any() or np.isin(values[values < 0x20], _CONTROL_KEPT, invert=True).any():
            return False
    return True


def clean_text(raw: pd.Series) -> pd.Series:
    """Drop control characters, strip whitespace; empty text becomes NULL (emoji are kept).
    Text stays in Arrow (pandas' ``str``), so the entity table takes it without a copy per value."""
    if raw.dtype == "object" and raw.isna().all():  # a field NULL on every line (an anonymous id)
        return pd.Series(index=raw.index, dtype="str")
    text = raw.astype("str")
    if not _control_free(text):  # rare: find the values that hold one
        control = text.str.contains(_CONTROL, regex=True, na=False)
        if control.any():  # rare: rewrite only then
            text = text.where(~control, text.str.replace(_CONTROL, "", regex=True))
    text = text.str.strip()
    return text.mask(text == "")


def relabel(text: pd.Series, labels: dict[str, str]) -> pd.Series:
    """Values found in ``labels`` replaced by their label; every other value (and NULL) kept."""
    values = pa.array(text, type=pa.large_string(), from_pandas=True)
    found = pa.compute.index_in(values, value_set=pa.array(list(labels), pa.large_string()))
    relabelled = pa.compute.coalesce(pa.array(list(labels.values()), pa.large_string()).take(found), values)
    return relabelled.to_pandas().set_axis(text.index)


def to_entity_table(entity: str, frame: pd.DataFrame, errors: RowErrors | None = None,
                    extra: pd.DataFrame | None = None) -> pa.Table:
    """Build the entity's Arrow table: canonical columns in order, missing ones NULL,
    ``extra`` columns packed into ``attributes`` JSON."""
    schema = ENTITIES[entity]
    n = len(frame)
    frame = frame.reset_index(drop=True)
    if errors is not None:
        frame["_errors"] = errors.column().to_numpy()
    if extra is not None and not extra.empty and len(extra.columns):
        lines = extra.reset_index(drop=True).to_json(orient="records", lines=True, force_ascii=False)
        frame["attributes"] = lines.splitlines() if n else []
    arrays = []
    for f in schema:
        if f.name in frame.columns:
            arrays.append(pa.array(frame[f.name], type=f.type, from_pandas=True))
        else:
            arrays.append(pa.nulls(n, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def read_export(path: Path, fmt: str, encoding: str, part: Part | None = None,
                nested_in_arrow: bool = False) -> tuple[pd.DataFrame, "RowErrors"]:
    """Read an export file (or the ``part`` of it given: JSON Lines or CSV) as text columns plus
    ``_row`` (its line or sheet row number).  ``nested_in_arrow``: see :func:`read_jsonl`.

    Whole-file problems (empty, undecodable, repeated header, wrong delimiter) raise
    SourceError; row problems (a line that is not JSON, a truncated last line) are returned
    in RowErrors so the rows are quarantined, not lost.
    """
    if fmt == "jsonl":
        frame, problems = read_jsonl(path, encoding, part, nested_in_arrow)
        errors = RowErrors(len(frame))
        errors.add(problems.notna(), "line", problems, "JSON")
        return frame, errors
    if fmt == "xlsx":
        if path.stat().st_size == 0:
            raise SourceError(path, "the file is empty", fix="re-deliver the export")
        try:
            frame = pd.read_excel(path, dtype=str, engine="calamine")
        except Exception as exc:  # calamine raises several kinds for a broken workbook
            raise SourceError(path, f"the workbook cannot be opened ({type(exc).__name__}: {exc})",
                              fix="re-export as .xlsx") from exc
        frame = frame.astype("object").where(frame.notna(), None)
        frame["_row"] = np.arange(len(frame), dtype="int64") + 2
        return frame, RowErrors(len(frame))
    if part is not None and part.table is not None:
        frame = part.table.to_pandas()
        frame["_row"] = np.arange(part.first_line, part.first_line + len(frame), dtype="int64")
        complete = not part.last or ends_in_newline(path)
    else:
        frame, complete = read_csv(path, encoding)
    errors = RowErrors(len(frame))
    if len(frame) and not complete:
        data_columns = [c for c in frame.columns if c != "_row"]
        last_is_short = frame[data_columns].iloc[-1].isna().any()
        errors.note(pd.Series([i == len(frame) - 1 and last_is_short for i in range(len(frame))]),
                    "row looks truncated: the file ends in the middle of this line")
    return frame, errors


def enforce_contract(path: Path, frame: pd.DataFrame, columns: Iterable[str], required: Iterable[str],
                     mode: str, errors: "RowErrors") -> pd.DataFrame:
    """Apply the schema contract to an export's columns; returns the frame with every declared
    column present (NULL where an optional one is missing)."""
    declared, required = list(columns), list(required)
    present = [c for c in frame.columns if c != "_row"]
    unknown = [c for c in present if c not in declared]
    missing = [c for c in declared if c not in present]
    missing_required = [c for c in required if c not in present]
    if missing_required:
        raise SourceError(path, f"missing required column(s) {missing_required}; found {present}",
                          fix="re-export with the standard column set or update the connector's mapping")
    if mode == "freeze" and (unknown or missing):
        raise SourceError(path, f"columns differ from the frozen contract: new {unknown}, missing {missing}",
                          fix="re-export with the agreed columns, or change the connector's contract to evolve")
    if mode == "discard_row":
        for column in unknown:
            errors.note(frame[column].notna().reset_index(drop=True),
                        f"{column}: column is not in the contract (discard_row); the row is set aside")
    for column in missing:
        frame[column] = None
    return frame


def discover() -> dict[str, Connector]:
    """Every connector: built-in folders under sources/ (a ``CONNECTOR`` in ``__init__.py``, or
    just a ``mapping.yaml``) plus installed ones under the ``tagwright.sources`` entry point
    group."""
    from sources.mapping import MAPPING_FILE, connector_from_mapping

    found: dict[str, Connector] = {}
    for folder in sorted(Path(__file__).resolve().parent.iterdir()):
        if not folder.is_dir() or folder.name.startswith(("_", ".")):
            continue
        connector = None
        if (folder / "__init__.py").exists():
            connector = getattr(importlib.import_module(f"sources.{folder.name}"), "CONNECTOR", None)
        if connector is None and (folder / MAPPING_FILE).exists():
            connector = connector_from_mapping(folder)
        if isinstance(connector, Connector):
            found[connector.name] = connector if connector.folder else replace(connector, folder=folder)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        connector = ep.load()
        found[connector.name] = connector
    return dict(sorted(found.items()))

"""Reading JSON Lines exports: Arrow's parser for a clean file, line by line when a line is bad.

A clean file (every line one JSON object, no blank lines) is read by pyarrow in one pass.  When
pyarrow refuses the file (a truncated last line, a field that is a number on one line and text
on another, a line that is not an object), it is read again line by line, so one bad line is
quarantined with its line number, not fatal.  Both paths give the same frame: values as JSON
has them, timestamps still text (the connector parses them), ``_row`` the line number.  Bytes
that are not valid in the file's encoding fail the file, naming the line (re-exporting it is the
fix): that reading decodes the text first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json

from sources.errors import undecodable
from sources.parts import Part, line_count


# Field types are inferred on the first lines of a part, so the whole part is parsed once.
_PREFIX_BYTES = 1 << 20


def _parse(raw: bytes, as_text: list[str]) -> pa.Table:
    schema = pa.schema([(name, pa.string()) for name in as_text])
    return pa_json.read_json(pa.py_buffer(raw), parse_options=pa_json.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="infer"))


def _timestamp_fields(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if pa.types.is_timestamp(f.type)]


def _nested_as_arrow(kind: pa.DataType) -> pd.ArrowDtype | None:
    return pd.ArrowDtype(kind) if pa.types.is_nested(kind) else None


def _read_clean(raw: bytes, first_line: int, lines: int, nested_in_arrow: bool) -> pd.DataFrame | None:
    """The records if pyarrow reads every line as an object, else None."""
    try:
        # pyarrow turns ISO 8601 text into timestamps; those fields are read as the text they are.
        cut = raw.rfind(b"\n", 0, _PREFIX_BYTES) + 1 if len(raw) > _PREFIX_BYTES else 0
        prefix = pa_json.read_json(pa.py_buffer(raw[:cut] if cut else raw))
        as_text = _timestamp_fields(prefix)
        table = prefix if not cut and not as_text else _parse(raw, as_text)  # a small part: read once
        later = _timestamp_fields(table)  # first seen after the prefix
        if later:
            table = _parse(raw, as_text + later)
        # pyarrow's parser passes bytes that are not UTF-8 on inside strings, which failed the
        # connector's first text function with no file or line named: such a file is decoded below.
        table.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != lines:  # pyarrow skips blank lines; the line numbers would be wrong
        return None
    if "timestamp" in str(table.schema):  # ISO text inside a nested value: keep it text too
        return None
    in_file_order = list(dict.fromkeys([*prefix.column_names, *table.column_names]))
    frame = table.select(in_file_order).to_pandas(integer_object_nulls=True,
                                                  types_mapper=_nested_as_arrow if nested_in_arrow else None)
    frame["_row"] = range(first_line, first_line + len(frame))
    return frame


def _read_line_by_line(text: str, first_line: int = 1) -> tuple[pd.DataFrame, pd.Series]:
    records, problems, line_numbers = [], [], []
    for number, line in enumerate(text.split("\n"), start=first_line):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            problems.append(None)
        except ValueError as exc:
            record = {}
            problems.append(f"line is not a JSON object ({exc}): {line[:80]!r}")
        records.append(record)
        line_numbers.append(number)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame["_row"] = line_numbers
    return frame, pd.Series(problems, dtype="object")


def read_jsonl(path: Path, encoding: str = "utf-8", part: Part | None = None,
               nested_in_arrow: bool = False) -> tuple[pd.DataFrame, pd.Series]:
    """Records as a frame plus a Series of per-line problems (NULL for lines that parsed); of
    the whole file, or of the ``part`` of it given.  With ``nested_in_arrow``, lists and objects
    of a file Arrow reads stay Arrow (``pd.ArrowDtype`` columns) instead of becoming Python
    lists and dicts; a file read line by line gives Python values either way.

    A line that is not a JSON object (a truncated last line, say) becomes an empty record whose
    problem says so; validation then quarantines it with its line number.
    """
    raw, first_line, offset = (part.data, part.first_line, part.offset) if part else (path.read_bytes(), 1, 0)
    if encoding.replace("-", "").lower() == "utf8" and raw and not raw.isspace():
        unmarked = raw.removeprefix(b"\xef\xbb\xbf")
        raw, offset = unmarked, offset + len(raw) - len(unmarked)
        lines = part.rows if part else line_count(raw)
        frame = _read_clean(raw, first_line, lines, nested_in_arrow)
        if frame is not None:
            return frame, pd.Series([None] * len(frame), dtype="object")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise undecodable(path, raw, exc, encoding, f"re-export the file as {encoding}", offset, first_line) from exc
    return _read_line_by_line(text, first_line)

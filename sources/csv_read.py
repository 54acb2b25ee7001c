"""Reading CSV exports as text columns: pyarrow for a well-formed file, pandas for the rest.

pyarrow reads a file whose every row has as many fields as the header, in the right encoding,
fast and lean on memory.  Anything else (a short last row, bad bytes) is read by pandas from
the decoded text, which names the problem.  Both give the same frame.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from sources.errors import SourceError, undecodable


def check_header(path: Path, names: list[str]) -> None:
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SourceError(path, f"the header repeats column(s) {duplicated}",
                          fix="re-export so each column appears once")
    if len(names) == 1 and any(sep in names[0] for sep in (";", "\t", "|")):
        raise SourceError(path, f"the header {names[0]!r} is one column: the file is not comma-separated",
                          fix="re-export as CSV with commas between columns")


def header_names(path: Path, encoding: str) -> list[str] | None:
    """The header's column names (checked), or None when the first line does not decode."""
    with path.open("rb") as f:
        header = f.readline()
    try:
        names = next(csv.reader([header.decode(encoding).lstrip("\ufeff")]))
    except (UnicodeDecodeError, StopIteration):
        return None
    check_header(path, names)
    return names


def arrow_options(encoding: str, names: list[str], block_size: int | None = None,
                  only: list[str] | None = None) -> dict:
    """pyarrow's options for reading the export as text (empty text is NULL)."""
    read = pa_csv.ReadOptions(encoding=_arrow_encoding(encoding), **({"block_size": block_size} if block_size else {}))
    return {"read_options": read,
            "parse_options": pa_csv.ParseOptions(newlines_in_values=True),
            "convert_options": pa_csv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=True,
                quoted_strings_can_be_null=True, null_values=[""], include_columns=only or [])}


def _arrow_encoding(encoding: str) -> str:
    """The encoding to give pyarrow: UTF-8 with or without a byte-order mark is read by pyarrow
    itself (it skips the mark, and fails on bytes that are not UTF-8).  Named any other way,
    even ``utf-8-sig``, pyarrow decodes and encodes every block again through Python's codecs,
    holding the GIL: about 2 s of the 12.3 s a 653 MB marketplace export took to land."""
    return "utf8" if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig") else encoding


def read_csv_arrow(path: Path, encoding: str) -> pd.DataFrame | None:
    """A well-formed CSV read by pyarrow, text columns; None when pyarrow refuses it."""
    names = header_names(path, encoding)
    if names is None:
        return None
    try:
        table = pa_csv.read_csv(path, **arrow_options(encoding, names))
    except (pa.ArrowInvalid, UnicodeDecodeError, LookupError):
        return None
    if table.column_names != names:
        return None
    return table.to_pandas()


def read_csv(path: Path, encoding: str) -> tuple[pd.DataFrame, bool]:
    """The CSV as text columns plus ``_row``, and whether its last line is complete."""
    size = path.stat().st_size
    frame = read_csv_arrow(path, encoding) if size else None
    if frame is None:
        raw = path.read_bytes()
        if not raw.strip():
            raise SourceError(path, "the file is empty (no header row)",
                              fix="re-deliver the export; an empty file carries no columns")
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise undecodable(path, raw, exc, encoding,
                              f"re-export the file as {encoding} or set the connector's encoding") from exc
        check_header(path, next(csv.reader(io.StringIO(text.lstrip("\ufeff")))))
        try:
            frame = pd.read_csv(io.StringIO(text.lstrip("\ufeff")), dtype=str, keep_default_na=False, na_values=[""])
        except pd.errors.ParserError as exc:
            raise SourceError(path, f"the CSV cannot be parsed ({exc})",
                              fix="check quoting and the number of fields per row") from exc
    frame["_row"] = np.arange(len(frame), dtype="int64") + 2
    return frame, ends_in_newline(path)


def ends_in_newline(path: Path) -> bool:
    """Whether the file's last line is complete (else it may be cut short)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(size - 1, 0))
        return f.read(1) == b"\n"

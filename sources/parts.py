"""Large exports read a part at a time, so landing holds one part in memory, not the file.

JSON Lines is cut after a newline (a value never holds a raw newline).  CSV is read by
pyarrow's streaming reader and cut between rows, never inside a group of rows its reader puts
together (the lines of one receipt).  That needs the file well-formed and each group's rows
adjacent, which one pass over the group columns checks first; when either fails the file is
read whole, as before, and the whole-file reader names any problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial, reduce
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from sources.csv_read import arrow_options, header_names
from sources.errors import SourceError


@dataclass(frozen=True)
class Part:
    """A run of whole rows of a large file: the number of its first line (JSON Lines) or row
    (CSV, whose header is row 1), how many it holds, and either its bytes (JSON Lines) or its
    rows as text (CSV)."""

    first_line: int
    rows: int
    offset: int = 0                # of its first byte in the file (JSON Lines, for messages)
    data: bytes = b""              # JSON Lines
    table: pa.Table | None = None  # CSV
    last: bool = False             # the file's last part (its last line may be cut short)

    @property
    def last_line(self) -> int:
        return self.first_line + self.rows - 1


def line_count(data: bytes) -> int:
    """Lines in the bytes, the last one counted even without its newline."""
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def jsonl_parts(path: Path, part_bytes: int) -> Iterator[Part]:
    """The file as Parts of about ``part_bytes`` each, cut after a newline.

    The end of a part is found first (the newline after ``part_bytes``) and the part read in one
    piece: appending the rest of the line to a part already read copied every part once more
    (3.8 of the 9.8 s it took to cut the 1M sample's 3.2 GB of events)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        offset, first_line = 0, 1
        while offset < size:
            f.seek(offset + part_bytes)
            f.readline()
            end = min(f.tell(), size)
            f.seek(offset)
            data = f.read(end - offset)
            if not data:  # the file was cut short since it was measured
                return
            lines = line_count(data)
            yield Part(first_line, lines, offset=offset, data=data, last=end >= size)
            offset += len(data)
            first_line += lines


def csv_parts(path: Path, encoding: str, part_bytes: int, group_by: tuple[str, ...] = ()) -> Iterator[Part] | None:
    """The CSV as Parts of about ``part_bytes`` of text each, every group of rows sharing a
    value of a ``group_by`` column inside one part; None when the file must be read whole
    (pyarrow refuses it, a group column is missing, or some group's rows are not adjacent)."""
    names = header_names(path, encoding)
    if names is None or any(g not in names for g in group_by):
        return None
    try:  # also proves the whole file well-formed before a part is given out
        keys = pa_csv.read_csv(path, **arrow_options(encoding, names, only=list(group_by) or names[:1]))
    except (pa.ArrowInvalid, UnicodeDecodeError, LookupError):
        return None
    runs = [_run_starts(keys.column(name)) for name in group_by]
    if any(len(r) != pc.count_distinct(keys.column(name), mode="all").as_py() for r, name in zip(runs, group_by)):
        return None  # a value in two separate runs of rows: its group would span parts
    starts = reduce(partial(np.intersect1d, assume_unique=True), runs) if runs else None
    return _csv_part_stream(path, encoding, names, part_bytes, starts, keys.num_rows)


def _run_starts(column: pa.ChunkedArray) -> np.ndarray:
    """The indices of the rows where the column's value differs from the row before's."""
    run_ends = pc.run_end_encode(column.combine_chunks()).run_ends.to_numpy()
    return np.concatenate([[0], run_ends[:-1]]).astype("int64")


def _csv_part_stream(path: Path, encoding: str, names: list[str], part_bytes: int, starts: np.ndarray | None,
                     n_rows: int) -> Iterator[Part]:
    """Parts cut at the last group start within what the streaming reader has given so far
    (``starts`` None: at any row)."""
    pending: pa.Table | None = None  # rows read but not given out yet
    first = read = 0                 # index of pending's first row; rows read so far
    for batch in _batches(path, arrow_options(encoding, names, block_size=part_bytes)):
        batch_table = pa.Table.from_batches([batch])
        pending = batch_table if pending is None else pa.concat_tables([pending, batch_table])
        read += batch.num_rows
        cut = read if starts is None or read == n_rows else int(starts[np.searchsorted(starts, read, "right") - 1])
        if cut > first and read < n_rows:
            yield Part(first + 2, cut - first, table=pending.slice(0, cut - first))
            pending, first = pending.slice(cut - first), cut
    if pending is None:  # a header and no rows
        pending = pa.table({name: pa.array([], pa.string()) for name in names})
    yield Part(first + 2, pending.num_rows, table=pending, last=True)


def _batches(path: Path, options: dict) -> Iterator[pa.RecordBatch]:
    try:
        yield from pa_csv.open_csv(path, **options)
    except pa.ArrowInvalid as exc:  # the file was read whole once; a row longer than a part, say
        raise SourceError(path, f"pyarrow cannot read the file in parts ({exc})",
                          fix="raise TAGWRIGHT_LAND_PART_BYTES above the longest row") from exc

"""Large exports read a part at a time, so landing holds one part in memory, not the file.

JSON Lines is cut after a newline (a value never holds a raw newline).  CSV is read by
pyarrow's streaming reader and cut between rows, never inside a group of rows its reader puts
together (the lines of one receipt).  That needs the file well-formed and each group's rows
adjacent, which is checked as the parts are read; when either fails, the parts given out are
abandoned and the file is read whole, and the whole-file reader names any problem.
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


class PartsAbandoned(Exception):
    """The parts of a file given out so far cannot stand; the file must be read whole."""


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
    value of a ``group_by`` column inside one part; None when the file must be read whole from
    the start (its header does not decode, or lacks a group column).

    The file is checked as it streams, not in a pass of its own before the first part (which
    decoded the whole file once more, with no part being read meanwhile).  When pyarrow
    refuses a later block, or a group's rows turn out not to be adjacent, the parts already given
    out cannot stand: PartsAbandoned is raised, before the last part, and the caller reads the
    file whole."""
    names = header_names(path, encoding)
    if names is None or any(g not in names for g in group_by):
        return None
    return _csv_part_stream(path, encoding, names, part_bytes, group_by)


def _csv_part_stream(path: Path, encoding: str, names: list[str], part_bytes: int,
                     group_by: tuple[str, ...]) -> Iterator[Part]:
    """Parts cut at the last row where every group column's value changes, within what the
    streaming reader has given so far (no group columns: before the newest block)."""
    pending: pa.Table | None = None  # rows read but not given out yet
    first = 0                        # index of pending's first row in the file
    heads: list[list[pa.Array]] = [[] for _ in group_by]  # per group column: the value of each run given out
    for batch in _batches(path, arrow_options(encoding, names, block_size=part_bytes), names):
        batch_table = pa.Table.from_batches([batch])
        pending = batch_table if pending is None else pa.concat_tables([pending, batch_table])
        runs = [_runs(pending.column(name)) for name in group_by]
        if runs:
            common = reduce(partial(np.intersect1d, assume_unique=True), (starts for starts, _ in runs))
            cut = int(common[-1]) if len(common) else 0
        else:
            cut = pending.num_rows - batch.num_rows
        if cut:
            for column_heads, (starts, values) in zip(heads, runs):
                column_heads.append(values.slice(0, int(np.searchsorted(starts, cut))))
            yield Part(first + 2, cut, table=pending.slice(0, cut))
            pending, first = pending.slice(cut), first + cut
    if pending is None:  # a header and no rows
        pending = pa.table({name: pa.array([], pa.string()) for name in names})
    for name, column_heads in zip(group_by, heads):
        column_heads.append(_runs(pending.column(name))[1])
        _check_adjacent(name, pa.chunked_array(column_heads, pa.string()))
    yield Part(first + 2, pending.num_rows, table=pending, last=True)


def _runs(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Where each run of rows holding one value starts, and that value."""
    encoded = pc.run_end_encode(column.combine_chunks())
    ends = encoded.run_ends.to_numpy()
    return np.concatenate([[0], ends[:-1]]).astype("int64")[:len(ends)], encoded.values


def _check_adjacent(name: str, run_values: pa.ChunkedArray) -> None:
    """Each value heads one run of rows, or its group was cut between parts."""
    if len(run_values) == pc.count_distinct(run_values, mode="all").as_py():
        return
    counts = pc.value_counts(run_values)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
    raise PartsAbandoned(f"the rows of {name} {repeated!r} are not all together")


def _batches(path: Path, options: dict, names: list[str]) -> Iterator[pa.RecordBatch]:
    try:
        reader = pa_csv.open_csv(path, **options)
        if reader.schema.names != names:
            raise PartsAbandoned(f"pyarrow reads the columns {reader.schema.names}, not the header's")
        yield from reader
    except (pa.ArrowInvalid, UnicodeDecodeError, LookupError) as exc:
        raise PartsAbandoned(f"pyarrow cannot read it in parts ({exc})") from exc

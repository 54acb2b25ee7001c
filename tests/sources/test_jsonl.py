"""JSON Lines: Arrow's one-pass reader and the line-by-line reader give the same records."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sources.jsonl import _read_line_by_line, read_jsonl

SAMPLES = Path(__file__).parent / "web" / "samples"


def _plain(value):
    """A cell as plain Python: NULL as None, Arrow's nested arrays as lists."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, dict, str)):
        return value
    return None if pd.isna(value) else value


@pytest.mark.parametrize("name", ["users.jsonl", "events.jsonl", "orders.jsonl"])
def test_the_fast_path_reads_what_the_line_by_line_reader_reads(name):
    path = SAMPLES / name
    fast, problems = read_jsonl(path)
    slow, _ = _read_line_by_line(path.read_text(encoding="utf-8"))
    assert problems.isna().all()
    assert list(fast.columns) == list(slow.columns)
    for column in fast.columns:
        assert [_plain(v) for v in fast[column]] == [_plain(v) for v in slow[column]], column


@pytest.mark.parametrize("content,rows,bad", [
    (b'{"a": 1}\n\n{"a": 2}\n', [1, 3], []),                 # a blank line keeps the line numbers
    (b'{"a": 1}\n{"a": "x"}\n', [1, 2], []),                 # a field that changes type
    (b'{"a": 1}\n{"a": 2\n', [1, 2], [2]),                   # a truncated last line
    (b'{"a": "2026-01-01T00:00:00+08:00"}\n', [1], []),     # ISO text stays text
    (b'{"a": {"t": "2026-01-01T00:00:00Z"}}\n', [1], []),   # also inside a nested value
])
def test_files_arrow_would_misread_take_the_line_by_line_path(tmp_path, content, rows, bad):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    frame, problems = read_jsonl(path)
    assert frame["_row"].tolist() == rows
    assert [r for r, p in zip(rows, problems) if p is not None] == bad
    if b"+08:00" in content:
        assert frame["a"].tolist() == ["2026-01-01T00:00:00+08:00"]
    if b'"t"' in content:
        assert frame["a"].tolist() == [{"t": "2026-01-01T00:00:00Z"}]


@pytest.mark.parametrize("mark", [b"", b"\xef\xbb\xbf"], ids=["no byte-order mark", "a byte-order mark"])
def test_bytes_that_are_not_utf8_fail_the_file_naming_their_line_and_offset(tmp_path, mark):
    path = tmp_path / "x.jsonl"
    content = mark + b'{"a": "1"}\n{"a": "\xff"}\n'
    path.write_bytes(content)
    offset = content.index(b"\xff")
    with pytest.raises(Exception, match=f"x.jsonl: line 2: bytes at offset {offset} are not valid utf-8"):
        read_jsonl(path)

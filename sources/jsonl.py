"""Reading JSON Lines exports line by line, so one bad line is quarantined, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sources.errors import SourceError


def read_jsonl(path: Path, encoding: str = "utf-8") -> tuple[pd.DataFrame, pd.Series]:
    """Records as a frame plus a Series of per-line problems (NULL for lines that parsed).

    A line that is not a JSON object (a truncated last line, say) becomes an empty record whose
    problem says so; validation then quarantines it with its line number.
    """
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise SourceError(path, f"bytes at offset {exc.start} are not valid {encoding}",
                          fix=f"re-export the file as {encoding}") from exc
    records, problems, line_numbers = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
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

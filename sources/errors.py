"""Errors raised by connectors: each names the file (and row/field when known) and the fix."""

from __future__ import annotations

from pathlib import Path


class SourceError(Exception):
    """A source file cannot be read at all; nothing from it is loaded."""

    def __init__(self, path: Path | str, problem: str, fix: str, row: int | None = None,
                 field: str | None = None) -> None:
        self.path, self.problem, self.fix, self.row, self.field = str(path), problem, fix, row, field
        where = self.path + (f", row {row}" if row is not None else "") + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {problem}. Fix: {fix}")


def undecodable(path: Path | str, raw: bytes, exc: UnicodeDecodeError, encoding: str, fix: str, offset: int = 0,
                first_line: int = 1) -> SourceError:
    """The error for bytes of ``raw`` that ``encoding`` cannot decode, naming their line and byte
    offset in the file (``raw`` starts at ``offset``, on line ``first_line``).  A codec that skips
    a prefix (``utf-8-sig`` its byte-order mark) reports where the bytes are in what follows it."""
    start = exc.start + len(raw) - len(exc.object)
    line = first_line + raw.count(b"\n", 0, start)
    return SourceError(path, f"line {line}: bytes at offset {offset + start} are not valid {encoding}", fix=fix)


class MappingError(Exception):
    """A connector's mapping.yaml is wrong; points at file:line:column and says the fix."""

    def __init__(self, file: str, line: int, column: int, problem: str, fix: str) -> None:
        self.file, self.line, self.column, self.problem, self.fix = file, line, column, problem, fix
        super().__init__(f"{file}:{line}:{column}: {problem}. Fix: {fix}")

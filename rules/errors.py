"""Errors of the rule language; every one points at file:line:column and says the fix."""

from __future__ import annotations


class RuleError(Exception):
    def __init__(self, file: str, line: int, column: int, problem: str, fix: str) -> None:
        self.file, self.line, self.column, self.problem, self.fix = file, line, column, problem, fix
        super().__init__(f"{file}:{line}:{column}: {problem}. Fix: {fix}")


class RuleErrors(Exception):
    """Several rule errors found in one pass; ``errors`` lists them all."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))

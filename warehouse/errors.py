"""Errors of the warehouse stages: each names what failed and the fix."""

from __future__ import annotations


class StageError(Exception):
    """A stage cannot go on; the published warehouse stays as it was."""

    def __init__(self, stage: str, problem: str, fix: str) -> None:
        self.stage, self.problem, self.fix = stage, problem, fix
        super().__init__(f"{stage}: {problem}. Fix: {fix}")


class RunLockedError(StageError):
    """Another run holds the data directory's lock."""

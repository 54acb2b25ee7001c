"""Failpoints for fault tests: ``TAGWRIGHT_FAILPOINT=<name>`` kills the process there (SIGKILL).

Each stage calls ``failpoint`` once in the middle of its work, where a crash would hurt most
(after part of its writes, before it commits or swaps), so the tests can prove that a run
killed anywhere leaves the published warehouse as it was and that a rerun recovers.
Nothing happens unless the variable names this failpoint.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "TAGWRIGHT_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)

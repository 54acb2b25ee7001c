"""Prefect flows that wire the stages, and the `tagwright` CLI."""

import os

# Nothing here may phone home: the machines that run this have no internet.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

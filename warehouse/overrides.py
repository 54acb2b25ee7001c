"""Manual tags and corrections: operations staff set a tag's value for listed customers.

An override has a reason, an author, the first as_of it applies to (default: yesterday in the
business time zone, so tonight's run uses it) and an optional last one (``expires_on``).  The
nightly run applies the newest override in force per customer and tag after the rules
(warehouse/tagging.py); ``analytics.tag_overrides`` publishes all of them for audit, and
``tagwright explain`` shows them.  Overrides are written to the work database under the run
lock, so they never race a nightly run.
"""

from __future__ import annotations

import csv
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa

from rules.model import RuleSet
from warehouse.errors import StageError
from warehouse.runs import run_lock
from warehouse.settings import Settings
from warehouse.workdb import open_work_db


class OverrideError(StageError):
    """An override request that cannot be applied; nothing was written."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__("tags", problem, fix)


@dataclass(frozen=True)
class OverrideRequest:
    tag: str
    value: str | None            # None removes the tag's value from the customers
    reason: str
    author: str
    effective_from: date | None = None
    expires_on: date | None = None


def read_customer_list(path: Path) -> list[str]:
    """Customer ids from a CSV with a ``customer_id`` column (or one column without a header)."""
    if not path.exists():
        raise OverrideError(f"{path} does not exist", "give the path of a CSV of customer ids")
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    if not rows:
        raise OverrideError(f"{path} is empty", "write one customer id per row under a customer_id header")
    header = [c.strip().lower() for c in rows[0]]
    column = header.index("customer_id") if "customer_id" in header else 0
    body = rows[1:] if "customer_id" in header else rows
    ids = []
    for number, row in enumerate(body, start=2 if "customer_id" in header else 1):
        value = row[column].strip() if column < len(row) else ""
        if not value:
            raise OverrideError(f"{path}, row {number}, field 'customer_id': empty", "remove the row or fill the id")
        ids.append(value)
    return list(dict.fromkeys(ids))


def _check(request: OverrideRequest, rules: RuleSet, settings: Settings) -> None:
    tag = rules.tags.get(request.tag)
    if tag is None or tag.status != "active":
        active = ", ".join(sorted(t.id for t in rules.active_tags))
        raise OverrideError(f"tag {request.tag!r} is not an active tag", f"use one of: {active}")
    if request.value is not None and tag.values is not None and request.value not in tag.values:
        raise OverrideError(f"{request.value!r} is not a value of {tag.id}",
                            f"use one of: {', '.join(tag.values)} (or --remove)")
    if tag.value_type == "number" and request.value is not None:
        raise OverrideError(f"{tag.id} is a number computed by a model", "only --remove can override it")
    if not request.reason.strip() or not request.author.strip():
        raise OverrideError("an override needs a reason and an author", "pass --reason and --author")
    start = request.effective_from or default_effective_from(settings)
    if request.expires_on is not None and request.expires_on < start:
        raise OverrideError(f"--expires {request.expires_on} is before the first day {start}",
                            "give an expiry on or after the first day")


def default_effective_from(settings: Settings) -> date:
    """Yesterday in the business time zone: the as_of of tonight's run."""
    return datetime.now(ZoneInfo(settings.timezone)).date() - timedelta(days=1)


def add_overrides(settings: Settings, rules: RuleSet, request: OverrideRequest, customer_ids: list[str],
                  source: str = "command line") -> list[int]:
    """Record ``request`` for every customer; returns the new override ids.  Unknown customer
    ids are an error naming them (and where they came from), and nothing is written."""
    _check(request, rules, settings)
    with run_lock(settings), closing(open_work_db(settings)) as con:
        con.register("requested", _ids_table(customer_ids))
        unknown = [r[0] for r in con.execute(
            "SELECT customer_id FROM requested ANTI JOIN identity.customer_ids USING (customer_id)"
            " ORDER BY position").fetchall()]
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise OverrideError(f"{len(unknown)} customer ids from {source} are not known: {shown}",
                                "use customer_id values from analytics.customers (a merged id lives on as the "
                                "surviving id; see ops.identity_changes)")
        start = request.effective_from or default_effective_from(settings)
        return [r[0] for r in con.execute(
            """INSERT INTO tags.overrides
               SELECT nextval('tags.override_ids'), customer_id, ?, ?, ?, ?, now(), ?, ?, NULL
               FROM requested ORDER BY position RETURNING override_id""",
            [request.tag, request.value, request.reason.strip(), request.author.strip(), start,
             request.expires_on]).fetchall()]


def revoke_override(settings: Settings, override_id: int) -> None:
    """Stop an override from applying from the next run on (it stays in the audit table)."""
    with run_lock(settings), closing(open_work_db(settings)) as con:
        found = con.execute("UPDATE tags.overrides SET revoked_at = now() WHERE override_id = ? AND revoked_at IS NULL"
                            " RETURNING override_id", [override_id]).fetchall()
    if not found:
        raise OverrideError(f"no active override {override_id}", "list them with `tagwright tags list`")


def list_overrides(settings: Settings, tag: str | None = None) -> tuple[list[str], list[tuple]]:
    with run_lock(settings), closing(open_work_db(settings)) as con:
        cursor = con.execute("""SELECT override_id, customer_id, tag, coalesce(value, '(removed)') AS value, reason,
                                       author, effective_from, expires_on, revoked_at IS NOT NULL AS revoked
                                FROM tags.overrides WHERE ?::VARCHAR IS NULL OR tag = ? ORDER BY override_id""",
                             [tag, tag])
        return [d[0] for d in cursor.description], cursor.fetchall()


def _ids_table(customer_ids: list[str]) -> pa.Table:
    return pa.table({"customer_id": pa.array(customer_ids, pa.string()),
                     "position": pa.array(range(len(customer_ids)), pa.int64())})

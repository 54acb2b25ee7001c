"""The nightly flow: land -> validate -> stage -> resolve identities -> features -> tags -> publish.

Every stage is a plain function in warehouse/ taking a connection and settings; the tasks
here only open the work database, call the stage and hand back its small result.  I/O tasks
retry with backoff and never cache (a cached extract would return yesterday's files).
With no Prefect server configured the flow runs in Prefect's local mode.

    python -m pipelines.nightly --as-of 2026-11-21
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from rules.model import RuleSet, load_rules
from warehouse.features import compute_features
from warehouse.identity import resolve_identities
from warehouse.land import land
from warehouse.publish import publish
from warehouse.runs import RunRecord, finish_run, run_lock, start_run
from warehouse.settings import Settings
from warehouse.stage import stage
from warehouse.tagging import apply_tags
from warehouse.validate import validate
from warehouse.workdb import open_work_db

IO_RETRIES = dict(retries=2, retry_delay_seconds=[10, 60])


def _in_work_db(settings: Settings, work: Callable):
    with closing(open_work_db(settings)) as con:
        return work(con)


@task(name="land", cache_policy=NO_CACHE, **IO_RETRIES)
def land_task(settings: Settings, run_id: str):
    return _in_work_db(settings, lambda con: land(con, settings, run_id))


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(settings: Settings, run_id: str):
    return _in_work_db(settings, lambda con: validate(con, settings, run_id))


@task(name="stage", cache_policy=NO_CACHE)
def stage_task(settings: Settings):
    return _in_work_db(settings, lambda con: stage(con, settings))


@task(name="resolve_identities", cache_policy=NO_CACHE)
def identity_task(settings: Settings, run_id: str):
    return _in_work_db(settings, lambda con: resolve_identities(con, run_id))


@task(name="features", cache_policy=NO_CACHE)
def features_task(settings: Settings, rules: RuleSet, as_of: date):
    return _in_work_db(settings, lambda con: compute_features(con, settings, rules, as_of))


@task(name="tags", cache_policy=NO_CACHE)
def tags_task(settings: Settings, rules: RuleSet, as_of: date):
    return _in_work_db(settings, lambda con: apply_tags(con, rules, as_of))


@task(name="publish", cache_policy=NO_CACHE, **IO_RETRIES)
def publish_task(settings: Settings, rules: RuleSet, record: RunRecord):
    return publish(settings, rules, record)


def default_as_of(settings: Settings) -> date:
    """Yesterday in the business time zone: the last complete business day."""
    return datetime.now(ZoneInfo(settings.timezone)).date() - timedelta(days=1)


def _timed(record: RunRecord, name: str, call: Callable):
    started = time.perf_counter()
    result = call()
    record.stage_seconds[name] = round(time.perf_counter() - started, 3)
    record.row_counts[name] = int(result.row_count)
    return result


@flow(name="nightly", log_prints=True)
def nightly(as_of: str | None = None) -> dict:
    """Run the whole pipeline for ``as_of`` (YYYY-MM-DD; default yesterday) and publish it."""
    logger = get_run_logger()
    settings = Settings.from_env()
    day = date.fromisoformat(as_of) if as_of else default_as_of(settings)
    rules = load_rules()
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    record = RunRecord(run_id=run_id, as_of=day)
    with run_lock(settings):
        _in_work_db(settings, lambda con: start_run(con, record))
        logger.info("run %s for as_of %s, data in %s", run_id, day, settings.data_dir)
        try:
            landed = _timed(record, "land", lambda: land_task(settings, run_id))
            validated = _timed(record, "validate", lambda: validate_task(settings, run_id))
            _timed(record, "stage", lambda: stage_task(settings))
            identity = _timed(record, "resolve_identities", lambda: identity_task(settings, run_id))
            _timed(record, "features", lambda: features_task(settings, rules, day))
            _timed(record, "tags", lambda: tags_task(settings, rules, day))
            record.warnings += landed.failures + validated.rejected + identity.warnings
            record.status = "degraded" if landed.failures or validated.rejected else "success"
            published = _timed(record, "publish", lambda: publish_task(settings, rules, record))
        except BaseException as exc:
            record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
            _in_work_db(settings, lambda con: finish_run(con, record))
            raise
        _in_work_db(settings, lambda con: finish_run(con, record))
    for warning in record.warnings:
        logger.warning(warning)
    logger.info("published %s (%s)", published.warehouse, record.status)
    return {"run_id": run_id, "as_of": day.isoformat(), "status": record.status,
            "warehouse": str(published.warehouse), "export": str(published.export),
            "stage_seconds": record.stage_seconds, "row_counts": record.row_counts,
            "tables": published.tables, "warnings": record.warnings}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m pipelines.nightly", description=nightly.__doc__)
    parser.add_argument("--as-of", help="business date YYYY-MM-DD (default: yesterday)")
    args = parser.parse_args(argv)
    return nightly(as_of=args.as_of)


if __name__ == "__main__":
    main()

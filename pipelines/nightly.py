"""The nightly flow: land -> validate -> stage -> resolve identities -> features -> tags -> publish.

Every stage is a plain function in warehouse/ taking a connection and settings; the tasks
here only open the work database, call the stage and hand back its small result.  I/O tasks
retry with backoff and never cache (a cached extract would return yesterday's files).
With no Prefect server configured the flow runs in Prefect's local mode.

    python -m pipelines.nightly --as-of 2026-11-21
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import resource
import time
import uuid
from collections.abc import Callable
from contextlib import closing, contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from rules.model import RuleSet, load_rules
from warehouse.core_checks import check_core_tables
from warehouse.features import compute_features
from warehouse.identity import resolve_identities
from warehouse.land import forget_lake, land
from warehouse.publish import WarehouseCopy, latest_published_as_of, publish
from warehouse.quality import data_docs_index
from warehouse.runs import RunRecord, finish_run, run_lock, start_run
from warehouse.settings import Settings
from warehouse.stage import stage
from warehouse.tagging import apply_tags
from warehouse.validate import quality_summary, validate
from warehouse.workdb import open_work_db

M_ARENA_MAX = -8  # glibc malloc.h

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
    model = settings.identity_model if settings.identity_model.exists() else None
    if model is None:
        get_run_logger().info("no identity model at %s: deterministic links only (train one with "
                              "`tagwright identity train`)", settings.identity_model)
    return _in_work_db(settings, lambda con: resolve_identities(con, run_id, model, settings.memory_limit))


@task(name="features", cache_policy=NO_CACHE)
def features_task(settings: Settings, rules: RuleSet, as_of: date):
    return _in_work_db(settings, lambda con: compute_features(con, settings, rules, as_of))


@task(name="tags", cache_policy=NO_CACHE)
def tags_task(settings: Settings, rules: RuleSet, as_of: date):
    return _in_work_db(settings, lambda con: apply_tags(con, settings, rules, as_of))


@task(name="core_checks", cache_policy=NO_CACHE)
def core_checks_task(settings: Settings, rules: RuleSet, run_id: str):
    return _in_work_db(settings, lambda con: check_core_tables(con, settings, rules, run_id))


@task(name="publish", cache_policy=NO_CACHE, **IO_RETRIES)
def publish_task(settings: Settings, rules: RuleSet, record: RunRecord, copy: WarehouseCopy, rebuild: bool):
    return publish(settings, rules, record, copy, rebuild=rebuild)


def default_as_of(settings: Settings) -> date:
    """Yesterday in the business time zone: the last complete business day."""
    return datetime.now(ZoneInfo(settings.timezone)).date() - timedelta(days=1)


def _use_the_system_allocator() -> None:
    """Arrow allocates with glibc, as pandas and numpy do, so _give_back_memory's malloc_trim
    returns what a stage freed.  With Arrow's default (mimalloc), memory Arrow used on
    landing's reader threads stayed with the process: at 1M customers validation then peaked
    at 2,977 MiB, against 2,231 MiB with glibc (2,457 with jemalloc), landing as fast."""
    pa.set_memory_pool(pa.system_memory_pool())


def _limit_malloc_arenas() -> None:
    """glibc keeps at most two arenas (its default is eight per core): each thread that
    allocates (DuckDB's, landing's reader, Prefect's) otherwise gets its own, and memory freed
    there stays in pieces malloc_trim cannot return.  At 1M customers the nightly peaked at
    2,673 to 2,851 MiB in four runs, against 2,977 and 2,992 without, as fast.  Done on import,
    before Prefect or a stage starts a thread (an arena, once made, stays)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc
        pass


_limit_malloc_arenas()


def _give_back_memory() -> None:
    """Return what a stage freed to the operating system: glibc and Arrow keep freed memory
    for reuse, and the next stage's DuckDB (up to its memory limit) would sit on top of it."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


@contextmanager
def _heap_frozen():
    """Leave the objects alive as the run starts (the modules of Prefect, GX, pandas: 370,000
    and more) out of garbage collection while it runs: each of _give_back_memory's collections
    then scans only what the run made, and took 0.3 s instead.  Given back to the collector
    after the run, so nothing is kept that would otherwise be freed."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _timed(record: RunRecord, name: str, call: Callable):
    started, cpu = time.perf_counter(), time.process_time()
    result = call()
    _give_back_memory()
    record.stage_seconds[name] = round(time.perf_counter() - started, 3)
    record.stage_cpu_seconds[name] = round(time.process_time() - cpu, 3)
    record.stage_peak_rss_mib[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    record.row_counts[name] = int(result.row_count)
    return result


@flow(name="nightly", log_prints=True)
def nightly(as_of: str | None = None, full_rebuild: bool = False) -> dict:
    """Run the whole pipeline for ``as_of`` (YYYY-MM-DD; default yesterday) and publish it.

    Incremental by default: only files not landed before are read.  ``full_rebuild`` forgets
    the lake and lands every inbox file again (customer ids and tag history are kept).
    """
    logger = get_run_logger()
    _use_the_system_allocator()
    settings = Settings.from_env()
    day = date.fromisoformat(as_of) if as_of else default_as_of(settings)
    rules = load_rules()
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    record = RunRecord(run_id=run_id, as_of=day)
    with run_lock(settings), _heap_frozen():
        _in_work_db(settings, lambda con: start_run(con, record))
        logger.info("run %s for as_of %s, data in %s", run_id, day, settings.data_dir)
        copy = None
        try:
            if full_rebuild:
                _in_work_db(settings, lambda con: forget_lake(con, settings))
            landed = _timed(record, "land", lambda: land_task(settings, run_id))
            validated = _timed(record, "validate", lambda: validate_task(settings, run_id))
            staged = _timed(record, "stage", lambda: stage_task(settings))
            logger.info("staged incrementally: %s (kept: no new file; merged: new files only; rebuilt: whole lake)",
                        ", ".join(f"{table} {how}" for table, how in staged.incremental.items()))
            # Publishing starts from a copy of the published file, as large as the history kept:
            # made on a thread while the CPU-bound stages below run.
            copy = WarehouseCopy(settings, run_id)
            identity = _timed(record, "resolve_identities", lambda: identity_task(settings, run_id))
            logger.info("identity: %d source customers -> %d customers; resolved again: %s; merged by link kind "
                        "among them: %s; %d pairs for review", identity.source_customers, identity.customers,
                        f"{identity.resolved} touched by a change" if identity.incremental else "all",
                        ", ".join(f"{k} {n}" for k, n in identity.merged_by.items()), identity.review_pairs)
            features = _timed(record, "features", lambda: features_task(settings, rules, day))
            for model, params in features.models.items():
                logger.info("model %s fitted: %s", model, ", ".join(f"{k}={v:.4g}" for k, v in params.items()))
            tagged = _timed(record, "tags", lambda: tags_task(settings, rules, day))
            checked = _timed(record, "core_checks", lambda: core_checks_task(settings, rules, run_id))
            record.warnings += (landed.failures + validated.rejected + identity.warnings + tagged.warnings
                                + checked.warnings)
            record.status = "degraded" if landed.failures or validated.rejected else "success"
            published = _timed(record, "publish", lambda: publish_task(settings, rules, record, copy, full_rebuild))
        except BaseException as exc:
            if copy is not None:
                copy.discard()
            record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
            _in_work_db(settings, lambda con: finish_run(con, record))
            raise
        _in_work_db(settings, lambda con: finish_run(con, record))
    for warning in record.warnings:
        logger.warning(warning)
    copied = (f", starting from a copy of the last one ({published.copied_bytes >> 20} MiB, copied in "
              f"{published.copy_seconds:.1f} s during the run, {published.copy_wait_seconds:.1f} s of it waited for; "
              "it grows with the tag history kept)" if published.copied_bytes else "")
    logger.info("published %s (%s, orders and order lines %s, customers and their source ids %s)%s",
                published.warehouse, record.status, published.orders, published.customers, copied)
    create_markdown_artifact(key="nightly-summary", markdown=_summary_markdown(record, published, data_docs_index(settings)),
                             description=f"tagwright nightly run for {day}")
    create_table_artifact(key="nightly-quality", table=_in_work_db(settings, lambda con: quality_summary(con, run_id)),
                          description=f"files landed and rows quarantined by run {run_id}")
    return {"run_id": run_id, "as_of": day.isoformat(), "status": record.status,
            "warehouse": str(published.warehouse), "export": str(published.export),
            "stage_seconds": record.stage_seconds, "stage_cpu_seconds": record.stage_cpu_seconds,
            "stage_peak_rss_mib": record.stage_peak_rss_mib,
            "row_counts": record.row_counts,
            "tables": published.tables, "published_orders": published.orders,
            "published_customers": published.customers, "warnings": record.warnings,
            "publish_copy": {"copied_mib": published.copied_bytes >> 20, "copy_s": round(published.copy_seconds, 4),
                             "waited_s": round(published.copy_wait_seconds, 4)},
            "data_docs": str(data_docs_index(settings))}


def _summary_markdown(record: RunRecord, published, data_docs: Path) -> str:
    lines = [f"# tagwright run {record.run_id}", "", f"as_of **{record.as_of}**, status **{record.status}**",
             f"warehouse `{published.warehouse}`", f"Data Docs `{data_docs}`", "", "| stage | seconds | rows |",
             "| --- | --- | --- |"]
    lines += [f"| {s} | {t} | {record.row_counts.get(s, '')} |" for s, t in record.stage_seconds.items()]
    lines += ["", "| table | rows |", "| --- | --- |"] + [f"| {t} | {n} |" for t, n in published.tables.items()]
    if record.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in record.warnings]
    return "\n".join(lines)


@flow(name="backfill", log_prints=True)
def backfill(start: str, end: str) -> list[dict]:
    """Rebuild published tags and their history for every day from ``start`` to ``end``.

    Each day is an ordinary nightly run for that as_of, so a backfilled day equals what a run
    on that day publishes from the same inputs.  History after ``start`` is rebuilt; if the
    warehouse already holds a later day than ``end``, the backfill continues to that day so
    the published tags stay the newest ones.
    """
    logger = get_run_logger()
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    if last < first:
        raise ValueError(f"backfill range is empty: --from {start} is after --to {end}")
    published = latest_published_as_of(Settings.from_env())
    if published and published > last:
        logger.info("the warehouse already holds %s; continuing the backfill to that day", published)
        last = published
    results = []
    day = first
    while day <= last:
        results.append(nightly(as_of=day.isoformat()))
        day += timedelta(days=1)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m pipelines.nightly", description=nightly.__doc__)
    parser.add_argument("--as-of", help="business date YYYY-MM-DD (default: yesterday)")
    parser.add_argument("--full-rebuild", action="store_true", help="land every inbox file again")
    args = parser.parse_args(argv)
    return nightly(as_of=args.as_of, full_rebuild=args.full_rebuild)


if __name__ == "__main__":
    main()

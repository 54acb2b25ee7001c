"""Nightly operations against real processes: a Prefect server, a worker, killed runs, readers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from pipelines.nightly import backfill, nightly
from tests.conftest import AS_OF, copy_inbox, deliver_held_back, hold_back_newest_marketplace_export

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
STAGES = ["land", "validate", "stage", "resolve_identities", "features", "tags", "publish"]
PUBLISHED_TABLES = ["customer_tags", "customer_tags_wide", "customer_features", "tag_history", "tag_changes", "tag_stats", "customers",
                    "customer_source_ids", "orders", "order_lines"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _analytics(warehouse: Path) -> dict[str, list]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {t: con.execute(f"SELECT * FROM analytics.{t} ORDER BY ALL").fetchall() for t in PUBLISHED_TABLES}


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _run_in_subprocess(data: Path, as_of, **extra_env) -> subprocess.Popen:
    env = {**os.environ, "TAGWRIGHT_DATA_DIR": str(data), "PREFECT_API_URL": _api_url(), **extra_env}
    return subprocess.Popen([sys.executable, "-m", "pipelines.nightly", "--as-of", as_of.isoformat()], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def day_before(prefect_harness, sample_inbox, tmp_path_factory):
    """A data directory whose last published run is AS_OF - 1, with the marketplace's newest
    export delivered since (so the next run has files to land), and the reference warehouse of
    an uninterrupted run for AS_OF on top of it."""
    base = tmp_path_factory.mktemp("ops") / "base"
    mp = pytest.MonkeyPatch()
    mp.setenv("TAGWRIGHT_PII_KEY", "test-key-not-secret")
    mp.setenv("TAGWRIGHT_DATA_DIR", str(base))
    inbox = copy_inbox(sample_inbox, base)
    held = base.with_name("held")
    hold_back_newest_marketplace_export(inbox, held)
    nightly(as_of=(AS_OF - timedelta(days=1)).isoformat())
    deliver_held_back(held, inbox)
    reference = base.with_name("reference")
    shutil.copytree(base, reference)
    mp.setenv("TAGWRIGHT_DATA_DIR", str(reference))
    nightly(as_of=AS_OF.isoformat())
    mp.undo()
    return base, _analytics(reference / "warehouse.duckdb")


@pytest.mark.parametrize("stage", STAGES)
def test_a_run_killed_inside_any_stage_changes_nothing_and_a_rerun_recovers(day_before, tmp_path, monkeypatch,
                                                                           stage):
    base, reference = day_before
    data = tmp_path / "data"
    shutil.copytree(base, data)
    last_good = (data / "warehouse.duckdb").read_bytes()
    killed = _run_in_subprocess(data, AS_OF, TAGWRIGHT_FAILPOINT=stage, TAGWRIGHT_PII_KEY="test-key-not-secret")
    _, stderr = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, stderr[-2000:]
    assert (data / "warehouse.duckdb").read_bytes() == last_good, f"killed in {stage}: the warehouse changed"
    monkeypatch.setenv("TAGWRIGHT_DATA_DIR", str(data))
    monkeypatch.setenv("TAGWRIGHT_PII_KEY", "test-key-not-secret")
    nightly(as_of=AS_OF.isoformat())
    assert _analytics(data / "warehouse.duckdb") == reference
    assert not list(data.glob(".warehouse.duckdb.*")), "no half-built warehouse is left behind"
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        ledger = con.execute("SELECT status, error FROM ops.runs ORDER BY started_at").fetchall()
    assert [status for status, _ in ledger] == ["success", "failed", "success"]
    assert ledger[1][1].startswith("interrupted")


def test_a_hundred_read_only_queries_during_a_run_all_succeed_and_see_one_run(day_before, tmp_path):
    base, _ = day_before
    data = tmp_path / "data"
    shutil.copytree(base, data)
    run = _run_in_subprocess(data, AS_OF, TAGWRIGHT_PII_KEY="test-key-not-secret")
    seen, during = set(), 0
    for _ in range(100):
        with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
            as_of, days = con.execute("SELECT min(as_of), count(DISTINCT as_of) FROM analytics.customer_tags"
                                      ).fetchone()
            wide = con.execute("SELECT DISTINCT as_of FROM analytics.customer_tags_wide").fetchall()
            latest_run = con.execute("SELECT max(as_of) FROM ops.runs WHERE status = 'success'").fetchone()[0]
        assert days == 1 and wide == [(as_of,)] and latest_run == as_of, "a reader saw a mix of two runs"
        seen.add(as_of)
        during += run.poll() is None
        time.sleep(0.05)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-2000:]
    assert during > 0, "the queries must overlap the run"
    assert seen <= {AS_OF - timedelta(days=1), AS_OF}


def test_a_backfill_gives_the_history_of_daily_runs(prefect_harness, sample_inbox, data_dir):
    copy_inbox(sample_inbox, data_dir)
    first = AS_OF - timedelta(days=29)
    for offset in range(30):
        nightly(as_of=(first + timedelta(days=offset)).isoformat())
    daily = _analytics(data_dir / "warehouse.duckdb")
    assert {r[0] for r in daily["tag_stats"]} == {first + timedelta(days=d) for d in range(30)}
    # Rebuild the last part of the range: the backfill runs on to the newest published day.
    results = backfill(start=(AS_OF - timedelta(days=3)).isoformat(), end=(AS_OF - timedelta(days=2)).isoformat())
    assert [r["as_of"] for r in results] == [(AS_OF - timedelta(days=d)).isoformat() for d in (3, 2, 1, 0)]
    assert _analytics(data_dir / "warehouse.duckdb") == daily
    history, changes = _history_of_the_exports(data_dir / "exports" / "customer_tags")
    assert daily["tag_history"] == history and daily["tag_changes"] == changes


def _history_of_the_exports(exports: Path) -> tuple[list, list]:
    """The SCD2 history and the changes the daily customer_tags exports imply, computed apart
    from publishing (gaps and islands over every day of every customer's tag)."""
    with duckdb.connect() as con:
        con.execute(f"""
            CREATE TABLE marked AS
            WITH daily AS (SELECT CAST(regexp_extract(filename, 'as_of=([0-9-]+)', 1) AS DATE) AS as_of,
                                  customer_id, tag, value
                           FROM read_parquet('{exports}/*/customer_tags.parquet', filename = true)),
                 grid AS (SELECT k.customer_id, k.tag, d.as_of, v.value
                          FROM (SELECT DISTINCT customer_id, tag FROM daily) k
                          CROSS JOIN (SELECT DISTINCT as_of FROM daily) d
                          LEFT JOIN daily v USING (customer_id, tag, as_of))
            SELECT *, lag(value) OVER w AS before, value IS DISTINCT FROM lag(value) OVER w AS moved
            FROM grid WINDOW w AS (PARTITION BY customer_id, tag ORDER BY as_of)""")
        history = con.execute("""
            SELECT customer_id, tag, any_value(value), min(as_of),
                   CASE WHEN max(as_of) < (SELECT max(as_of) FROM marked) THEN max(as_of) + 1 END
            FROM (SELECT *, sum(moved::INTEGER) OVER (PARTITION BY customer_id, tag ORDER BY as_of) AS island
                  FROM marked)
            WHERE value IS NOT NULL GROUP BY customer_id, tag, island ORDER BY ALL""").fetchall()
        changes = con.execute("SELECT as_of, customer_id, tag, before, value FROM marked WHERE moved"
                              " ORDER BY ALL").fetchall()
    return history, changes


def test_the_nightly_deployment_runs_on_a_real_prefect_server(sample_inbox, tmp_path):
    port = _free_port()
    data = tmp_path / "data"
    copy_inbox(sample_inbox, data)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TAGWRIGHT_DATA_DIR": str(data),
           "TAGWRIGHT_HOME": str(ROOT), "TAGWRIGHT_PII_KEY": "test-key-not-secret"}

    def prefect(*args: str, timeout: int = 120) -> str:
        done = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the Prefect server did not start"
                time.sleep(1)
        prefect("work-pool", "create", "tagwright-process", "--type", "process")
        prefect("--no-prompt", "deploy", "--name", "nightly")
        described = prefect("deployment", "inspect", "nightly/nightly")
        assert "Asia/Shanghai" in described and "0 2 * * *" in described and "CANCEL_NEW" in described
        prefect("deployment", "run", "nightly/nightly", "--param", f"as_of={AS_OF.isoformat()}")
        prefect("worker", "start", "--pool", "tagwright-process", "--run-once", timeout=600)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT status, as_of FROM ops.runs").fetchall() == [("success", AS_OF)]
        assert con.execute("SELECT count(*) FROM analytics.customer_tags").fetchone()[0] > 1000

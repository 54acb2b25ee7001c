"""What a run promises the people who read the warehouse: one run at a time, never half a
publish, history that moves day by day."""

from __future__ import annotations

import csv
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

import pipelines.nightly as nightly_module
from pipelines.nightly import nightly
from rules.model import load_rules
from tests.conftest import AS_OF, copy_inbox, deliver_held_back, hold_back_newest_marketplace_export
from warehouse.errors import RunLockedError
from warehouse.publish import publish
from warehouse.runs import RunRecord, run_lock
from warehouse.settings import Settings

pytestmark = pytest.mark.e2e


def test_a_second_run_is_refused_while_one_holds_the_data_directory(prefect_harness, settings):
    with run_lock(settings):
        with pytest.raises(Exception) as err:
            nightly(as_of=AS_OF.isoformat())
    assert isinstance(err.value, RunLockedError) or "another run is in progress" in str(err.value)


def test_a_failed_publish_leaves_the_last_good_warehouse_untouched(prefect_harness, sample_inbox, data_dir,
                                                                  monkeypatch):
    copy_inbox(sample_inbox, data_dir)
    good = nightly(as_of=(AS_OF - timedelta(days=1)).isoformat())
    before = (data_dir / "warehouse.duckdb").read_bytes()

    import warehouse.publish as publish_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(publish_module, "_history", broken)
    # The publish task retries I/O errors after 10 s and 60 s; this test needs the final failure now.
    monkeypatch.setattr(nightly_module, "publish_task", nightly_module.publish_task.with_options(retries=0))
    with pytest.raises(OSError, match="disk full"):
        nightly(as_of=AS_OF.isoformat())
    assert (data_dir / "warehouse.duckdb").read_bytes() == before
    assert not list(data_dir.glob(".warehouse.duckdb.*")), "the half-built file is removed"
    with duckdb.connect(str(data_dir / "restricted" / "work.duckdb"), read_only=True) as con:
        statuses = con.execute("SELECT as_of, status, error FROM ops.runs ORDER BY started_at").fetchall()
    assert [s[1] for s in statuses] == ["success", "failed"] and "disk full" in statuses[1][2]
    assert good["status"] == "success"


def test_the_published_file_is_copied_while_the_stages_before_publishing_run(prefect_harness, sample_inbox,
                                                                            data_dir, monkeypatch):
    """The copy publishing starts from (it holds the whole history kept) is made on a thread from
    the identity stage on, and a run that fails before publishing deletes it."""
    copy_inbox(sample_inbox, data_dir)
    nightly(as_of=(AS_OF - timedelta(days=1)).isoformat())
    copies_seen = []
    compute_features = nightly_module.compute_features

    def features_watching_the_copy(*args, **kwargs):
        copies_seen.extend(data_dir.glob(".warehouse.duckdb.*.building"))
        return compute_features(*args, **kwargs)

    monkeypatch.setattr(nightly_module, "compute_features", features_watching_the_copy)
    result = nightly(as_of=AS_OF.isoformat())
    assert len(copies_seen) == 1 and result["run_id"] in copies_seen[0].name
    assert not list(data_dir.glob(".warehouse.duckdb.*"))

    def features_failing(*args, **kwargs):
        copies_seen.extend(data_dir.glob(".warehouse.duckdb.*.building"))
        raise RuntimeError("features broke")

    monkeypatch.setattr(nightly_module, "compute_features", features_failing)
    with pytest.raises(RuntimeError, match="features broke"):
        nightly(as_of=AS_OF.isoformat())
    assert len(copies_seen) == 2, "the failed run had started its copy"
    assert not list(data_dir.glob(".warehouse.duckdb.*")), "and deleted it"


def test_a_publish_retried_after_a_failure_starts_from_a_fresh_copy(prefect_harness, sample_inbox, data_dir,
                                                                   monkeypatch):
    """A failed publish deletes the copy it started from; the retry copies the published file
    again, so the history kept comes with it (a retry from no copy would publish an empty one)."""
    copy_inbox(sample_inbox, data_dir)
    nightly(as_of=(AS_OF - timedelta(days=1)).isoformat())
    import warehouse.publish as publish_module

    history, failures = publish_module._history, []

    def history_failing_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise OSError("disk full")
        return history(*args, **kwargs)

    monkeypatch.setattr(publish_module, "_history", history_failing_once)
    monkeypatch.setattr(nightly_module, "publish_task",
                        nightly_module.publish_task.with_options(retries=1, retry_delay_seconds=0))
    result = nightly(as_of=AS_OF.isoformat())
    assert failures and result["status"] == "success"
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        days = con.execute("SELECT DISTINCT as_of FROM analytics.tag_stats ORDER BY 1").fetchall()
        assert [d for (d,) in days] == [AS_OF - timedelta(days=1), AS_OF]
        assert con.execute("SELECT count(*) FROM analytics.tag_history WHERE valid_from = ?",
                           [AS_OF - timedelta(days=1)]).fetchone()[0] > 0
    assert not list(data_dir.glob(".warehouse.duckdb.*"))


def test_history_and_changes_move_day_by_day(prefect_harness, sample_inbox, data_dir):
    copy_inbox(sample_inbox, data_dir)
    days = [AS_OF - timedelta(days=1), AS_OF]
    for day in days:
        result = nightly(as_of=day.isoformat())
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        # Today's tags are exactly the open history rows.
        open_rows = con.execute("SELECT customer_id, tag, value FROM analytics.tag_history WHERE valid_to IS NULL"
                                " ORDER BY ALL").fetchall()
        assert open_rows == con.execute("SELECT customer_id, tag, value FROM analytics.customer_tags"
                                        " ORDER BY ALL").fetchall()
        # Every change on the second day closed one history row and/or opened another.
        changes = con.execute("SELECT count(*) FROM analytics.tag_changes WHERE as_of = ?", [AS_OF]).fetchone()[0]
        closed = con.execute("SELECT count(*) FROM analytics.tag_history WHERE valid_to = ?", [AS_OF]).fetchone()[0]
        opened = con.execute("SELECT count(*) FROM analytics.tag_history WHERE valid_from = ?", [AS_OF]).fetchone()[0]
        assert changes > 0 and closed <= changes and opened <= changes and closed + opened >= changes
        assert con.execute("SELECT count(DISTINCT as_of) FROM analytics.tag_stats").fetchone()[0] == 2
        assert con.execute("SELECT count(*) FROM ops.runs").fetchone()[0] == 2
        # No customer holds two open values of one tag.
        assert con.execute("""SELECT count(*) FROM (SELECT customer_id, tag FROM analytics.tag_history
                              WHERE valid_to IS NULL GROUP BY ALL HAVING count(*) > 1)""").fetchone()[0] == 0


def test_a_full_rebuild_lands_everything_again_and_publishes_the_same_tags(prefect_harness, sample_inbox,
                                                                          data_dir):
    copy_inbox(sample_inbox, data_dir)
    first = nightly(as_of=AS_OF.isoformat())
    query = "SELECT * FROM analytics.customer_tags ORDER BY ALL"
    with duckdb.connect(first["warehouse"], read_only=True) as con:
        before = con.execute(query).fetchall()
    rebuilt = nightly(as_of=AS_OF.isoformat(), full_rebuild=True)
    assert rebuilt["row_counts"]["land"] == first["row_counts"]["land"] > 0
    with duckdb.connect(rebuilt["warehouse"], read_only=True) as con:
        assert con.execute(query).fetchall() == before
        statuses = dict(con.execute("SELECT status, count(*) FROM ops.loads GROUP BY 1").fetchall())
    assert statuses["superseded"] == statuses["validated"] + statuses["duplicate"]


def test_orders_and_customers_updated_in_place_are_those_built_from_scratch(prefect_harness, sample_inbox,
                                                                           data_dir):
    """A night publishes only the orders and customers that changed into last night's tables; what
    it publishes is what building them from the whole work file gives."""
    inbox = copy_inbox(sample_inbox, data_dir)
    held = data_dir.with_name("held")
    hold_back_newest_marketplace_export(inbox, held)
    picked_up = _hold_back_a_picked_up_order(inbox, held)
    nightly(as_of=(AS_OF - timedelta(days=1)).isoformat())
    night_before = _published(data_dir)
    deliver_held_back(held, inbox)
    merged = _merge_two_web_buyers(inbox / "web")

    night = nightly(as_of=AS_OF.isoformat())
    assert night["published_orders"] == night["published_customers"] == "updated"
    updated = _published(data_dir)
    rebuilt = publish(Settings.from_env(), load_rules(), RunRecord(run_id="rebuilt", as_of=AS_OF, status="success"),
                      rebuild=True)
    assert rebuilt.orders == rebuilt.customers == "rebuilt"
    assert _published(data_dir) == updated

    # What the night changed: new customers (the newest export's new buyers), a customer gone (one
    # of two merged buyers),
    customers_before, customers_after = ({row[0] for row in n["customers"]} for n in (night_before, updated))
    assert customers_after - customers_before and customers_before - customers_after
    # whose source ids now have the other's customer id,
    source_ids_before, source_ids_after = (set(n["customer_source_ids"]) for n in (night_before, updated))
    assert source_ids_after - source_ids_before and source_ids_before - source_ids_after
    # the newest export's orders and re-exported ones refunded since,
    before, after = set(night_before["orders"]), set(updated["orders"])
    assert after - before and before - after
    assert set(updated["order_lines"]) - set(night_before["order_lines"])
    # orders dated AS_OF that files landed before held (left out the night before),
    assert any(row[0] != "marketplace" and row[4] == AS_OF for row in after - before)
    # the earlier orders of one of two merged buyers, now under the other's customer id,
    customer = {(r[0], r[1]): r[2] for r in after}
    customer_before = {(r[0], r[1]): r[2] for r in before}
    assert len({customer[order] for order in merged}) == 1
    assert [order for order in merged if order in customer_before and customer[order] != customer_before[order]]
    # and the store receipt of a marketplace order delivered late, now a copy of that order.
    assert picked_up in customer_before and picked_up not in customer


def test_what_a_night_cannot_update_in_place_is_published_afresh(prefect_harness, sample_inbox, data_dir,
                                                                   monkeypatch):
    """Another pseudonym key changes every customer's pseudonyms; a stage table staged again from
    the whole lake (here: its files written again) may hold other values under the same loads."""
    copy_inbox(sample_inbox, data_dir)
    nightly(as_of=(AS_OF - timedelta(days=2)).isoformat())
    monkeypatch.setenv("TAGWRIGHT_PII_KEY", "another-key")
    night = nightly(as_of=(AS_OF - timedelta(days=1)).isoformat())
    assert (night["published_orders"], night["published_customers"]) == ("updated", "rebuilt")
    for lake_file in (data_dir / "restricted" / "lake").rglob("*.parquet"):
        os.utime(lake_file, ns=(time.time_ns(), time.time_ns()))
    night = nightly(as_of=AS_OF.isoformat())
    assert night["published_orders"] == night["published_customers"] == "rebuilt"
    assert nightly(as_of=AS_OF.isoformat())["published_customers"] == "updated"


def _published(data: Path) -> dict[str, list]:
    """The published tables a night updates in place."""
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        return {t: con.execute(f"SELECT * FROM analytics.{t} ORDER BY ALL").fetchall()
                for t in ("orders", "order_lines", "customers", "customer_source_ids")}


def _hold_back_a_picked_up_order(inbox: Path, held: Path) -> tuple[str, str]:
    """Move the rows of one marketplace order picked up in a store from the marketplace's exports
    to ``held``; returns the store receipt (published as an order of its own until the
    marketplace's order arrives)."""
    with open(inbox / "store" / "pos_transactions_pickups.csv", encoding="gbk", newline="") as f:
        receipt, *_, order = next(csv.reader(f.readlines()[1:]))
    late = []
    for export in sorted((inbox / "marketplace").glob("orders_*.csv")):
        header, *rows = export.read_text(encoding="utf-8-sig").splitlines(keepends=True)
        late += [r for r in rows if r.startswith(order + ",")]
        export.write_text(header + "".join(r for r in rows if not r.startswith(order + ",")), encoding="utf-8-sig")
    assert late, f"the sample's marketplace exports hold no order {order}"
    (held / "orders_late.csv").write_text(header + "".join(late), encoding="utf-8-sig")
    return "store", receipt


def _merge_two_web_buyers(web: Path) -> list[tuple[str, str]]:
    """Deliver a newer profile of one web buyer with another buyer's email, so that the next run
    merges their customers; returns the web orders of both (all landed before)."""
    users = [json.loads(line) for line in (web / "users.jsonl").read_text(encoding="utf-8").splitlines()]
    orders: dict[str, list[str]] = {}
    for line in (web / "orders.jsonl").read_text(encoding="utf-8").splitlines():
        order = json.loads(line)
        orders.setdefault(order["user_id"], []).append(order["order_id"])
    first, second = [u for u in users if u["user_id"] in orders and u.get("email") and "@" in u["email"]
                     and not u.get("member_card")][:2]
    newer = {**second, "email": first["email"], "updated_at": f"{AS_OF}T08:00:00Z"}
    (web / "users_merge.jsonl").write_text(json.dumps(newer, ensure_ascii=False) + "\n", encoding="utf-8")
    return [("web", order) for user in (first, second) for order in orders[user["user_id"]]]


def test_a_broken_source_file_degrades_the_run_but_the_others_publish(prefect_harness, sample_inbox, data_dir):
    from prefect.client.orchestration import get_client
    from typer.testing import CliRunner

    from pipelines.cli import app

    inbox = copy_inbox(sample_inbox, data_dir)
    (inbox / "store" / "members_extra.csv").write_bytes("会员卡号,姓名\nM1,张三\n".encode("utf-16"))
    result = CliRunner().invoke(app, ["run", "--as-of", AS_OF.isoformat()])
    assert result.exit_code == 1, result.output
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        status, warnings = con.execute("SELECT status, warnings FROM ops.runs").fetchone()
        failed = con.execute("SELECT file, message FROM ops.loads WHERE status = 'failed'").fetchall()
        assert con.execute("SELECT count(*) FROM analytics.customer_tags").fetchone()[0] > 1000
        stale = con.execute("SELECT source FROM analytics.source_status WHERE stale").fetchall()
    assert stale == [("store",)]
    assert status == "degraded" and "members_extra.csv" in warnings
    assert failed[0][0] == "store/members_extra.csv" and "not valid gbk" in failed[0][1]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    summaries = [a for a in artifacts if a.key == "nightly-summary"]
    latest = max(summaries, key=lambda a: a.created)  # other tests' runs share the Prefect harness
    assert "degraded" in latest.data and "| land |" in latest.data
    quality = max((a for a in artifacts if a.key == "nightly-quality"), key=lambda a: a.created)
    assert "members_extra.csv" in str(quality.data) and "not valid gbk" in str(quality.data)


def test_tag_history_keeps_only_the_configured_retention(prefect_harness, sample_inbox, data_dir, monkeypatch):
    monkeypatch.setenv("TAGWRIGHT_HISTORY_RETENTION_DAYS", "1")
    copy_inbox(sample_inbox, data_dir)
    for back in (2, 1, 0):
        result = nightly(as_of=(AS_OF - timedelta(days=back)).isoformat())
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        assert {r[0] for r in con.execute("SELECT DISTINCT as_of FROM analytics.tag_stats").fetchall()} == \
            {AS_OF - timedelta(days=1), AS_OF}
        assert con.execute("SELECT min(as_of) FROM analytics.tag_changes").fetchone()[0] == AS_OF - timedelta(days=1)
        assert con.execute("SELECT count(*) FROM analytics.tag_history WHERE valid_to < ?",
                           [AS_OF - timedelta(days=1)]).fetchone()[0] == 0


def test_publishing_night_after_night_reuses_the_warehouse_file(prefect_harness, sample_inbox, data_dir):
    """Each publish starts from a copy of the published file and replaces all but the history and
    the orders: the space the replaced tables held is reused, so the file does not grow by a
    night's tables."""
    copy_inbox(sample_inbox, data_dir)
    nightly(as_of=AS_OF.isoformat())
    settings, rules = Settings.from_env(), load_rules()
    sizes = [settings.warehouse.stat().st_size]
    for night in range(4):
        result = publish(settings, rules, RunRecord(run_id=f"again-{night}", as_of=AS_OF, status="success"))
        assert result.copied_bytes == sizes[-1] and result.copy_seconds > 0  # the copy it started from, timed
        sizes.append(settings.warehouse.stat().st_size)
    assert max(sizes[1:]) <= min(sizes[1:]) * 1.05, sizes


def test_a_discarded_copy_stops_where_it_is(settings, monkeypatch):
    """A run that fails does not wait for the rest of a copy it will not use (about a minute at
    three years of history at 1M customers); the copy's file is deleted."""
    import warehouse.publish as publish_module

    monkeypatch.setattr(publish_module, "COPY_CHUNK", 1 << 20)
    settings.data_dir.mkdir(parents=True)
    with open(settings.warehouse, "wb") as published:
        published.truncate(8 << 30)  # 8 GiB, sparse: a copy to the end would write all of it
    copy = publish_module.WarehouseCopy(settings, "r1")
    copy.discard()
    copied, _ = copy._copied.result()
    assert copied < 8 << 30 and not copy.path.exists()


def test_the_copy_goes_through_python_where_the_kernel_cannot_copy_between_files(tmp_path, monkeypatch):
    import threading

    import warehouse.publish as publish_module

    def no_sendfile(*args):
        raise OSError(22, "Invalid argument")  # macOS: sendfile only to a socket

    monkeypatch.setattr(publish_module.os, "sendfile", no_sendfile)
    monkeypatch.setattr(publish_module, "COPY_CHUNK", 1000)
    source, target = tmp_path / "published.duckdb", tmp_path / "copy.duckdb"
    source.write_bytes(bytes(range(256)) * 40)
    assert publish_module._copy_file(source, target, threading.Event())[0] == 10240
    assert target.read_bytes() == source.read_bytes()

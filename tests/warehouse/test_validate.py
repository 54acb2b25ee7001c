"""Validation: bad rows go to quarantine with file, row, column and reason; counts add up."""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import replace

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.warehouse.helpers import run_through_identity, write_store_members, write_web_users
from warehouse.land import land
from warehouse.workdb import open_work_db


def test_bad_rows_are_quarantined_and_the_rest_loads(settings):
    settings = replace(settings, max_bad_share=0.9)  # keep this small file under the rejection threshold
    write_web_users(settings.inbox, [
        {"user_id": "U1", "email": "ok@example.com"},
        {"user_id": "U2", "email": "not an email"},
        {"user_id": None, "email": "b@example.com"},
        {"user_id": "U4", "birthday": "31/12/1990"},
        {"user_id": "U5", "email": "fine@example.com"},
    ])
    run_through_identity(settings)
    with duckdb.connect(str(settings.work_db), read_only=True) as con:
        load = con.execute("SELECT status, rows_in, rows_loaded, rows_quarantined FROM ops.loads").fetchone()
        assert load == ("validated", 5, 2, 3)
        found = con.execute("""SELECT "row", "column", reason FROM ops.quarantine ORDER BY "row", "column" """
                            ).fetchall()
        assert [(r, c) for r, c, _ in found] == [(2, "email"), (3, "source_customer_id"), (4, "_errors")]
        assert "birthday: cannot read '31/12/1990'" in found[2][2]
        assert con.execute("SELECT count(*) FROM stage.customer_records").fetchone()[0] == 2


def test_a_clean_batch_is_linked_into_the_validated_lake_and_one_with_bad_rows_written_without_them(settings):
    import os

    settings = replace(settings, max_bad_share=0.9)
    write_web_users(settings.inbox, [{"user_id": "U1"}, {"user_id": "U2"}], name="users_clean.jsonl")
    write_web_users(settings.inbox, [{"user_id": "U3"}, {"user_id": None}], name="users_dirty.jsonl")
    run_through_identity(settings)
    with duckdb.connect(str(settings.work_db), read_only=True) as con:
        loads = con.execute("SELECT file, lake_path, rows_loaded FROM ops.loads ORDER BY file").fetchall()
    validated = {os.path.basename(file): (raw, raw.replace(f"{os.sep}raw{os.sep}", f"{os.sep}valid{os.sep}"), rows)
                 for file, raw, rows in loads}
    raw, valid, rows = validated["users_clean.jsonl"]
    assert os.path.samefile(raw, valid) and pq.ParquetFile(valid).metadata.num_rows == rows == 2
    raw, valid, rows = validated["users_dirty.jsonl"]
    assert not os.path.samefile(raw, valid) and pq.ParquetFile(valid).metadata.num_rows == rows == 1
    # Landing never writes through the link: a file landed again at the same raw path (here its
    # manifest row is removed) gets a new file there; the validated one is left as it was.
    raw, valid, _ = validated["users_clean.jsonl"]
    with closing(open_work_db(settings)) as con:
        con.execute("DELETE FROM ops.loads WHERE ends_with(file, 'users_clean.jsonl')")
        land(con, settings, "r2")
    assert not os.path.samefile(raw, valid) and pq.ParquetFile(valid).metadata.num_rows == 2


def test_a_file_mostly_bad_is_rejected_whole_and_every_row_accounted(settings):
    write_store_members(settings.inbox, [{"会员卡号": f"M{i}", "姓名": "张三", "手机号": "13812345678",
                                          "生日": "not a date"} for i in range(5)])
    run_through_identity(settings)
    with duckdb.connect(str(settings.work_db), read_only=True) as con:
        assert con.execute("SELECT status, rows_in, rows_loaded, rows_quarantined FROM ops.loads").fetchone() == \
            ("rejected", 5, 0, 5)
        reasons = {r[0] for r in con.execute("SELECT reason FROM ops.quarantine WHERE expectation = 'batch_bad_share'"
                                             ).fetchall()}
        assert len(reasons) == 1 and "file rejected: 100% of its rows fail validation" in reasons.pop()


def test_a_collapsed_redelivery_under_the_same_name_is_not_loaded(settings):
    members = [{"会员卡号": f"M{i}", "姓名": "张三", "手机号": f"1381234{i:04d}"} for i in range(10)]
    write_store_members(settings.inbox, members)
    run_through_identity(settings, "r1")
    write_store_members(settings.inbox, members[:3])  # the same export, cut short
    run_through_identity(settings, "r2")
    with duckdb.connect(str(settings.work_db), read_only=True) as con:
        loads = con.execute("SELECT run_id, status, rows_in, rows_loaded, rows_quarantined FROM ops.loads"
                            " ORDER BY load_id").fetchall()
        reason = con.execute("SELECT DISTINCT reason FROM ops.quarantine WHERE expectation = 'batch_row_count_collapse'"
                             ).fetchall()
        staged = con.execute("SELECT count(*) FROM stage.customer_records").fetchone()[0]
    assert loads == [("r1", "validated", 10, 10, 0), ("r2", "rejected", 3, 0, 3)]
    assert "3 rows where its previous delivery under this name had 10" in reason[0][0]
    assert staged == 10  # the earlier complete delivery still stands


def test_the_committed_gx_file_context_loads_and_matches_the_entity_contract(tmp_path):
    import shutil

    import great_expectations as gx

    from sources.entities import EVENT_TYPES, INTERACTION_CHANNELS, INTERACTION_KINDS, ORDER_CHANNELS, ORDER_STATUSES
    from warehouse.quality import committed_context_dir, suite_names

    shutil.copytree(committed_context_dir(), tmp_path / "gx")
    context = gx.get_context(mode="file", project_root_dir=str(tmp_path))
    assert sorted(s.name for s in context.suites.all()) == suite_names()
    assert {"customer_record_rows", "order_rows", "order_line_rows", "event_rows", "interaction_rows",
            "customers_core", "orders_core", "customer_tags_core"} <= set(suite_names())
    sets = {(s.name, e.configuration.kwargs["column"]): set(e.configuration.kwargs["value_set"])
            for s in context.suites.all() for e in s.expectations if "value_set" in e.configuration.kwargs}
    assert sets[("order_rows", "status")] == set(ORDER_STATUSES)
    assert sets[("order_rows", "channel")] == set(ORDER_CHANNELS)
    assert sets[("event_rows", "event_type")] == set(EVENT_TYPES)
    assert sets[("interaction_rows", "channel")] == set(INTERACTION_CHANNELS)
    assert sets[("interaction_rows", "kind")] == set(INTERACTION_KINDS)


def test_core_checks_stop_a_run_whose_tags_break_their_contract(settings):
    import pytest

    from rules.model import load_rules
    from warehouse.core_checks import check_core_tables
    from warehouse.errors import StageError
    from warehouse.workdb import open_work_db

    write_web_users(settings.inbox, [{"user_id": f"U{i}", "email": f"u{i}@example.com"} for i in range(3)])
    run_through_identity(settings)
    con = open_work_db(settings)
    try:
        con.execute("CREATE TABLE features.customer_features AS SELECT customer_id FROM identity.golden")
        con.execute("""CREATE TABLE tags.customer_tags AS
                       SELECT customer_id, 'churn_risk' AS tag, 'extreme' AS value, NULL::DOUBLE AS score
                       FROM identity.golden""")
        with pytest.raises(StageError) as failed:
            check_core_tables(con, settings, load_rules(), "r1")
        recorded = con.execute("SELECT suite, expectation, success FROM ops.validations WHERE source = 'pipeline'"
                               " AND NOT success ORDER BY ALL").fetchall()
    finally:
        con.close()
    assert "expect_column_values_to_be_in_set on value for tag churn_risk" in str(failed.value)
    assert "extreme" in str(failed.value) and "nothing was published" in str(failed.value)
    assert ("customer_tags_core", "expect_column_values_to_be_in_set", False) in recorded
    assert ("tag_coverage_core", "expect_column_values_to_be_between", False) in recorded  # other tags: no customer


@pytest.mark.parametrize("extra_rows, failed_rows, counts", [
    ([("first", "churn_risk", "high")], 2, "('churn_risk: 4', 'churn_risk: 3')"),
    ([(None, "churn_risk", "low")], 1, "('churn_risk: 4', 'churn_risk: 3')"),
    ([("first", "retired_tag", "x"), ("first", "retired_tag", "x")], 1, "('retired_tag: 2', 'retired_tag: 1')"),
], ids=["a tag twice with different values", "a row of no customer", "a tag that is not active, twice"])
def test_core_checks_stop_a_customer_holding_a_tag_twice(settings, extra_rows, failed_rows, counts):
    """One row per customer and tag, judged per tag: counted per tag and value, a customer with
    churn_risk both high and low was one row and one customer in each group and passed.  Rows
    of no customer, and of tags no active rule makes, count as well."""
    from rules.model import load_rules
    from warehouse.core_checks import check_core_tables
    from warehouse.errors import StageError
    from warehouse.workdb import open_work_db

    write_web_users(settings.inbox, [{"user_id": f"U{i}", "email": f"u{i}@example.com"} for i in range(3)])
    run_through_identity(settings)
    con = open_work_db(settings)
    try:
        first = con.execute("SELECT min(customer_id) FROM identity.golden").fetchone()[0]
        con.execute("CREATE TABLE features.customer_features AS SELECT customer_id FROM identity.golden")
        con.execute("""CREATE TABLE tags.customer_tags AS
                       SELECT customer_id, 'churn_risk' AS tag, 'low' AS value, NULL::DOUBLE AS score
                       FROM identity.golden""")
        con.executemany("INSERT INTO tags.customer_tags VALUES (?, ?, ?, NULL)",
                        [(first if who == "first" else who, tag, value) for who, tag, value in extra_rows])
        with pytest.raises(StageError) as failed:
            check_core_tables(con, settings, load_rules(), "r1")
        recorded = con.execute("""SELECT expectation, success FROM ops.validations
                                  WHERE suite = 'customer_tags_core' AND NOT success""").fetchall()
    finally:
        con.close()
    assert (f"customer_tags_core: expect_column_pair_values_to_be_equal on tag_rows,tag_customers failed "
            f"({failed_rows} rows, e.g. [{counts}") in str(failed.value)
    assert recorded == [("expect_column_pair_values_to_be_equal", False)]


@pytest.mark.parametrize("slice_rows", [1_000_000, 2], ids=["whole table", "in slices"])
def test_core_checks_find_a_customer_id_repeated_anywhere_in_the_table(settings, slice_rows):
    from rules.model import load_rules
    from warehouse.core_checks import check_core_tables
    from warehouse.errors import StageError
    from warehouse.workdb import open_work_db

    settings = replace(settings, validate_slice_rows=slice_rows)
    write_web_users(settings.inbox, [{"user_id": f"U{i}", "email": f"u{i}@example.com"} for i in range(3)])
    run_through_identity(settings)
    con = open_work_db(settings)
    try:
        first = con.execute("SELECT customer_id FROM identity.golden LIMIT 1").fetchone()[0]
        con.execute("INSERT INTO identity.golden SELECT * FROM identity.golden WHERE customer_id = ?", [first])
        con.execute("CREATE TABLE features.customer_features AS SELECT DISTINCT customer_id FROM identity.golden")
        con.execute("""CREATE TABLE tags.customer_tags AS SELECT DISTINCT customer_id, 'churn_risk' AS tag,
                       'low' AS value, NULL::DOUBLE AS score FROM identity.golden""")
        with pytest.raises(StageError) as failed:
            check_core_tables(con, settings, load_rules(), "r1")
        recorded = con.execute("""SELECT expectation, success, element_count, unexpected_count FROM ops.validations
                                  WHERE suite = 'customers_core' ORDER BY ALL""").fetchall()
    finally:
        con.close()
    assert f"customers_core: expect_column_values_to_be_unique on customer_id failed (2 rows, e.g. ['{first}'" \
        in str(failed.value)
    assert recorded == [("expect_column_values_to_be_unique", False, 4, 2),  # one row per expectation
                        ("expect_column_values_to_not_be_null", True, 4, 0)]


def test_a_share_allowed_to_fail_is_judged_on_the_whole_batch_not_each_slice():
    from warehouse.quality import merge_summaries

    def linked(success, elements, unexpected):
        return {"expectation": "expect_column_values_to_not_be_null", "column": "customer_id", "success": success,
                "element_count": elements, "unexpected_count": unexpected, "mostly": 0.99, "meta": {}}

    def amount(success):
        return {"expectation": "expect_column_values_to_be_between", "column": "amount", "success": success,
                "element_count": 100, "unexpected_count": 0 if success else 1, "meta": {}}

    assert [s["success"] for s in merge_summaries([[linked(False, 100, 2), amount(True)],
                                                   [linked(True, 900, 0), amount(False)]])] == [True, False]
    assert not merge_summaries([[linked(True, 1000, 9)], [linked(False, 100, 3)]])[0]["success"]  # 12 of 1100


@pytest.mark.parametrize("part_bytes,slice_rows", [(128 << 20, 1_000_000), (400, 3)],
                         ids=["whole file", "landed in parts, validated in slices"])
def test_a_file_mixing_every_kind_of_bad_row_accounts_for_every_row(settings, part_bytes, slice_rows):
    settings = replace(settings, max_bad_share=0.95, land_part_bytes=part_bytes, validate_slice_rows=slice_rows)
    good = {"user_id": "U1", "created_at": "2026-11-20T10:00:00Z", "total": 10, "currency": "CNY", "status": "paid",
            "items": []}
    rows = [  # (what is wrong, the order, the column that names it in quarantine)
        ("nothing", {"order_id": "W1"}, None),
        ("nothing", {"order_id": "W2", "total": "¥1,299.00"}, None),
        ("negative amount", {"order_id": "W3", "total": -5}, "amount"),
        ("non-numeric amount", {"order_id": "W4", "total": "ten"}, "_errors"),
        ("future date", {"order_id": "W5", "created_at": "2099-01-01T00:00:00Z"}, "ordered_at"),
        ("implausible date", {"order_id": "W6", "created_at": "1970-01-01T00:00:00Z"}, "ordered_at"),
        ("unreadable date", {"order_id": "W7", "created_at": "yesterday"}, "_errors"),
        ("missing key", {"order_id": None}, "order_id"),
        ("key twice", {"order_id": "W1"}, "order_id"),
        ("unknown status", {"order_id": "W10", "status": "lost"}, "status"),
        ("unknown currency", {"order_id": "W11", "currency": "XYZ"}, "currency"),
    ]
    folder = settings.inbox / "web"
    folder.mkdir(parents=True)
    (folder / "orders.jsonl").write_text("".join(json.dumps({**good, **order}, ensure_ascii=False) + "\n"
                                                 for _, order, _ in rows), encoding="utf-8")
    run_through_identity(settings)
    with duckdb.connect(str(settings.work_db), read_only=True) as con:
        load = con.execute("SELECT status, rows_in, rows_loaded, rows_quarantined FROM ops.loads"
                           " WHERE entity = 'order'").fetchone()
        named = con.execute("""SELECT "row", list(DISTINCT "column") FROM ops.quarantine WHERE entity = 'order'
                               GROUP BY "row" ORDER BY "row" """).fetchall()
        loaded = [r[0] for r in con.execute("SELECT order_id FROM stage.orders ORDER BY 1").fetchall()]
        validations = con.execute("SELECT expectation, \"column\", count(*) FROM ops.validations"
                                  " WHERE entity = 'order' GROUP BY ALL").fetchall()
        lake_path = con.execute("SELECT lake_path FROM ops.loads WHERE entity = 'order'").fetchone()[0]
        slices = pq.ParquetFile(lake_path)
        located = con.execute("""SELECT DISTINCT "row", source_record_id FROM ops.quarantine
                                 WHERE entity = 'order' ORDER BY 1""").fetchall()
        landed = con.execute("SELECT _row, source_record_id FROM read_parquet(?) ORDER BY 1", [lake_path]).fetchall()
    assert (slices.num_row_groups > 1) == (part_bytes < 1000)  # one row group per part
    assert all(n == 1 for _, _, n in validations)  # one result per expectation, over every slice
    bad = [(i, column) for i, (_, _, column) in enumerate(rows, start=1) if column]
    assert load == ("validated", len(rows), len(rows) - len(bad), len(bad))
    assert [(r, c) for r, columns in named for c in columns if c == dict(bad)[r]] == bad
    assert located == [landed[i - 1] for i, _ in bad]  # the line and record id of each, from the landed row
    assert loaded == ["W1", "W2"]


@pytest.mark.parametrize("failing", ["gx", "key check"])
def test_a_failure_beside_the_key_check_of_a_sliced_batch_stops_validation_with_nothing_validated(
        settings, monkeypatch, failing):
    """A sliced batch has its keys checked by DuckDB on a thread while GX validates the slices;
    a failure on either side goes on unmasked and leaves the batch landed, for the next run."""
    import warehouse.validate
    from warehouse.quality import QualityContext

    settings = replace(settings, validate_slice_rows=2)
    (settings.inbox / "web").mkdir(parents=True)
    (settings.inbox / "web" / "orders.jsonl").write_text("".join(
        json.dumps({"order_id": f"W{i}", "user_id": "U1", "created_at": "2026-11-20T10:00:00Z", "total": 10,
                    "currency": "CNY", "status": "paid", "items": []}) + "\n" for i in range(5)), encoding="utf-8")

    def gx_failing(*args, **kwargs):
        raise MemoryError("out of memory")

    def key_check_failing(con, raw, expectation):
        raise duckdb.IOException(f"could not read {raw}")

    if failing == "gx":
        monkeypatch.setattr(QualityContext, "validate", gx_failing)
    else:
        monkeypatch.setattr(warehouse.validate, "_repeated_key_rows", key_check_failing)
    with closing(open_work_db(settings)) as con:
        land(con, settings, "r1")
        with pytest.raises((MemoryError, duckdb.IOException), match="out of memory|could not read"):
            warehouse.validate.validate(con, settings, "r1")
        assert con.execute("SELECT DISTINCT status FROM ops.loads").fetchall() == [("landed",)]
        assert con.execute("SELECT count(*) FROM ops.quarantine").fetchone() == (0,)


def test_validating_many_batches_keeps_none_of_their_data(settings):
    """GX's pandas engine caches each batch and every metric it computed; a nightly run validates
    dozens of million-row slices, so the quality context lets go of them after each one."""
    import pandas as pd

    from warehouse.quality import QualityContext

    quality = QualityContext(settings, "r1")
    suite = quality.suite("event_rows")
    frame = pd.DataFrame({"_rid": range(1000), "_row": range(2, 1002), "source_record_id": [f"E{i}" for i in range(1000)],
                          "event_id": [f"E{i}" for i in range(1000)], "_errors": None,
                          "occurred_at": pd.Timestamp("2026-11-20", tz="UTC"), "event_type": "login"})
    engine = quality.source.get_execution_engine()
    for i in range(3):
        results = quality.validate(suite, f"events rows {i}", frame, "_rid")
        assert results.success
        assert not engine._metric_cache and not engine.batch_manager.batch_data_cache
        assert "pandas_data_fingerprint" not in str(results.meta)  # GX did not hash the whole frame


def test_the_gx_config_is_written_once_with_the_docs_not_at_every_batch(settings):
    """GX rewrites great_expectations.yml whole for every asset added (quadratic in a run's
    slices); the run keeps its assets in memory and writes the file once, with Data Docs."""
    import pandas as pd

    from warehouse.quality import QualityContext

    quality = QualityContext(settings, "r1")
    config = settings.restricted / "gx" / "great_expectations.yml"
    written = config.read_text(encoding="utf-8")
    suite = quality.suite("event_rows")
    frame = pd.DataFrame({"_rid": range(3), "_row": range(2, 5), "source_record_id": ["E1", "E2", "E3"],
                          "event_id": ["E1", "E2", "E3"], "_errors": None,
                          "occurred_at": pd.Timestamp("2026-11-20", tz="UTC"), "event_type": "login"})
    for i in range(3):
        assert quality.validate(suite, f"events.jsonl/event rows {i}", frame, "_rid").success
    assert config.read_text(encoding="utf-8") == written
    quality.build_docs()
    assert all(f"events.jsonl__event rows {i}" in config.read_text(encoding="utf-8") for i in range(3))


def test_a_run_id_gx_could_read_as_a_time_is_stored_under_the_time_of_the_run(settings):
    """Given no run time, GX parses one out of the run's name: the random suffix of about one
    run id in 2,000 reads as a UTC offset over a day ("-4218ad": -42:18), which failed the night
    when GX stored the result."""
    from datetime import datetime, timedelta, timezone

    import pandas as pd

    from warehouse.quality import QualityContext

    quality = QualityContext(settings, "20261129T084426Z-4218ad")
    results = quality.validate(quality.suite("customers_core"), "customers", pd.DataFrame({"customer_id": ["a"]}))
    stored = results.meta["run_id"]
    assert stored.run_name == "20261129T084426Z-4218ad"
    assert abs(stored.run_time - datetime.now(timezone.utc)) < timedelta(minutes=5)
    quality.build_docs()


def test_data_docs_keep_the_newest_runs_only(settings):
    """GX's index reads every stored result whole, so Data Docs of every run ever would slow each
    night's validation (5.7 s a build after a year of nightly runs at 1M customers): results and
    pages of runs older than the newest TAGWRIGHT_DATA_DOCS_RUNS go when a run builds its docs."""
    import pandas as pd

    from warehouse.quality import QualityContext

    settings = replace(settings, data_docs_runs=2)
    site = settings.restricted / "gx" / "uncommitted" / "data_docs" / "local_site"
    results = settings.restricted / "gx" / "uncommitted" / "validations"
    for run in ("run-1", "run-2", "run-3"):
        quality = QualityContext(settings, run)
        for batch in ("customers", "orders"):
            quality.validate(quality.suite("customers_core"), batch, pd.DataFrame({"customer_id": ["a", "b"]}))
        quality.build_docs()

    def runs(folder, pattern):  # <suite>/<run>/<run time>/<batch>
        return {p.relative_to(folder).parts[1] for p in folder.rglob(pattern) if len(p.relative_to(folder).parts) > 1}

    assert runs(results, "*.json") == runs(site / "validations", "*.html") == {"run-2", "run-3"}
    assert runs(results, "*") == runs(site / "validations", "*") == {"run-2", "run-3"}  # no empty folders left
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "run-3" in index and "run-2" in index and "run-1" not in index


def test_the_core_checks_docs_build_leaves_the_runs_validation_pages_as_they_are(settings):
    """Validation and the core checks of one run each build Data Docs with a context of their
    own; the second renders its own results and the index, not the run's validation pages again
    (57 of them in a full run at 1M customers, 2 to 5 s)."""
    import pandas as pd

    from warehouse.quality import QualityContext

    site = settings.restricted / "gx" / "uncommitted" / "data_docs" / "local_site"
    validation = QualityContext(settings, "r1")
    frame = pd.DataFrame({"_rid": range(2), "_row": [2, 3], "source_record_id": ["E1", "E2"], "event_id": ["E1", "E2"],
                          "_errors": None, "occurred_at": pd.Timestamp("2026-11-20", tz="UTC"), "event_type": "login"})
    validation.validate(validation.suite("event_rows"), "events.jsonl/event", frame, "_rid")
    validation.build_docs()
    [events_page] = (site / "validations" / "event_rows").rglob("*.html")
    rendered = events_page.stat().st_mtime_ns

    core = QualityContext(settings, "r1")
    core.validate(core.suite("customers_core"), "customers", pd.DataFrame({"customer_id": ["a", "b"]}))
    core.build_docs()
    assert events_page.stat().st_mtime_ns == rendered
    assert list((site / "validations" / "customers_core").rglob("*.html"))
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "events.jsonl__event" in index and "customers_core" in index


def test_a_validation_that_fails_midway_keeps_and_documents_the_batches_before(settings, monkeypatch):
    import warehouse.validate

    settings = replace(settings, max_bad_share=0.9)
    write_web_users(settings.inbox, [{"user_id": "U1"}, {"user_id": None}], name="users_a.jsonl")
    write_web_users(settings.inbox, [{"user_id": "U2"}], name="users_b.jsonl")
    check_batch, batches = warehouse.validate._check_batch, []

    def failing_at_the_second(*args):
        batches.append(args[3]["file"])
        if len(batches) == 2:
            raise MemoryError("out of memory")
        return check_batch(*args)

    monkeypatch.setattr(warehouse.validate, "_check_batch", failing_at_the_second)
    with closing(open_work_db(settings)) as con:
        land(con, settings, "r1")
        with pytest.raises(MemoryError, match="out of memory"):
            warehouse.validate.validate(con, settings, "r1")
    # The first batch's file was still being written when the second failed: it is committed whole.
    with duckdb.connect(str(settings.work_db), read_only=True) as con:
        loads = con.execute("SELECT file, status, rows_loaded, rows_quarantined, lake_path FROM ops.loads"
                            " ORDER BY file").fetchall()
    assert [load[:4] for load in loads] == [("web/users_a.jsonl", "validated", 1, 1),
                                            ("web/users_b.jsonl", "landed", None, None)]
    assert pq.ParquetFile(loads[0][4].replace("/raw/", "/valid/")).metadata.num_rows == 1
    index = settings.restricted / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert batches[0].replace("/", "__") in index.read_text(encoding="utf-8")


def test_a_batchs_validated_file_is_written_while_gx_checks_the_next(settings, monkeypatch):
    """Writing a file without its bad rows reads and writes it whole; it runs beside GX."""
    import threading

    import warehouse.validate

    settings = replace(settings, max_bad_share=0.9)
    write_web_users(settings.inbox, [{"user_id": "U1"}, {"user_id": None}], name="users_a.jsonl")
    write_web_users(settings.inbox, [{"user_id": "U2"}], name="users_b.jsonl")
    check_batch, write_valid_file = warehouse.validate._check_batch, warehouse.validate._write_valid_file
    second_checked, overlapped = threading.Event(), []

    def checking(*args):
        checked = check_batch(*args)
        if args[3]["file"].endswith("users_b.jsonl"):
            second_checked.set()
        return checked

    def writing(con, batch):
        if batch.load["file"].endswith("users_a.jsonl"):
            overlapped.append(second_checked.wait(timeout=10))
        write_valid_file(con, batch)

    monkeypatch.setattr(warehouse.validate, "_check_batch", checking)
    monkeypatch.setattr(warehouse.validate, "_write_valid_file", writing)
    with closing(open_work_db(settings)) as con:
        land(con, settings, "r1")
        warehouse.validate.validate(con, settings, "r1")
        assert con.execute("SELECT status, rows_loaded, rows_quarantined FROM ops.loads ORDER BY file").fetchall() == \
            [("validated", 1, 1), ("validated", 1, 0)]
    assert overlapped == [True]


def test_a_failure_writing_a_validated_file_leaves_its_batch_landed_and_keeps_the_one_before(settings, monkeypatch):
    import warehouse.validate

    settings = replace(settings, max_bad_share=0.9)
    write_web_users(settings.inbox, [{"user_id": "U1"}, {"user_id": None}], name="users_a.jsonl")
    write_web_users(settings.inbox, [{"user_id": "U2"}, {"user_id": None}], name="users_b.jsonl")
    write_valid_file = warehouse.validate._write_valid_file

    def failing_at_the_second(con, batch):
        if batch.load["file"].endswith("users_b.jsonl"):
            raise duckdb.IOException("No space left on device")
        write_valid_file(con, batch)

    monkeypatch.setattr(warehouse.validate, "_write_valid_file", failing_at_the_second)
    with closing(open_work_db(settings)) as con:
        land(con, settings, "r1")
        with pytest.raises(duckdb.IOException, match="No space left"):
            warehouse.validate.validate(con, settings, "r1")
        assert con.execute("SELECT file, status FROM ops.loads ORDER BY file").fetchall() == \
            [("web/users_a.jsonl", "validated"), ("web/users_b.jsonl", "landed")]
        assert con.execute("SELECT file FROM ops.quarantine").fetchall() == [("web/users_a.jsonl",)]
        assert con.execute("SELECT DISTINCT load_id FROM ops.validations").fetchall() == \
            con.execute("SELECT load_id FROM ops.loads WHERE status = 'validated'").fetchall()
        monkeypatch.undo()
        assert warehouse.validate.validate(con, settings, "r2").batches == 1  # the next run takes it up
        assert con.execute("SELECT DISTINCT status FROM ops.loads").fetchall() == [("validated",)]


def test_validation_gives_duckdb_half_its_memory_limit_and_restores_it(settings, monkeypatch):
    import warehouse.validate
    from warehouse.dialect import memory_share

    assert [memory_share(limit, 0.5) for limit in ("2GB", "512MiB", "1.5 GB", "80%")] == \
        ["1000000000B", "268435456B", "750000000B", "80%"]  # a form DuckDB reads, or the limit as it is
    settings = replace(settings, memory_limit="2GB")
    write_web_users(settings.inbox, [{"user_id": "U1", "email": "ok@example.com"}])
    limits = []
    check_batch = warehouse.validate._check_batch

    def recording(con, *args):
        limits.append(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
        return check_batch(con, *args)

    monkeypatch.setattr(warehouse.validate, "_check_batch", recording)
    with closing(open_work_db(settings)) as con:
        land(con, settings, "r1")
        warehouse.validate.validate(con, settings, "r1")
        limits.append(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
    assert limits == ["953.6 MiB", "1.8 GiB"]  # 10^9 bytes while validating, 2 GB after

"""Identity resolved incrementally gives what resolving everything gives, night after night.

Random source customers share identifier values drawn from small pools, so that links, caps on
records per value, both limits per customer, merges and splits all happen; each night changes
some records, adds some, and brings and takes away ids known from orders only.  Each night runs
on the work file as the pipeline left it (incremental) and on a copy told to resolve everything,
and every identity table must come out the same.  The customers publishing updates in place from
what identity changed are checked the same way, against customers published afresh.
"""

from __future__ import annotations

import random
import shutil
from datetime import date, datetime, timedelta, timezone

import duckdb
import pytest

from warehouse import dialect, identity, publish
from warehouse.workdb import open_work_db

RECORDS = """
    source VARCHAR, source_customer_id VARCHAR, source_record_id VARCHAR, email VARCHAR, email_key VARCHAR,
    phone VARCHAR, phone_e164 VARCHAR, phone_masked_key VARCHAR, name VARCHAR, name_key VARCHAR, gender VARCHAR,
    birth_date DATE, province VARCHAR, city VARCHAR, registered_at TIMESTAMPTZ, member_id VARCHAR,
    email_opt_in BOOLEAN, sms_opt_in BOOLEAN, updated_at TIMESTAMPTZ, attributes VARCHAR, _file VARCHAR, _row BIGINT,
    _load_id BIGINT"""
SOURCES = ("web", "store", "marketplace")
TABLES = {  # what each identity table is compared by
    "identity.node_customer": "SELECT * FROM identity.node_customer ORDER BY ALL",
    "identity.customer_ids": "SELECT * FROM identity.customer_ids ORDER BY ALL",
    "identity.links": "SELECT * FROM identity.links ORDER BY ALL",
    "identity.review": "SELECT * FROM identity.review ORDER BY ALL",
    "identity.golden": "SELECT * FROM identity.golden ORDER BY ALL",
    "identity.resolved_keys": "SELECT * FROM identity.resolved_keys ORDER BY ALL",
    "ops.identity_changes": "SELECT * FROM ops.identity_changes ORDER BY ALL",
}
RESULT_FIELDS = ("source_customers", "customers", "new_ids", "merges", "splits", "capped_identifiers",
                 "pairs_limited", "review_pairs")


def _pick(rng: random.Random, values: list, none_share: float):
    return None if rng.random() < none_share else rng.choice(values)


def _record(rng: random.Random, source: str, number: int, load: int) -> tuple:
    """A source customer record with identifier values from small pools (blocklisted ones too)."""
    member = _pick(rng, [f"M{i}" for i in range(20)] + ["0"], 0.6) if source != "marketplace" else None
    email = _pick(rng, [f"e{i}@example.com" for i in range(50)] + ["test@test.com"], 0.4)
    phone = _pick(rng, [f"+86138000{i:05d}" for i in range(1, 40)] + ["+8613800000000"], 0.4)
    # Marketplace phones come masked; staging keeps a full phone's mask beside it.
    masked = _pick(rng, [f"138****{i:04d}" for i in range(1, 12)], 0.4) if source == "marketplace" \
        else phone and f"138****{phone[-4:]}"
    name = _pick(rng, ["李娜", "王伟", "张敏", "刘洋", "陈静", "杨帆", "赵磊", "黄丽", "周杰", "吴芳"], 0.2)
    birth = _pick(rng, [date(1970 + i, 1 + i % 12, 1 + i) for i in range(12)] + [date(1970, 1, 1)], 0.4)
    city = _pick(rng, ["上海", "北京", "杭州"], 0.3)
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=load, minutes=number)
    return (source, f"{source[0]}{number}", f"{source[0]}{number}", email, email, phone if source != "marketplace" else None,
            phone if source != "marketplace" else None, masked, name, name, rng.choice(["F", "M", None]), birth,
            None, city, moment - timedelta(days=number % 50), member, rng.random() < 0.5, None, moment, None,
            f"night{load}", number, load)


def _night(con: duckdb.DuckDBPyConnection, rng: random.Random, load: int, records: dict, order_only: set) -> None:
    """Change, add and re-key some records and order-only ids, staged as load ``load``."""
    if load == 1:
        for number in range(200):
            records[number] = _record(rng, rng.choice(SOURCES), number, load)
    else:
        for number in rng.sample(sorted(records), 8):  # records changed by a newer load
            records[number] = _record(rng, records[number][0], number, load)
        for number in range(len(records), len(records) + 4):
            records[number] = _record(rng, rng.choice(SOURCES), number, load)
        for gone in rng.sample(sorted(order_only), min(1, len(order_only))):
            order_only.discard(gone)
    order_only.update((rng.choice(SOURCES), f"o{load}-{i}") for i in range(2))
    con.execute("DELETE FROM stage.customer_records; DELETE FROM stage.orders")
    con.executemany(f"INSERT INTO stage.customer_records VALUES ({', '.join('?' * 23)})", list(records.values()))
    con.executemany("INSERT INTO stage.orders VALUES (?, ?)", sorted(order_only))
    con.execute("INSERT INTO stage.staged_files VALUES ('customer_records', 'd', ?, 1, 1)", [f"night{load}"])


def _create_stage(settings) -> None:
    """The work file with the stage tables identity reads, empty."""
    with open_work_db(settings) as con:
        con.execute(f"""CREATE TABLE stage.customer_records ({RECORDS});
                        CREATE TABLE stage.orders (source VARCHAR, source_customer_id VARCHAR);
                        CREATE TABLE stage.events AS FROM stage.orders;
                        CREATE TABLE stage.interactions AS FROM stage.orders""")


def _resolve(path, run_id: str) -> tuple[identity.IdentityResult, dict[str, list]]:
    with duckdb.connect(str(path)) as con:
        result = identity.resolve_identities(con, run_id)
        return result, {table: con.execute(sql).fetchall() for table, sql in TABLES.items()}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_resolving_only_what_changed_equals_resolving_everything(settings, monkeypatch, seed):
    config = identity.load_identity_config()
    config.update(max_records_per_identifier=4, max_cluster_size=5)
    monkeypatch.setattr(identity, "load_identity_config", lambda: config)
    rng = random.Random(seed)
    _create_stage(settings)
    records, order_only = {}, set()
    everything = settings.work_db.with_name("everything.duckdb")
    seen = dict.fromkeys(("incremental", "left out", "merges", "splits", "capped", "limited"), 0)
    for load in range(1, 7):
        with duckdb.connect(str(settings.work_db)) as con:
            _night(con, rng, load, records, order_only)
        shutil.copy(settings.work_db, everything)
        with duckdb.connect(str(everything)) as con:
            con.execute("DELETE FROM identity.resolved")
        result, tables = _resolve(settings.work_db, f"r{load}")
        expected, expected_tables = _resolve(everything, f"r{load}")
        assert not expected.incremental and result.incremental == (load > 1)
        for table, rows in expected_tables.items():
            assert tables[table] == rows, f"seed {seed}, night {load}: {table} differs"
        for name in RESULT_FIELDS:
            assert getattr(result, name) == getattr(expected, name), f"seed {seed}, night {load}: {name}"
        seen["incremental"] += result.incremental
        seen["left out"] += result.source_customers - result.resolved
        seen["merges"] += result.merges
        seen["splits"] += result.splits
        seen["capped"] += result.capped_identifiers
        seen["limited"] += result.pairs_limited
    # The nights must have exercised what could go wrong, and resolved less than everything.
    assert seen["incremental"] == 5 and seen["left out"] > 0, seen
    assert min(seen["merges"], seen["splits"], seen["capped"], seen["limited"]) > 0, seen


def test_another_duckdb_version_resolves_everything_again(settings, monkeypatch):
    """The kept values are DuckDB hashes: another version may hash otherwise."""
    rng, records, order_only = random.Random(5), {}, set()
    _create_stage(settings)
    for load in (1, 2, 3):
        with duckdb.connect(str(settings.work_db)) as con:
            _night(con, rng, load, records, order_only)
        if load == 3:
            monkeypatch.setattr(duckdb, "__version__", "99.0.0")
        result, _ = _resolve(settings.work_db, f"r{load}")
        assert result.incremental == (load == 2), load


def _publish_customers(settings, path) -> tuple[str, dict[str, list]]:
    """Publish the customers and their source ids into the file at ``path`` as a night does: how
    (updated | rebuilt), and the tables."""
    with dialect.connect(path) as con:
        dialect.attach(con, settings.work_db, "work")
        con.execute("CREATE SCHEMA IF NOT EXISTS analytics; CREATE SCHEMA IF NOT EXISTS ops")
        definitions = publish._definitions(con, settings)
        how = publish._find_changes(con, settings, date(2026, 1, 1), False, definitions)
        publish._keep_tables_updated_in_place(con, how)
        publish._customers(con, settings, how["customers"])
        publish._remember_published(con, date(2026, 1, 1), definitions)
        return how["customers"], {table: con.execute(f"SELECT * FROM analytics.{table} ORDER BY ALL").fetchall()
                                  for table in ("customers", "customer_source_ids")}


@pytest.mark.parametrize("seed", [1, 2])
def test_customers_published_in_place_equal_customers_published_afresh(settings, monkeypatch, seed):
    """Night after night, customers merge, split, change and come and go: the published customers
    updated with what can have changed are those published from the whole work file."""
    config = identity.load_identity_config()
    config.update(max_records_per_identifier=4, max_cluster_size=5)
    monkeypatch.setattr(identity, "load_identity_config", lambda: config)
    rng = random.Random(seed)
    _create_stage(settings)
    with open_work_db(settings) as con:  # the order tables publishing reads, empty
        con.execute("""CREATE TABLE stage.order_versions (source VARCHAR, order_id VARCHAR, _load_id BIGINT);
                       CREATE TABLE stage.order_lines AS FROM stage.order_versions""")
    records, order_only = {}, set()
    published, afresh = (settings.data_dir / name for name in ("published.duckdb", "afresh.duckdb"))
    for load in range(1, 7):
        with duckdb.connect(str(settings.work_db)) as con:
            _night(con, rng, load, records, order_only)
            identity.resolve_identities(con, f"r{load}")
        afresh.unlink(missing_ok=True)
        how, tables = _publish_customers(settings, published)
        _, expected = _publish_customers(settings, afresh)
        assert how == ("updated" if load > 1 else "rebuilt")
        for table, rows in expected.items():
            assert tables[table] == rows, f"seed {seed}, night {load}: analytics.{table} differs"

"""Privacy by design on real runs: no raw PII where analysts read, an owner-only restricted
area, campaign exports with pseudonyms, and erasure of a person from every layer."""

from __future__ import annotations

import stat
from contextlib import closing
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.nightly import nightly
from tests.conftest import AS_OF
from warehouse.settings import Settings

pytestmark = pytest.mark.e2e
runner = CliRunner(env={"COLUMNS": "250"})


def _raw_contacts(sample_inbox) -> set[str]:
    """Every email and mobile number the web and CRM exports carry, as analysts might search them."""
    with duckdb.connect() as con:
        rows = con.execute(f"""
            SELECT DISTINCT lower(trim(email)) FROM read_json('{sample_inbox}/web/users.jsonl') WHERE email LIKE '%@%'
            UNION SELECT DISTINCT mobile FROM read_json('{sample_inbox}/web/users.jsonl') WHERE mobile IS NOT NULL
            UNION SELECT DISTINCT lower(trim("Email")) FROM read_csv('{sample_inbox}/zoho_crm/Contacts_export.csv',
                                                                     all_varchar = true) WHERE "Email" LIKE '%@%'
        """).fetchall()
    return {r[0] for r in rows}


def test_nothing_analysts_can_read_holds_a_raw_email_or_phone(published_copy, sample_inbox):
    needles = _raw_contacts(sample_inbox)
    assert len(needles) > 100
    assert runner.invoke(app, ["export", "--tag", "churn_risk", "--value", "high"]).exit_code == 0
    assert runner.invoke(app, ["report", "--out", str(published_copy / "reports" / "report.html")]).exit_code == 0
    readable = [p for p in published_copy.rglob("*") if p.is_file() and "restricted" not in p.parts
                and "inbox" not in p.parts and not p.name.startswith(".")]
    assert {p.suffix for p in readable} >= {".duckdb", ".parquet", ".csv", ".html"}
    with duckdb.connect() as con:
        for path in readable:
            if path.suffix == ".duckdb":
                con.execute(f"ATTACH '{path}' AS w (READ_ONLY)")
                tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'w'"
                                     ).fetchall()
                values = set()
                for schema, table in tables:
                    columns = [r[0] for r in con.execute(f'DESCRIBE w.{schema}."{table}"').fetchall()]
                    text = ", ".join(f'CAST("{c}" AS VARCHAR)' for c in columns)
                    values |= {v for row in con.execute(f'SELECT {text} FROM w.{schema}."{table}"').fetchall()
                               for v in row if v}
                con.execute("DETACH w")
                leaked = needles & values
            elif path.suffix == ".parquet":
                columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()]
                text = ", ".join(f'CAST("{c}" AS VARCHAR)' for c in columns)
                leaked = needles & {v for row in con.execute(f"SELECT {text} FROM '{path}'").fetchall() for v in row}
            else:
                content = path.read_text(encoding="utf-8", errors="ignore")
                leaked = {n for n in needles if n in content}
            assert not leaked, f"{path.relative_to(published_copy)} leaks {sorted(leaked)[:3]}"


def test_raw_personal_data_lives_only_in_the_owner_only_restricted_area(published_copy):
    settings = Settings.from_env()
    assert stat.S_IMODE(settings.restricted.stat().st_mode) == 0o700
    assert settings.work_db.parent == settings.restricted and settings.lake.parent == settings.restricted
    assert settings.pii_key  # the tests give the key by configuration, so no key file is written
    assert not (published_copy / "work.duckdb").exists() and not (published_copy / "lake").exists()


def test_a_campaign_export_holds_exactly_the_customers_with_the_value(published_copy):
    result = runner.invoke(app, ["export", "--tag", "rfm_segment", "--value", "Can't Lose Them"])
    assert result.exit_code == 0, result.output
    path = published_copy / "exports" / "campaigns" / "rfm_segment=Can_t_Lose_Them" / f"customers_{AS_OF}.csv"
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    with duckdb.connect(str(published_copy / "warehouse.duckdb"), read_only=True) as con:
        exported = con.execute(f"SELECT list(customer_id ORDER BY customer_id), list(DISTINCT value) FROM "
                               f"read_csv('{path}', header = true)").fetchone()
        expected = con.execute("SELECT list(customer_id ORDER BY customer_id) FROM analytics.customer_tags"
                               " WHERE tag = 'rfm_segment' AND value = 'Can''t Lose Them'").fetchone()[0]
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_csv('{path}', header = true)").fetchall()]
    assert exported == (expected, ["Can't Lose Them"]) and expected
    assert "email_pseudonym" in columns and "email" not in columns and "phone" not in columns
    wrong = runner.invoke(app, ["export", "--tag", "churn_risk", "--value", "extreme"])
    assert wrong.exit_code == 2 and "use one of: high, low, medium" in wrong.output


def test_forget_erases_people_from_every_layer_and_a_rerun_does_not_bring_them_back(prefect_harness, published_copy):
    """Two people in one command (one by id, one from a CSV): every layer loses both."""
    settings = Settings.from_env()
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        people = con.execute("""SELECT customer_id, list(source_customer_id) FROM analytics.customer_source_ids
                                GROUP BY 1 HAVING count(DISTINCT source) >= 2 ORDER BY 1 LIMIT 2""").fetchall()
        customers = [c for c, _ in people]
        records = [r for _, rs in people for r in rs]
        orders = con.execute("SELECT list(order_id) FROM analytics.orders o WHERE customer_id = ANY(?)"
                             " AND EXISTS (SELECT 1 FROM analytics.order_lines l WHERE l.order_id = o.order_id)",
                             [customers]).fetchone()[0]
        hashed = con.execute("SELECT list(hash(source, source_customer_id)) FROM analytics.customer_source_ids"
                             " WHERE customer_id = ANY(?)", [customers]).fetchone()[0]
    assert orders, "the people must have orders with lines"
    with duckdb.connect(str(settings.work_db), read_only=True) as con:  # their identifier values, hashed
        assert con.execute("SELECT count(*) FROM identity.resolved_keys WHERE record_hash = ANY(?)",
                           [hashed]).fetchone()[0]
    assert runner.invoke(app, ["export", "--tag", "lifecycle_stage", "--value", "active"]).exit_code == 0
    assert all(c.encode() in settings.warehouse.read_bytes() for c in customers)
    listed = published_copy / "requests.csv"
    listed.write_text(f"customer_id\n{customers[1]}\n", encoding="utf-8")
    result = runner.invoke(app, ["forget", customers[0], "--customers", str(listed),
                                 "--reason", "ticket 4711", "--requested-by", "dpo"])
    assert result.exit_code == 0, result.output
    assert f"erasure 1: {customers[0]}" in result.output and f"erasure 2: {customers[1]}" in result.output
    assert "inbox still holds" in result.output

    def traces() -> dict[str, int]:
        found = {}
        with duckdb.connect() as con:
            con.execute(f"ATTACH '{settings.work_db}' AS work (READ_ONLY)")
            con.execute(f"ATTACH '{settings.warehouse}' AS wh (READ_ONLY)")
            for database in ("work", "wh"):
                for schema, table, column in con.execute(f"""
                        SELECT schema_name, table_name, column_name FROM duckdb_columns()
                        WHERE database_name = '{database}' AND column_name IN ('customer_id', 'source_customer_id')
                          AND NOT (schema_name = 'ops' AND table_name = 'erasures')
                          AND NOT (schema_name = 'identity' AND table_name IN ('suppressed', 'customer_ids'))""").fetchall():
                    n = con.execute(f'SELECT count(*) FROM {database}.{schema}."{table}" WHERE "{column}" = ANY(?)',
                                    [customers + records]).fetchone()[0]
                    if n:
                        found[f"{database}.{schema}.{table}"] = n
            lake = [str(p) for p in settings.lake.glob("valid/*/*/*.parquet")]
            with_ids = [p for p in lake if "customer_record" in p or "/order/" in p or "event" in p]
            found["lake"] = con.execute(f"SELECT count(*) FROM read_parquet({with_ids}, union_by_name = true)"
                                        " WHERE source_customer_id = ANY(?)", [records]).fetchone()[0]
            found["exports"] = con.execute(f"SELECT count(*) FROM read_parquet('{settings.exports}/**/*.parquet')"
                                           " WHERE customer_id = ANY(?)", [customers]).fetchone()[0]
            found["campaigns"] = con.execute(f"SELECT count(*) FROM read_csv('{settings.exports}/campaigns/**/*.csv')"
                                             " WHERE customer_id = ANY(?)", [customers]).fetchone()[0]
            found["work.identity.resolved_keys"] = con.execute(
                "SELECT count(*) FROM work.identity.resolved_keys WHERE record_hash = ANY(?)", [hashed]).fetchone()[0]
            for table in ("work.stage.order_lines", "work.stage.order_copies", "wh.analytics.order_lines",
                          "wh.ops.order_copies"):  # keyed by order id, without a customer id
                found[table] = con.execute(f"SELECT count(*) FROM {table} WHERE order_id = ANY(?)",
                                           [orders]).fetchone()[0]
        return {k: v for k, v in found.items() if v}

    assert traces() == {}
    # Not even in the file's bytes: deleted rows keep theirs in a DuckDB file until it is rewritten.
    assert not any(c.encode() in settings.warehouse.read_bytes() for c in customers)
    rerun = nightly(as_of=AS_OF.isoformat(), full_rebuild=True)  # lands every inbox file again
    assert rerun["status"] == "success"
    assert traces() == {}
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        logged = con.execute("SELECT erasure_id, customer_id, reason, requested_by, source_records,"
                             " rows_removed->>'people erased together' FROM ops.erasures ORDER BY 1").fetchall()
        cited = dict(con.execute(r"""SELECT source_record_id, regexp_extract(reason, '\(erasure (\d+),', 1)
                                     FROM ops.quarantine WHERE expectation = 'not_erased'
                                       AND entity = 'customer_record'""").fetchall())
        set_aside = con.execute("SELECT count(*), count(value) FROM ops.quarantine WHERE expectation = 'not_erased'"
                                ).fetchone()
        balanced = con.execute("SELECT bool_and(rows_in = rows_loaded + rows_quarantined) FROM ops.loads"
                               " WHERE status = 'validated'").fetchone()[0]
    assert logged == [(i + 1, customer, "ticket 4711", "dpo", len(rs), "2") for i, (customer, rs) in enumerate(people)]
    # Each person's re-delivered records are set aside naming their own erasure.
    assert set(cited.values()) == {"1", "2"}
    assert cited == {r: str(i + 1) for i, (_, rs) in enumerate(people) for r in rs if r in cited}
    assert set_aside[0] > 0 and set_aside[1] == 0 and balanced


def test_forget_refuses_an_unknown_customer_and_erases_no_one(published_copy):
    settings = Settings.from_env()
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        known = con.execute("SELECT min(customer_id) FROM analytics.customers").fetchone()[0]
    before = settings.warehouse.read_bytes()
    result = runner.invoke(app, ["forget", known, "TW99999999", "--reason", "ticket 4714", "--requested-by", "dpo"])
    assert result.exit_code == 2 and "no customer 'TW99999999' in the work file" in result.output
    bad = published_copy / "requests.csv"
    bad.write_text("customer_id\nTW00000001\n\u3000,x\n", encoding="utf-8")
    result = runner.invoke(app, ["forget", "--customers", str(bad), "--reason", "ticket 4714", "--requested-by", "dpo"])
    assert result.exit_code == 2 and f"forget: {bad}, row 3, field 'customer_id': empty" in result.output
    assert settings.warehouse.read_bytes() == before
    with closing(duckdb.connect(str(settings.work_db), read_only=True)) as con:
        assert con.execute("SELECT count(*) FROM ops.erasures").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM identity.node_customer WHERE customer_id = ?", [known]).fetchone()[0]


def test_forget_deletes_the_data_docs_that_quote_the_persons_failing_values(prefect_harness, published_copy):
    """GX's stored results and Data Docs pages quote the values that failed (a malformed email);
    erasure deletes those of every batch a row of the person was quarantined from, and a file
    delivering the person again is validated without their rows."""
    settings = Settings.from_env()
    with closing(duckdb.connect(str(settings.work_db), read_only=True)) as con:
        customer, email, batch = con.execute("""
            SELECT m.customer_id, q.value, q.file || '/' || q.entity FROM ops.quarantine q
            JOIN identity.node_customer m ON m.source = q.source AND m.source_customer_id = q.source_record_id
            WHERE q."column" = 'email' AND q.value IS NOT NULL ORDER BY 1 LIMIT 1""").fetchone()
    gx = settings.restricted / "gx" / "uncommitted"
    asset = "batches-" + batch.replace("/", "__")

    def quoting() -> list[str]:
        return sorted(str(p.relative_to(gx)) for p in gx.rglob("*") if p.is_file()
                      and email in p.read_text(encoding="utf-8", errors="ignore"))

    def results() -> list[str]:
        return [p.stem for p in (gx / "validations").rglob("*.json")]

    assert quoting() and asset in results()
    kept = len(results()) - 1
    result = runner.invoke(app, ["forget", customer, "--reason", "ticket 4712", "--requested-by", "dpo"])
    assert result.exit_code == 0, result.output
    assert quoting() == []
    assert asset not in results() and len(results()) == kept  # only that batch's result went
    assert "data docs results" in result.output
    assert (gx / "data_docs" / "local_site" / "index.html").exists()
    assert nightly(as_of=AS_OF.isoformat(), full_rebuild=True)["status"] == "success"  # lands the inbox again
    assert quoting() == [] and asset in results()
    with closing(duckdb.connect(str(settings.work_db), read_only=True)) as con:
        assert con.execute("SELECT count(*) FROM ops.quarantine WHERE value = ?", [email]).fetchone()[0] == 0


def test_forget_finds_the_persons_rows_quarantined_before_staging_by_their_lake_rows(published_copy):
    """An order quarantined for its negative amount was never staged, so its order id names no
    staged record of the person; its row in the raw lake does."""
    settings = Settings.from_env()
    with closing(duckdb.connect(str(settings.work_db), read_only=True)) as con:
        load_id, row, lake_path, amount = con.execute("""
            SELECT q.load_id, q."row", l.lake_path, q.value FROM ops.quarantine q JOIN ops.loads l USING (load_id)
            WHERE q.source = 'web' AND q.entity = 'order' AND q."column" = 'amount' ORDER BY 1, 2 LIMIT 1""").fetchone()
        raw = settings.lake / Path(lake_path).relative_to(Path(lake_path).parents[3])  # raw/<source>/<entity>/...
        customer = con.execute(f"""SELECT m.customer_id FROM read_parquet('{raw}') r JOIN identity.node_customer m
                                   ON m.source = 'web' AND m.source_customer_id = r.source_customer_id
                                   WHERE r._row = ?""", [row]).fetchone()[0]
        assert con.execute("SELECT count(*) FROM stage.order_versions WHERE order_id IN (SELECT source_record_id"
                           " FROM ops.quarantine WHERE load_id = ? AND \"row\" = ?)", [load_id, row]).fetchone()[0] == 0
    gx = settings.restricted / "gx" / "uncommitted"

    def quoting() -> list[Path]:
        return [p for p in gx.rglob("*.json") if amount in p.read_text(encoding="utf-8")]

    assert quoting()
    result = runner.invoke(app, ["forget", customer, "--reason", "ticket 4713", "--requested-by", "dpo"])
    assert result.exit_code == 0, result.output
    for database in (settings.work_db, settings.warehouse):
        with closing(duckdb.connect(str(database), read_only=True)) as con:
            assert con.execute('SELECT count(*) FROM ops.quarantine WHERE load_id = ? AND "row" = ?',
                               [load_id, row]).fetchone()[0] == 0, database
    assert quoting() == []

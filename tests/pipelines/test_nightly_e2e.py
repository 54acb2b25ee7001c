"""End to end: the real Prefect flow on sample exports into a real DuckDB warehouse."""

from __future__ import annotations

import duckdb
import pytest

from pipelines.nightly import nightly
from tests.conftest import AS_OF, copy_inbox, wide_table_mismatches

pytestmark = pytest.mark.e2e

# What the planted customers' behaviour implies (see sources/sample.py, _planted).
EXPECTED = {
    "champion": {"rfm_segment": "Champions", "activity_level": "high", "lifecycle_stage": "active",
                 "churn_risk": "low", "value_tier": "high-value", "high_frequency_buyer": "true",
                 "first_purchase": "false"},
    "lapsed_big_spender": {"rfm_segment": "Can't Lose Them", "activity_level": "inactive",
                           "lifecycle_stage": "churned", "churn_risk": "high", "value_tier": "high-value",
                           "high_frequency_buyer": "false"},
    "brand_new_buyer": {"rfm_segment": "New Customers", "activity_level": "low", "lifecycle_stage": "new",
                        "churn_risk": "low", "first_purchase": "true", "p_alive": "1.0"},
    "prospect": {"activity_level": "low", "lifecycle_stage": "prospect", "first_purchase": "false"},
    "returning": {"lifecycle_stage": "returning", "churn_risk": "low", "activity_level": "low"},
}


def _customer_of(con, sample_inbox, person_id: str) -> list[str]:
    truth = str(sample_inbox / "ground_truth.csv")
    return [r[0] for r in con.execute(
        f"""SELECT DISTINCT s.customer_id FROM analytics.customer_source_ids s
            JOIN read_csv('{truth}', all_varchar = true) t USING (source, source_customer_id)
            WHERE t.person_id = ?""", [person_id]).fetchall()]


def test_planted_customers_get_the_tags_their_behaviour_implies(published, sample_inbox, planted):
    result, _ = published
    assert result["status"] == "success"
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        for role, expected in EXPECTED.items():
            customers = _customer_of(con, sample_inbox, planted[role]["person_id"])
            assert len(customers) == 1, f"{role} should resolve to one customer, got {customers}"
            tags = dict(con.execute("SELECT tag, value FROM analytics.customer_tags WHERE customer_id = ?",
                                    customers).fetchall())
            for tag, value in expected.items():
                assert tags.get(tag) == value, f"{role}: {tag} is {tags.get(tag)!r}, expected {value!r}"
        prospect = _customer_of(con, sample_inbox, planted["prospect"]["person_id"])
        assert con.execute("SELECT count(*) FROM analytics.customer_tags WHERE customer_id = ? AND tag IN"
                           " ('rfm_segment', 'churn_risk', 'rfm_score', 'value_tier', 'p_alive')",
                           prospect).fetchone()[0] == 0


def test_every_input_row_is_loaded_or_quarantined(published):
    result, _ = published
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        unbalanced = con.execute("""SELECT file, entity FROM ops.loads WHERE status IN ('validated', 'rejected')
                                    AND rows_in <> rows_loaded + rows_quarantined""").fetchall()
        assert unbalanced == []
        quarantined = con.execute("SELECT count(DISTINCT (load_id, \"row\")) FROM ops.quarantine").fetchone()[0]
        assert quarantined == con.execute("SELECT sum(rows_quarantined) FROM ops.loads").fetchone()[0]
        assert quarantined > 0, "the sample plants bad rows; the quarantine must show them"
        assert con.execute("SELECT count(*) FROM ops.quarantine WHERE \"row\" IS NULL OR reason IS NULL"
                           ).fetchone()[0] == 0


def test_every_run_has_data_docs_and_core_checks(published):
    result, data = published
    docs = data / "restricted" / "gx" / "uncommitted" / "data_docs" / "local_site"
    assert result["data_docs"] == str(docs / "index.html") and (docs / "index.html").exists()
    pages = {p.parts[len(docs.parts) + 1] for p in (docs / "validations").rglob("*.html")}
    assert {"order_rows", "customer_record_rows", "customers_core", "customer_tags_core", "orders_core"} <= pages
    assert result["run_id"] in (docs / "index.html").read_text(encoding="utf-8")
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        core = con.execute("SELECT suite, bool_and(success) FROM ops.validations WHERE source = 'pipeline'"
                           " GROUP BY suite ORDER BY suite").fetchall()
        flaws = {r[0] for r in con.execute("SELECT DISTINCT source FROM ops.quarantine").fetchall()}
    assert core == [("customer_tags_core", True), ("customers_core", True), ("orders_core", True),
                    ("tag_coverage_core", True)]
    assert flaws == {"web", "store", "marketplace", "zoho_crm", "fxiaoke"}  # the sample plants flaws everywhere
    assert "core_checks" in result["stage_seconds"]


def test_a_file_delivered_twice_is_skipped(published):
    result, _ = published
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        duplicates = con.execute("SELECT file, message FROM ops.loads WHERE status = 'duplicate'").fetchall()
    assert [d[0] for d in duplicates] == [f"marketplace/orders_{AS_OF:%Y%m%d}_resent.csv"]
    assert "same bytes as" in duplicates[0][1]


def test_published_tables_and_export(published):
    result, data = published
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        tables = {f"{s}.{t}" for s, t in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables()").fetchall()}
        assert {"analytics.customer_tags", "analytics.customer_tags_wide", "analytics.tag_history",
                "analytics.tag_changes", "analytics.tag_catalog", "analytics.tag_stats", "analytics.customers",
                "analytics.orders", "analytics.order_lines", "analytics.customer_features", "analytics.interactions",
                "analytics.customer_source_ids", "analytics.tag_overrides", "ops.runs", "ops.loads", "ops.quarantine", "ops.validations"} <= tables
        wide_columns = [r[0] for r in con.execute("DESCRIBE analytics.customer_tags_wide").fetchall()]
        assert {"rfm_segment", "activity_level", "churn_risk", "lifecycle_stage"} <= set(wide_columns)
        assert wide_table_mismatches(con) == 0
        runs = con.execute("SELECT status, as_of FROM ops.runs").fetchall()
        assert runs == [("success", AS_OF)]
        exported = con.execute(f"SELECT count(*) FROM read_parquet('{result['export']}/*.parquet')").fetchone()[0]
        assert exported == con.execute("SELECT count(*) FROM analytics.customer_tags").fetchone()[0] > 0
        # Orders after as_of never reach a run for as_of.
        assert con.execute("SELECT max(order_date) FROM analytics.orders").fetchone()[0] <= AS_OF
    assert (data / "exports" / "customer_tags" / f"as_of={AS_OF.isoformat()}").is_dir()


@pytest.mark.parametrize("table,order", [("customers", "customer_id"), ("customer_tags", "customer_id, tag"),
                                         ("customer_tags_wide", "customer_id"), ("customer_features", "customer_id")])
def test_per_customer_tables_are_stored_by_customer_id(published, table, order):
    """docs/warehouse.md: reading one customer reads little (and a customer's tags come in one order)."""
    result, _ = published
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        stored = con.execute(f"SELECT {order} FROM analytics.{table} ORDER BY rowid").fetchall()
    assert len(stored) > 100 and stored == sorted(stored)


def test_no_raw_pii_in_analytics(published, sample_inbox):
    """No email address or full phone number from the exports appears in any analytics column."""
    result, _ = published
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        raw = con.execute(f"""
            SELECT DISTINCT lower(trim(email)) FROM read_json('{sample_inbox}/web/users.jsonl')
            WHERE email LIKE '%@%'
            UNION SELECT DISTINCT mobile FROM read_json('{sample_inbox}/web/users.jsonl') WHERE mobile IS NOT NULL
        """).fetchall()
        needles = {r[0] for r in raw}
        assert len(needles) > 100
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'analytics'"
                                    ).fetchall():
            columns = [r[0] for r in con.execute(f"DESCRIBE analytics.{table}").fetchall()]
            as_text = ", ".join(f'CAST("{c}" AS VARCHAR)' for c in columns)
            values = {v for row in con.execute(f"SELECT {as_text} FROM analytics.{table}").fetchall()
                      for v in row if v}
            leaked = needles & values
            assert not leaked, f"analytics.{table} leaks {sorted(leaked)[:3]}"


def test_rerun_for_the_same_day_gives_identical_tags(prefect_harness, sample_inbox, data_dir):
    copy_inbox(sample_inbox, data_dir)
    first = nightly(as_of=AS_OF.isoformat())
    query = "SELECT * FROM analytics.customer_tags ORDER BY customer_id, tag"
    with duckdb.connect(first["warehouse"], read_only=True) as con:
        before = con.execute(query).fetchall()
        history_before = con.execute("SELECT * FROM analytics.tag_history ORDER BY ALL").fetchall()
    second = nightly(as_of=AS_OF.isoformat())
    with duckdb.connect(second["warehouse"], read_only=True) as con:
        assert con.execute(query).fetchall() == before
        assert con.execute("SELECT * FROM analytics.tag_history ORDER BY ALL").fetchall() == history_before
        assert con.execute("SELECT count(*) FROM ops.runs WHERE status = 'success'").fetchone()[0] == 2
        # The second run found every file landed before and loaded nothing twice.
        assert second["row_counts"]["land"] == 0
    assert len(before) > 1000


def test_crm_contacts_resolve_to_customers_of_other_sources(published, sample_inbox):
    result, _ = published
    truth = str(sample_inbox / "ground_truth.csv")
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        linked = dict(con.execute("""
            WITH crm AS (SELECT s.source, s.customer_id FROM analytics.customer_source_ids s
                         WHERE s.source IN ('zoho_crm', 'fxiaoke'))
            SELECT crm.source, count(DISTINCT crm.customer_id) FILTER (WHERE EXISTS (
                       SELECT 1 FROM analytics.customer_source_ids o
                       WHERE o.customer_id = crm.customer_id AND o.source IN ('web', 'store', 'marketplace')))
            FROM crm GROUP BY crm.source""").fetchall())
        wrong = con.execute(f"""
            SELECT count(*) FROM (
                SELECT s.customer_id FROM analytics.customer_source_ids s
                JOIN read_csv('{truth}', all_varchar = true) t USING (source, source_customer_id)
                GROUP BY s.customer_id HAVING count(DISTINCT t.person_id) > 1)""").fetchone()[0]
    assert linked.get("zoho_crm", 0) > 0 and linked.get("fxiaoke", 0) > 0
    assert wrong == 0, "no customer may mix two real people"

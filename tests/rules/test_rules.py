"""The rule language: every shipped rule is complete and tested; bad rules never reach SQL."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest

from rules.compiler import ENTITY_DATES, features_sql, tag_entry, tags_sql
from rules.model import FEATURE_ENTITIES
from rules.errors import RuleErrors
from rules.model import load_rules, rules_dir
from rules.testing import run_rule_tests, uncovered_values


STANDARD_LIBRARY = {"rfm_score", "rfm_segment", "value_tier", "activity_level", "lifecycle_stage", "churn_risk",
                    "p_alive", "age_band", "sensitive_minor", "region", "city_tier", "favourite_category",
                    "contact_preference", "birthday_month", "first_purchase", "high_frequency_buyer",
                    "recent_complaint"}


def test_every_rule_file_compiles_and_every_active_tag_is_documented_and_tested():
    rules = load_rules()
    assert STANDARD_LIBRARY <= {t.id for t in rules.active_tags}
    features_sql(rules, date(2026, 11, 21), 730)
    tags_sql(rules)
    for tag in rules.active_tags:
        assert tag.definition and tag.owner and tag.names["en"] and tag.names["zh"], tag.id
        assert not uncovered_values(tag), f"{tag.file}: no test case expects {uncovered_values(tag)}"


def test_rule_tests_written_beside_the_rules_pass():
    failures, total = run_rule_tests()
    assert total >= 30
    assert failures == []


def test_golden_sql_for_a_tag():
    tag = load_rules().tags["activity_level"]
    assert tag_entry(tag).sql(dialect="duckdb") == (
        "{'tag': 'activity_level', 'value': CASE WHEN active_days_30 >= 15 THEN 'high' "
        "WHEN active_days_30 >= 4 THEN 'medium' WHEN active_days_30 >= 1 THEN 'low' ELSE 'inactive' END, "
        "'score': CAST(NULL AS DOUBLE)}")


def test_golden_sql_for_a_list_tag_and_a_computed_tag():
    rules = load_rules()
    exclusion = rules.marketing_exclusion
    assert tag_entry(rules.tags["contact_preference"], exclusion=exclusion).sql(dialect="duckdb") == (
        "{'tag': 'contact_preference', 'value': CASE WHEN COALESCE(age_years < 14, FALSE) THEN "
        "CAST(NULL AS TEXT) ELSE COALESCE(NULLIF(RTRIM(CASE WHEN email_opt_in THEN 'email,' ELSE '' END || "
        "CASE WHEN sms_opt_in THEN 'sms,' ELSE '' END, ','), ''), 'none') END, "
        "'score': CAST(NULL AS DOUBLE)}")
    assert tag_entry(rules.tags["p_alive"]).sql(dialect="duckdb") == (
        "{'tag': 'p_alive', 'value': CASE WHEN TRUE AND NOT p_alive IS NULL THEN "
        "CAST(ROUND(p_alive, 4) AS TEXT) ELSE NULL END, 'score': CAST(p_alive AS DOUBLE)}")


@pytest.fixture()
def rule_copy(tmp_path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    for path in rules_dir().glob("*.yaml"):
        shutil.copy(path, folder)
    return folder


BAD_CONDITIONS = [
    # (description, condition, expected message part)
    ("unknown feature", "days_since_last_visit > 3", "unknown name 'days_since_last_visit'"),
    ("subquery", "active_days_30 > (SELECT 1)", "subquery"),
    ("DDL", "DROP TABLE customers", "not allowed"),
    ("function outside the allowed list", "md5(active_days_30) = 'x'", "md5()"),
    ("not a condition", "active_days_30 + 1", "not a true/false condition"),
    ("broken SQL", "active_days_30 >= (4", "not valid SQL"),
]


@pytest.mark.parametrize("description,condition,message", BAD_CONDITIONS, ids=[c[0] for c in BAD_CONDITIONS])
def test_a_bad_condition_is_an_error_at_file_line_column(rule_copy, description, condition, message):
    path = rule_copy / "activity_level.yaml"
    text = path.read_text(encoding="utf-8").replace('"active_days_30 >= 4"', f'"{condition}"')
    path.write_text(text, encoding="utf-8")
    line = next(i for i, l in enumerate(text.splitlines(), start=1) if condition in l)
    column = text.splitlines()[line - 1].index(f'"{condition}"') + 1
    with pytest.raises(RuleErrors) as err:
        load_rules(rule_copy)
    [error] = err.value.errors
    assert (error.file, error.line) == ("activity_level.yaml", line)
    # The column is where the expression starts (a syntax error: where in it the parser stopped).
    assert column <= error.column <= column + len(condition) + 1
    assert message in error.problem and error.fix


def test_missing_fields_and_bad_ids_are_all_reported_at_once(rule_copy):
    (rule_copy / "broken.yaml").write_text("tag:\n  id: Bad-Id\n  type: colour\n  cases: []\n", encoding="utf-8")
    with pytest.raises(RuleErrors) as err:
        load_rules(rule_copy)
    text = str(err.value)
    assert "broken.yaml:2:7: tag id 'Bad-Id'" in text
    assert "'type' is 'colour'" in text and "enum, flag, number, list" in text
    assert "has no 'owner'" in text and "has no 'definition'" in text


def test_yaml_syntax_errors_point_at_the_spot(rule_copy):
    (rule_copy / "broken.yaml").write_text("tag:\n  id: x\n  names: {en: [\n", encoding="utf-8")
    with pytest.raises(RuleErrors, match=r"broken.yaml:\d+:\d+: YAML cannot be read"):
        load_rules(rule_copy)


SCORE_CASES = [
    # (description, recency per customer, frequency per customer, expected r_scores)
    ("most recent gets 5, oldest 1", [1, 10, 20, 30, 40], [1, 1, 1, 1, 1], [5, 4, 3, 2, 1]),
    ("equal recency gets equal scores", [5, 5, 5, 50, 60], [1, 1, 1, 1, 1], [3, 3, 3, 2, 1]),
    ("customers without a paid order get no score", [3, None, 9], [1, 0, 1], [5, None, 1]),
]


SQL_TYPES = {"number": "DOUBLE", "text": "VARCHAR", "boolean": "BOOLEAN", "date": "DATE"}


def create_feature_relations(con: duckdb.DuckDBPyConnection, customers: int) -> None:
    """Empty ``feature_<entity>`` tables with the columns the compiler may read, and customers c0..cN-1."""
    con.execute("CREATE TABLE feature_customers AS SELECT 'c' || i AS customer_id FROM range(?) t(i)", [customers])
    for entity, columns in FEATURE_ENTITIES.items():
        order_column = ENTITY_DATES[entity][1]
        extra = {order_column: "date"} if order_column and order_column not in columns else {}
        listed = ", ".join(f"{c} {SQL_TYPES[t]}" for c, t in {**columns, **extra}.items())
        con.execute(f"CREATE TABLE feature_{entity} (customer_id VARCHAR, {listed})")


@pytest.mark.parametrize("description,recency,frequency,expected", SCORE_CASES, ids=[c[0] for c in SCORE_CASES])
def test_rfm_scores_from_percent_rank(description, recency, frequency, expected):
    rules = load_rules()
    sql = features_sql(rules, date(2026, 11, 21), 730)
    with duckdb.connect() as con:
        create_feature_relations(con, len(recency))
        for i, (r, f) in enumerate(zip(recency, frequency)):
            for _ in range(f):
                con.execute("INSERT INTO feature_orders (customer_id, order_date, amount, status, channel)"
                            " VALUES (?, DATE '2026-11-21' - ?::INT, 10, 'paid', 'web')", [f"c{i}", r])
        got = con.execute(f"SELECT r_score FROM ({sql}) ORDER BY customer_id").fetchall()
    assert [g[0] for g in got] == expected


FAVOURITE_CASES = [
    # (description, order lines as (customer, days ago, status, category, amount), expected per customer)
    ("most spend wins", [(0, 1, "paid", "food", 10), (0, 2, "paid", "beauty", 30), (0, 3, "paid", "food", 15)],
     ["beauty"]),
    ("a tie goes to the alphabetically first", [(0, 1, "paid", "home", 20), (0, 2, "paid", "digital", 20)],
     ["digital"]),
    ("refunded lines do not count", [(0, 1, "refunded", "home", 99), (0, 2, "paid", "food", 1)], ["food"]),
    ("older than 365 days does not count", [(0, 365, "paid", "home", 99), (0, 364, "paid", "food", 1)], ["food"]),
    ("no paid line in the year: no favourite", [(0, 400, "paid", "home", 5)], [None]),
]


@pytest.mark.parametrize("description,lines,expected", FAVOURITE_CASES, ids=[c[0] for c in FAVOURITE_CASES])
def test_favourite_category_is_the_most_spend_in_365_days(description, lines, expected):
    sql = features_sql(load_rules(), date(2026, 11, 21), 730)
    with duckdb.connect() as con:
        create_feature_relations(con, len(expected))
        for customer, days_ago, status, category, amount in lines:
            con.execute("INSERT INTO feature_order_lines (customer_id, order_date, status, category, line_amount)"
                        " VALUES (?, DATE '2026-11-21' - ?::INT, ?, ?, ?)", [f"c{customer}", days_ago, status,
                                                                             category, amount])
        got = con.execute(f"SELECT favourite_category_365 FROM ({sql}) ORDER BY customer_id").fetchall()
    assert [g[0] for g in got] == expected


def test_customers_whose_rows_all_fall_outside_the_windows_get_what_reading_every_row_gives(monkeypatch):
    """Each entity's grouping reads only the rows some feature's filter or window keeps (a
    WHERE beside the FILTERs); a customer left with no row there gets the same features."""
    from dataclasses import replace

    import rules.compiler as compiler

    rules, day, rows_read = load_rules(), date(2026, 11, 21), compiler._rows_read
    pushed = features_sql(rules, day, 730)
    assert "FROM feature_activity WHERE activity_date >= CAST('2026-10-23' AS DATE) GROUP BY" in " ".join(pushed.split())
    with duckdb.connect() as con:
        create_feature_relations(con, 4)  # c3 has no rows at all
        inserts = """
            INSERT INTO feature_orders (customer_id, order_date, ordered_at, amount, status, channel) VALUES
                ('c0', DATE '2024-01-02', DATE '2024-01-02', 50, 'paid', 'web'),      -- before the lookback
                ('c0', DATE '2026-11-20', DATE '2026-11-20', 20, 'refunded', 'web'),
                ('c1', DATE '2026-11-01', DATE '2026-11-01', 30, 'paid', 'store'),
                ('c2', DATE '2026-11-19', DATE '2026-11-19', 10, 'cancelled', 'web');
            INSERT INTO feature_activity VALUES ('c0', DATE '2026-10-01', 'event'), ('c1', DATE '2026-11-20', 'event'),
                                                ('c2', DATE '2026-10-22', 'order');
            INSERT INTO feature_interactions (customer_id, interaction_date, occurred_at, kind, channel) VALUES
                ('c0', DATE '2026-01-05', DATE '2026-01-05', 'complaint', 'phone'),
                ('c1', DATE '2026-11-11', DATE '2026-11-11', 'complaint', 'chat'),
                ('c2', DATE '2026-11-11', DATE '2026-11-11', 'question', 'chat');"""
        con.execute(inserts)
        got = con.execute(f"SELECT * FROM ({pushed}) ORDER BY customer_id").fetchall()
        monkeypatch.setattr(compiler, "_rows_read", lambda *args: None)
        every_row = con.execute(f"SELECT * FROM ({features_sql(rules, day, 730)}) ORDER BY customer_id").fetchall()
    assert got == every_row and len(got) == 4
    # The features stage builds each relation with only the rows some feature reads: the same features.
    monkeypatch.undo()
    with duckdb.connect() as con:
        create_feature_relations(con, 4)
        con.execute(inserts)
        kept = {entity: compiler.rows_read_sql(rules, entity, day, 730) for entity in FEATURE_ENTITIES}
        assert kept["activity"] == "activity_date >= CAST('2026-10-23' AS DATE)"
        for entity, condition in kept.items():
            if condition is not None:
                con.execute(f"DELETE FROM feature_{entity} WHERE NOT coalesce({condition}, false)")
        assert con.execute("SELECT count(*) FROM feature_activity").fetchone() == (1,)
        assert con.execute(f"SELECT * FROM ({pushed}) ORDER BY customer_id").fetchall() == every_row
    assert compiler.earliest_date_read(rules, "activity", day, 730) == date(2026, 10, 23)
    every_day = replace(rules.features["active_days_30"], id="active_days", window_days=None)
    reads_all = replace(rules, features={**rules.features, "active_days": every_day})
    assert compiler.rows_read_sql(reads_all, "activity", day, 730) is None  # a feature reading every row keeps them all
    assert compiler.earliest_date_read(reads_all, "activity", day, 730) is None
    counts = [f for f in rules.features.values() if f.aggregate == "count" and f.default == 0]
    assert rows_read(counts, day, 730) is not None
    assert rows_read([replace(counts[0], default=None)], day, 730) is None  # 0 over no rows, NULL if absent

"""The rule language: every shipped rule is complete and tested; bad rules never reach SQL."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest

from rules.compiler import features_sql, tag_select, tags_sql
from rules.errors import RuleErrors
from rules.model import load_rules, rules_dir
from rules.testing import run_rule_tests, uncovered_values


def test_every_rule_file_compiles_and_every_active_tag_is_documented_and_tested():
    rules = load_rules()
    assert {"rfm_segment", "activity_level", "churn_risk", "lifecycle_stage"} <= set(rules.tags)
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
    assert tag_select(tag).sql(dialect="duckdb") == (
        "SELECT customer_id, 'activity_level' AS tag, CASE WHEN active_days_30 >= 15 THEN 'high' "
        "WHEN active_days_30 >= 4 THEN 'medium' WHEN active_days_30 >= 1 THEN 'low' ELSE 'inactive' END AS value, "
        "CAST(NULL AS DOUBLE) AS score FROM features")


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


@pytest.mark.parametrize("description,recency,frequency,expected", SCORE_CASES, ids=[c[0] for c in SCORE_CASES])
def test_rfm_scores_from_percent_rank(description, recency, frequency, expected):
    rules = load_rules()
    sql = features_sql(rules, date(2026, 11, 21), 730)
    with duckdb.connect() as con:
        con.execute("CREATE TABLE feature_customers AS SELECT 'c' || i AS customer_id FROM range(?) t(i)",
                    [len(recency)])
        con.execute("""CREATE TABLE feature_orders (customer_id VARCHAR, order_id VARCHAR, ordered_at TIMESTAMPTZ,
                       order_date DATE, amount DECIMAL(18, 2), status VARCHAR, channel VARCHAR, gap_days INTEGER)""")
        con.execute("CREATE TABLE feature_activity (customer_id VARCHAR, activity_date DATE, kind VARCHAR)")
        for i, (r, f) in enumerate(zip(recency, frequency)):
            for _ in range(f):
                con.execute("INSERT INTO feature_orders VALUES (?, ?, NULL, DATE '2026-11-21' - ?::INT, 10, 'paid',"
                            " 'web', NULL)", [f"c{i}", f"o{i}", r])
        got = con.execute(f"SELECT r_score FROM ({sql}) ORDER BY customer_id").fetchall()
    assert [g[0] for g in got] == expected

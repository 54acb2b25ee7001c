"""Governance of tags: lint findings, the marketing exclusion, and overrides applied after the rules."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest

from rules.lint import lint
from rules.model import load_rules, rules_dir
from rules.testing import evaluate
from warehouse.tagging import write_tag_rows


@pytest.fixture()
def rule_copy(tmp_path) -> Path:
    folder = tmp_path / "rules"
    shutil.copytree(rules_dir(), folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return folder


def _edit(folder: Path, file: str, old: str, new: str) -> None:
    path = folder / file
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def _line_of(folder: Path, file: str, text: str) -> int:
    return next(i for i, line in enumerate((folder / file).read_text(encoding="utf-8").splitlines(), start=1)
                if text in line)


def test_the_shipped_rules_lint_clean():
    assert lint(load_rules()) == []


def test_a_case_hidden_by_an_earlier_case_is_a_warning_at_its_line(rule_copy):
    _edit(rule_copy, "activity_level.yaml", '- {value: high,   when: "active_days_30 >= 15"}',
          '- {value: high,   when: "active_days_30 >= 1"}')
    findings = lint(load_rules(rule_copy))
    hidden = [f for f in findings if "hidden" in f.message]
    assert {f.message.split("case ")[1].split(" ")[0] for f in hidden} == {"'medium'", "'low'"}
    assert all(f.level == "warning" and f.where.file == "activity_level.yaml" for f in hidden)
    assert hidden[0].where.line == _line_of(rule_copy, "activity_level.yaml", "value: medium")


def test_a_value_no_customer_reaches_is_a_warning(rule_copy):
    _edit(rule_copy, "age_band.yaml", 'when: "age_years >= 60"}', 'when: "age_years >= 60 and age_years < 0"}')
    [finding] = lint(load_rules(rule_copy))
    assert "no customer reaches '60+'" in finding.message and finding.where.file == "age_band.yaml"


def test_two_tags_with_one_definition_is_a_warning(rule_copy):
    definition = load_rules(rule_copy).tags["activity_level"].definition
    (rule_copy / "activity_copy.yaml").write_text(
        (rule_copy / "activity_level.yaml").read_text(encoding="utf-8").replace("id: activity_level", "id: busy"),
        encoding="utf-8")
    findings = lint(load_rules(rule_copy))
    assert any("same definition as 'activity_level'" in f.message for f in findings), definition


def test_a_changed_value_type_of_a_published_tag_is_an_error(rule_copy, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA analytics")
        con.execute("""CREATE TABLE analytics.tag_catalog AS SELECT * FROM (VALUES
            ('high_frequency_buyer', 'enum', ['yes', 'no'], 1, 'active'),
            ('value_tier', 'enum', ['high-value', 'low-value'], 1, 'active'),
            ('vip', 'flag', ['true', 'false'], 3, 'active')) t(tag, value_type, "values", version, status)""")
    findings = {(f.level, f.message.split(" ")[1]): f for f in lint(load_rules(rule_copy), warehouse)}
    error = findings[("error", "'high_frequency_buyer'")]
    assert "published as a enum tag and is now a flag tag" in error.message and "new tag" in error.fix
    assert "raise version to 2" in findings[("warning", "'value_tier'")].fix
    assert "status: retired" in findings[("warning", "tag")].fix  # 'published tag 'vip' has no rule file'


def test_marketing_tags_have_no_value_for_children_under_14():
    rules = load_rules()
    for tag in [t for t in rules.active_tags if t.marketing]:
        assert evaluate(tag, rules, {"age_years": 13, "m_score": 5, "r_score": 5, "f_score": 5,
                                     "email_opt_in": True, "birth_month": 3, "paid_orders_365": 9,
                                     "days_since_first_order": 1, "favourite_category_365": "food"}) is None, tag.id
    assert evaluate(rules.tags["sensitive_minor"], rules, {"age_years": 13}) == "true"
    assert evaluate(rules.tags["age_band"], rules, {"age_years": 13}) == "0-18"


OVERRIDE_CASES = [
    # (description, overrides as (id, customer, tag, value, from, expires, revoked), expected value_tier per customer)
    ("no override: the rules' value", [], {"c1": "potential", "c2": "high-value", "kid": None}),
    ("a correction replaces the computed value",
     [(1, "c1", "value_tier", "high-value", "2026-11-01", None, False)], {"c1": "high-value"}),
    ("a removal takes the value away", [(1, "c2", "value_tier", None, "2026-11-01", None, False)], {"c2": None}),
    ("the newest override wins", [(1, "c1", "value_tier", "high-value", "2026-11-01", None, False),
                                  (2, "c1", "value_tier", "low-value", "2026-11-02", None, False)], {"c1": "low-value"}),
    ("an expired override no longer applies",
     [(1, "c1", "value_tier", "high-value", "2026-11-01", "2026-11-20", False)], {"c1": "potential"}),
    ("a future override does not apply yet",
     [(1, "c1", "value_tier", "high-value", "2026-11-22", None, False)], {"c1": "potential"}),
    ("a revoked override does not apply", [(1, "c1", "value_tier", "high-value", "2026-11-01", None, True)],
     {"c1": "potential"}),
    ("a marketing tag override does not reach a child",
     [(1, "kid", "value_tier", "high-value", "2026-11-01", None, False)], {"kid": None}),
]


@pytest.mark.parametrize("description,overrides,expected", OVERRIDE_CASES, ids=[c[0] for c in OVERRIDE_CASES])
def test_overrides_apply_after_the_rules(description, overrides, expected):
    rules = load_rules()
    with duckdb.connect() as con:
        con.execute("""CREATE TABLE features AS SELECT * FROM (VALUES
            ('c1', 3, 1, 1, 40), ('c2', 5, 5, 5, 40), ('kid', 5, 5, 5, 12)) t(customer_id, m_score, r_score, f_score,
            age_years)""")
        for name in sorted(rules.names - {"m_score", "r_score", "f_score", "age_years"}):
            con.execute(f"ALTER TABLE features ADD COLUMN {name} DOUBLE")
        con.execute("""CREATE TABLE overrides (override_id BIGINT, customer_id VARCHAR, tag VARCHAR, value VARCHAR,
                       reason VARCHAR, author VARCHAR, created_at TIMESTAMPTZ, effective_from DATE, expires_on DATE,
                       revoked_at TIMESTAMPTZ)""")
        for oid, customer, tag, value, start, expires, revoked in overrides:
            con.execute("INSERT INTO overrides VALUES (?, ?, ?, ?, 'why', 'who', now(), ?, ?,"
                        " CASE WHEN ? THEN now() END)", [oid, customer, tag, value, start, expires, revoked])
        write_tag_rows(con, "tags", rules, date(2026, 11, 21), "features", "overrides")
        got = dict(con.execute("SELECT customer_id, value FROM tags WHERE tag = 'value_tier'").fetchall())
    for customer, value in expected.items():
        assert got.get(customer) == value, customer

"""End to end: the standard tag library, overrides, diff and explain on real runs of the flow."""

from __future__ import annotations

import shutil
from datetime import timedelta

import duckdb
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.nightly import nightly
from rules.kinds import Manual
from rules.model import load_rules, rules_dir
from tests.conftest import AS_OF, wide_table_mismatches
from warehouse.rules_diff import diff_rules
from warehouse.settings import Settings

pytestmark = pytest.mark.e2e
runner = CliRunner(env={"COLUMNS": "250"})


def test_every_active_tag_is_published_within_its_declared_values(published):
    result, _ = published
    rules = load_rules()
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        stats = con.execute("SELECT tag, list(DISTINCT value) FROM analytics.tag_stats GROUP BY tag").fetchall()
        catalog = {r[0]: r[1:] for r in con.execute(
            'SELECT tag, owner, definition, status, coverage, "values" FROM analytics.tag_catalog').fetchall()}
    published_values = dict(stats)
    for tag in rules.active_tags:
        owner, definition, status, coverage, values = catalog[tag.id]
        assert owner and definition and status == "active"
        if isinstance(tag.rule, Manual):
            continue
        assert tag.id in published_values and coverage > 0, f"{tag.id} has no customer"
        if tag.values is not None:  # a list tag's value is a comma-separated list of declared values
            elements = {e for v in published_values[tag.id] for e in (v.split(",") if tag.value_type == "list" else [v])}
            assert elements <= set(tag.values), tag.id
    assert {"true", "false"} == set(published_values["recent_complaint"])
    assert {"true", "false"} == set(published_values["sensitive_minor"])


def test_children_get_no_marketing_tag(published):
    result, _ = published
    marketing = [t.id for t in load_rules().active_tags if t.marketing]
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        children = con.execute("SELECT list(customer_id) FROM analytics.customer_tags"
                               " WHERE tag = 'sensitive_minor' AND value = 'true'").fetchone()[0]
        assert children, "the sample plants children under 14"
        leaked = con.execute("SELECT count(*) FROM analytics.customer_tags WHERE list_contains(?, customer_id)"
                             " AND list_contains(?, tag)", [children, marketing]).fetchone()[0]
        ages = con.execute("SELECT max(age_years) FROM analytics.customer_features"
                           " WHERE list_contains(?, customer_id)", [children]).fetchone()[0]
    assert leaked == 0 and ages < 14


def test_recent_complaint_comes_from_complaints_and_returns_in_90_days(published):
    result, _ = published
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        flagged = set(r[0] for r in con.execute("SELECT customer_id FROM analytics.customer_tags"
                                                " WHERE tag = 'recent_complaint' AND value = 'true'").fetchall())
        expected = set(r[0] for r in con.execute(
            "SELECT DISTINCT customer_id FROM analytics.interactions WHERE kind IN ('complaint', 'return')"
            " AND occurred_on > ?::DATE - 90", [AS_OF]).fetchall())
    assert flagged == expected and flagged


def test_overrides_reach_the_next_run_with_an_audit_trail(prefect_harness, published_copy, tmp_path, monkeypatch):
    warehouse = published_copy / "warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        a, b, c = [r[0] for r in con.execute("SELECT customer_id FROM analytics.customer_tags WHERE tag = 'value_tier'"
                                             " AND value = 'potential' ORDER BY customer_id LIMIT 3").fetchall()]
    attendees = tmp_path / "attendees.csv"
    attendees.write_text(f"customer_id\n{a}\n{b}\n", encoding="utf-8")
    added = runner.invoke(app, ["tags", "add", "event_attendee", "--value", "attended", "--customers", str(attendees),
                                "--reason", "store opening", "--author", "li.na", "--from", AS_OF.isoformat()])
    assert added.exit_code == 0, added.output
    corrected = runner.invoke(app, ["tags", "set", c, "value_tier", "high-value", "--reason", "VIP per store manager",
                                    "--author", "wang", "--from", AS_OF.isoformat()])
    assert corrected.exit_code == 0, corrected.output
    bad = runner.invoke(app, ["tags", "set", c, "value_tier", "gold", "--reason", "x", "--author", "y"])
    assert bad.exit_code == 2 and "use one of: high-value, potential, low-value" in bad.output

    diff = runner.invoke(app, ["rules", "diff"], env={"COLUMNS": "200"})
    assert diff.exit_code == 0 and "event_attendee" in diff.output and "value_tier: 1 of" in diff.output

    monkeypatch.setenv("TAGWRIGHT_COVERAGE_ALERT", "0")
    result = nightly(as_of=(AS_OF + timedelta(days=1)).isoformat())
    assert result["status"] == "success"
    assert any(w.startswith("tag event_attendee coverage") or "coverage moved" in w for w in result["warnings"])
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tags = con.execute("SELECT customer_id, tag, value FROM analytics.customer_tags"
                           " WHERE tag = 'event_attendee' OR (customer_id = ? AND tag = 'value_tier')"
                           " ORDER BY ALL", [c]).fetchall()
        audit = con.execute("SELECT customer_id, tag, value, reason, author, in_force FROM analytics.tag_overrides"
                            " ORDER BY override_id").fetchall()
        stored = con.execute("SELECT customer_id, tag FROM analytics.customer_tags ORDER BY rowid").fetchall()
        assert wide_table_mismatches(con) == 0  # the overrides reach the wide table too
    overridden = sorted([(a, "event_attendee"), (b, "event_attendee"), (c, "value_tier")])
    # docs/warehouse.md: by customer and tag, the rows an override set after the rules' rows
    assert stored[-3:] == overridden and stored[:-3] == sorted(stored[:-3])
    assert tags == sorted([(a, "event_attendee", "attended"), (b, "event_attendee", "attended"),
                           (c, "value_tier", "high-value")])
    assert audit == [(a, "event_attendee", "attended", "store opening", "li.na", True),
                     (b, "event_attendee", "attended", "store opening", "li.na", True),
                     (c, "value_tier", "high-value", "VIP per store manager", "wang", True)]
    explained = runner.invoke(app, ["explain", c], env={"COLUMNS": "250"})
    assert explained.exit_code == 0 and "override 3 by wang: VIP per store manager" in explained.output
    assert "case " in explained.output  # other tags show the rule case that fired


def test_rules_diff_counts_the_customers_an_edit_would_move(published_copy, tmp_path):
    edited = tmp_path / "rules"
    shutil.copytree(rules_dir(), edited, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = edited / "activity_level.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace('"active_days_30 >= 15"', '"active_days_30 >= 10"'),
                    encoding="utf-8")
    unchanged = diff_rules(Settings.from_env(), load_rules())
    assert unchanged.moves == []
    result = diff_rules(Settings.from_env(), load_rules(edited))
    with duckdb.connect(str(published_copy / "warehouse.duckdb"), read_only=True) as con:
        expected = con.execute("SELECT count(*) FROM analytics.customer_features"
                               " WHERE active_days_30 BETWEEN 10 AND 14").fetchone()[0]
    assert expected > 0
    assert result.moves == [("activity_level", "medium", "high", expected)]
    with duckdb.connect(str(published_copy / "warehouse.duckdb"), read_only=True) as con:  # nothing was published
        assert con.execute("SELECT count(*) FROM analytics.customer_tags WHERE tag = 'activity_level'"
                           " AND value = 'high'").fetchone()[0] == con.execute(
            "SELECT count(*) FROM analytics.customer_features WHERE active_days_30 >= 15").fetchone()[0]

"""The CLI: every command has help; the cheap commands work as documented."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


def _commands():
    cli = get_command(app)
    for name, command in cli.commands.items():
        subs = getattr(command, "commands", None)
        if subs:
            yield from ([name, sub] for sub in subs)
        else:
            yield [name]


@pytest.mark.parametrize("words", list(_commands()), ids=lambda w: " ".join(w))
def test_every_command_has_help_text(words):
    result = runner.invoke(app, [*words, "--help"])
    assert result.exit_code == 0
    command = get_command(app)
    for w in words:
        command = command.commands[w]
    assert command.help and len(command.help.strip()) > 10


def test_sources_list_shows_the_connectors_and_their_entities():
    result = runner.invoke(app, ["sources", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for name in ("web", "store", "marketplace", "customer_record", "order_line"):
        assert name in result.output


def test_rules_check_and_test_pass_on_the_shipped_rules():
    check = runner.invoke(app, ["rules", "check"])
    assert check.exit_code == 0 and "ok:" in check.output
    tested = runner.invoke(app, ["rules", "test"])
    assert tested.exit_code == 0 and " 0 failed" in tested.output


def test_sql_without_a_warehouse_says_what_to_do(data_dir):
    result = runner.invoke(app, ["sql", "SELECT 1"])
    assert result.exit_code == 2 and "tagwright run" in result.output


@pytest.mark.e2e
def test_sql_and_explain_on_a_published_warehouse(published, monkeypatch):
    result, data = published
    monkeypatch.setenv("TAGWRIGHT_DATA_DIR", str(data))
    out = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM analytics.customers", "--output", "json"])
    assert out.exit_code == 0 and '"n":' in out.output
    explained = runner.invoke(app, ["explain", "TW00000001"], env={"COLUMNS": "200"})
    assert explained.exit_code == 0
    assert "source records of TW00000001" in explained.output and "lifecycle_stage" in explained.output
    assert "recency_days" in explained.output and "masked phone" in explained.output
    unknown = runner.invoke(app, ["explain", "TW99999999"])
    assert unknown.exit_code == 2 and "no customer" in unknown.output


def test_identity_review_says_when_nothing_is_left_for_review(published, monkeypatch):
    """The sample's run leaves nothing apart (no model, no card holder sharing an identifier); a
    review list that is empty says so instead of printing two empty tables."""
    import duckdb

    result, data = published
    with duckdb.connect(str(result["warehouse"]), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ops.identity_review").fetchone()[0] == 0
    monkeypatch.setenv("TAGWRIGHT_DATA_DIR", str(data))
    listed = runner.invoke(app, ["identity", "review"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    assert "0 pairs left for review: no link was stopped by a limit" in listed.output and "┏" not in listed.output

"""The identity model end to end: train it with the CLI (its own Prefect flow), then a real
nightly run scores pairs with it, publishes the links and the review list, and explain shows
which links joined a customer's records."""

from __future__ import annotations

import duckdb
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from tests.conftest import AS_OF

runner = CliRunner()
WIDE = {"COLUMNS": "250"}


@pytest.mark.e2e
def test_train_then_run_links_with_the_model_and_explain_shows_the_links(published_copy):
    trained = runner.invoke(app, ["identity", "train"], env=WIDE)
    assert trained.exit_code == 0, trained.output
    assert "identity model:" in trained.output and (published_copy / "identity" / "model.json").exists()

    run = runner.invoke(app, ["run", "--as-of", AS_OF.isoformat()], env=WIDE)
    assert run.exit_code in (0, 1), run.output
    with duckdb.connect(str(published_copy / "warehouse.duckdb"), read_only=True) as con:
        kinds = dict(con.execute("SELECT kind, count(*) FROM analytics.customer_links GROUP BY 1").fetchall())
        customer = con.execute("""SELECT customer_id FROM analytics.customer_links WHERE kind = 'model'
                                  ORDER BY customer_id LIMIT 1""").fetchall()[0][0]
        review = con.execute("SELECT count(*), count(DISTINCT reason) FROM ops.identity_review").fetchall()[0]
        below = con.execute("""SELECT count(*) FROM ops.identity_review
                               WHERE reason = 'below the acceptance probability'""").fetchall()[0][0]
        unlinked = con.execute("""SELECT count(*) FROM analytics.customer_links l
                                  WHERE NOT EXISTS (SELECT 1 FROM analytics.customer_source_ids s
                                                    WHERE s.customer_id = l.customer_id AND s.source = l.source_b
                                                      AND s.source_customer_id = l.source_customer_id_b)""").fetchall()
    assert kinds["model"] > 0 and kinds["member_id"] > 0 and kinds["email"] > 0
    assert review[0] > 0
    assert unlinked == [(0,)]   # a link joins two records of the customer it is listed under

    explained = runner.invoke(app, ["explain", customer], env=WIDE)
    assert explained.exit_code == 0
    assert "what linked them" in explained.output and "model" in explained.output

    listed = runner.invoke(app, ["identity", "review", "--limit", "5"], env=WIDE)
    assert listed.exit_code == 0 and f"{review[0]:,} pairs left for review, by reason" in listed.output
    assert "below the acceptance probability" in listed.output and "(showing 5)" in listed.output
    # A reviewer works through one reason at a time (at 1M customers there are hundreds of thousands).
    chosen = runner.invoke(app, ["identity", "review", "--reason", "BELOW the acceptance", "--limit", "500"],
                           env=WIDE)
    assert chosen.exit_code == 0, chosen.output
    pairs = chosen.output.split("whose reason contains")[1]
    assert below > 0 and f"{below:,} pairs whose reason contains 'BELOW the acceptance'" in chosen.output
    assert "below the acceptance" in pairs and "agrees on masked phone" not in pairs and "link not made" not in pairs

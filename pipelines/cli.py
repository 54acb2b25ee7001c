"""The `tagwright` command line."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rules.errors import RuleErrors
from warehouse.settings import Settings

app = typer.Typer(help="tagwright: nightly customer tags from web, store and marketplace exports.",
                  no_args_is_help=True, add_completion=False)
rules_app = typer.Typer(help="Check and test the tag rules in rules/*.yaml.", no_args_is_help=True)
sources_app = typer.Typer(help="Source connectors.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(sources_app, name="sources")
console = Console()


def _table(title: str, columns: list[str], rows: list[tuple]) -> Table:
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    return table


@app.command()
def sample(customers: int = typer.Option(2000, help="people to simulate"),
           days: int = typer.Option(730, help="days of history"),
           seed: int = typer.Option(7, help="random seed; same seed and end date, same bytes"),
           end_date: str = typer.Option(None, help="last day of history, YYYY-MM-DD (default: yesterday)"),
           out: Path = typer.Option(Path("data/inbox"), help="inbox folder to write the exports into")) -> None:
    """Generate realistic sample exports for the web, store and marketplace sources."""
    from sources.sample import generate

    end = date.fromisoformat(end_date) if end_date else None
    with console.status("generating sample exports"):
        summary = generate(out, customers=customers, days=days, seed=seed, end_date=end)
    console.print(_table(f"sample exports in {out}", ["what", "count"], list(summary.items())))


@app.command()
def run(as_of: str = typer.Option(None, "--as-of", help="business date YYYY-MM-DD (default: yesterday)"),
        full_rebuild: bool = typer.Option(False, "--full-rebuild", help="land every inbox file again")) -> None:
    """Run the nightly flow (land, validate, stage, identities, features, tags, publish).

    Exit code 0: published; 1: published but degraded (a source failed); 2: failed, nothing published.
    """
    from pipelines.nightly import nightly

    try:
        result = nightly(as_of=as_of, full_rebuild=full_rebuild)
    except Exception as exc:  # the scheduler needs an exit code, the operator the reason
        console.print(f"[red]run failed, nothing published:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from exc
    _print_run(result)
    _print_tag_counts(Path(result["warehouse"]))
    console.print(f"warehouse: {result['warehouse']}\nexport:    {result['export']}")
    if result["status"] != "success":
        raise typer.Exit(1)


@app.command()
def backfill(start: str = typer.Option(..., "--from", help="first business date YYYY-MM-DD"),
             end: str = typer.Option(..., "--to", help="last business date YYYY-MM-DD")) -> None:
    """Rebuild published tags and tag history day by day for a range of past dates."""
    from pipelines.nightly import backfill as backfill_flow

    try:
        results = backfill_flow(start=start, end=end)
    except Exception as exc:
        console.print(f"[red]backfill failed:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from exc
    console.print(_table("backfill", ["as_of", "status", "tag rows"],
                         [(r["as_of"], r["status"], r["row_counts"].get("tags")) for r in results]))
    if any(r["status"] != "success" for r in results):
        raise typer.Exit(1)


def _print_run(result: dict) -> None:
    console.print(_table(f"run {result['run_id']} for {result['as_of']}: {result['status']}",
                         ["stage", "seconds", "rows"],
                         [(s, result["stage_seconds"][s], result["row_counts"].get(s)) for s in result["stage_seconds"]]))
    for w in result["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _print_tag_counts(warehouse: Path) -> None:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("""SELECT tag, value, customers, round(100 * coverage, 1) FROM analytics.tag_stats
                              WHERE as_of = (SELECT max(as_of) FROM analytics.tag_stats)
                              ORDER BY tag, customers DESC""").fetchall()
    console.print(_table("customers per tag value", ["tag", "value", "customers", "% of customers"], rows))


@app.command()
def sql(query: str, output: str = typer.Option("table", help="table, csv or json")) -> None:
    """Run a read-only SQL query against the published warehouse."""
    import duckdb

    settings = Settings.from_env()
    if not settings.warehouse.exists():
        console.print(f"[red]no warehouse at {settings.warehouse}[/red]; run `tagwright run` first")
        raise typer.Exit(2)
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        cursor = con.execute(query)
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    if output == "csv":
        import csv
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    elif output == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], ensure_ascii=False, default=str, indent=2))
    else:
        console.print(_table("", columns, rows))


@app.command()
def explain(customer_id: str) -> None:
    """Show a customer's source records, the identifiers that could link them, features and tags."""
    import duckdb

    settings = Settings.from_env()
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        sources = con.execute("""SELECT source, source_customer_id, has_member_id, has_email, has_phone,
                                        has_masked_phone, has_name
                                 FROM analytics.customer_source_ids WHERE customer_id = ? ORDER BY 1, 2""",
                              [customer_id]).fetchall()
        if not sources:
            console.print(f"[red]no customer {customer_id!r}[/red] in {settings.warehouse}")
            raise typer.Exit(2)
        cursor = con.execute("SELECT * FROM analytics.customer_features WHERE customer_id = ?", [customer_id])
        features = list(zip([d[0] for d in cursor.description], cursor.fetchone() or []))
        tags = con.execute("SELECT tag, value, as_of FROM analytics.customer_tags WHERE customer_id = ?"
                           " ORDER BY tag", [customer_id]).fetchall()
    console.print(_table(f"source records of {customer_id} and the identifiers they carry",
                         ["source", "id", "member id", "email", "phone", "masked phone", "name"], sources))
    if features:
        console.print(_table("features", ["feature", "value"], features))
    console.print(_table("tags", ["tag", "value", "as_of"], tags))


@rules_app.command("check")
def rules_check() -> None:
    """Parse and check every rule file; errors point at file:line:column."""
    from rules.compiler import features_sql, tags_sql
    from rules.model import load_rules

    try:
        rules = load_rules()
    except RuleErrors as exc:
        for e in exc.errors:
            console.print(f"[red]error[/red] {e}")
        raise typer.Exit(1) from exc
    features_sql(rules, date.today(), 730)
    tags_sql(rules)
    console.print(f"ok: {len(rules.features)} features, {len(rules.scores)} scores, {len(rules.tags)} tags")


@rules_app.command("test")
def rules_test() -> None:
    """Run the test cases written beside each tag (given features -> expected value)."""
    from rules.testing import run_rule_tests

    failures, total = run_rule_tests()
    for f in failures:
        console.print(f"[red]FAIL[/red] {f}")
    console.print(f"{total - len(failures)} passed, {len(failures)} failed")
    if failures:
        raise typer.Exit(1)


@rules_app.command("docs")
def rules_docs() -> None:
    """Print docs/tags.md, generated from the rules."""
    from rules.docs import render_tags_markdown
    from rules.model import load_rules

    print(render_tags_markdown(load_rules()), end="")


@sources_app.command("list")
def sources_list() -> None:
    """List the registered connectors with the entities they produce."""
    from sources.sdk import discover

    rows = [(c.name, ", ".join(f"{s.entity}({'+'.join(s.key)})" for s in c.streams),
             ", ".join(f.pattern for f in c.files), c.encoding, c.description) for c in discover().values()]
    console.print(_table("connectors", ["name", "entities (key)", "files", "encoding", "description"], rows))


@sources_app.command("new")
def sources_new(name: str, root: Path = typer.Option(None, help="project folder (default: this checkout)")) -> None:
    """Create a working mapping connector: sources/NAME/ and its tests and sample export."""
    from sources.scaffold import new_connector

    try:
        written = new_connector(name, root)
    except (ValueError, FileExistsError) as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from exc
    for path in written:
        console.print(f"created {path}")
    console.print(f"next: edit sources/{name}/mapping.yaml for your export, replace the sample, "
                  f"run pytest tests/sources/{name}")

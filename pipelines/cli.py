"""The `tagwright` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rules.errors import RuleErrors
from warehouse.settings import Settings

app = typer.Typer(help="tagwright: nightly customer tags from web, store and marketplace exports.",
                  no_args_is_help=True, add_completion=False)
rules_app = typer.Typer(help="Check, test, document and diff the tag rules in rules/*.yaml.", no_args_is_help=True)
sources_app = typer.Typer(help="Source connectors.", no_args_is_help=True)
tags_app = typer.Typer(help="Manual tags and corrections (overrides applied after the rules).", no_args_is_help=True)
identity_app = typer.Typer(help="The probabilistic identity model and the pairs left for review.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(sources_app, name="sources")
app.add_typer(tags_app, name="tags")
app.add_typer(identity_app, name="identity")
console = Console()


@contextmanager
def _stage_errors() -> Iterator[None]:
    """A StageError names what failed and the fix: print it and exit 2."""
    from warehouse.errors import StageError

    try:
        yield
    except StageError as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from exc


def _print_rule_errors(exc: RuleErrors) -> None:
    for e in exc.errors:
        console.print(f"error {e}", style="red", markup=False)


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
           out: Path = typer.Option(Path("data/inbox"), help="inbox folder to write the exports into"),
           volume: float = typer.Option(1.0, min=0.01, help="order lines and events per person, times the usual "
                                                             "(2.5 at 1M customers: 20M lines, 50M events)"),
           accounts: float = typer.Option(1.0, min=1, help="accounts a person holds in each source they use, on "
                                                           "average (2 at 1M customers: 3.4M source records)")) -> None:
    """Generate realistic sample exports for the web, store and marketplace sources."""
    from sources.sample import generate

    end = date.fromisoformat(end_date) if end_date else None
    with console.status("generating sample exports"):
        summary = generate(out, customers=customers, days=days, seed=seed, end_date=end, volume=volume,
                           accounts=accounts)
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


def _print_tag_counts(warehouse: Path, most: int = 5) -> None:
    """Customers per value of every tag, the ``most`` largest values of each."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(f"""
            SELECT tag, CASE WHEN rank <= {most} THEN value ELSE '(' || values_count - {most} || ' more values)' END,
                   sum(customers), round(100 * sum(coverage), 1)
            FROM (SELECT *, row_number() OVER (PARTITION BY tag ORDER BY customers DESC, value) AS rank,
                         count(*) OVER (PARTITION BY tag) AS values_count
                  FROM analytics.tag_stats WHERE as_of = (SELECT max(as_of) FROM analytics.tag_stats))
            GROUP BY ALL ORDER BY tag, min(rank)""").fetchall()
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
    """Show a customer's source records, identifiers, features, tags with the case that fired, and overrides."""
    from pipelines.explain import explain_customer

    settings = Settings.from_env()
    try:
        report = explain_customer(settings, customer_id)
    except LookupError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    for title, columns, rows in report:
        console.print(_table(title, columns, rows))


@app.command()
def report(out: Path = typer.Option(None, help="where to write the HTML (default: data/reports/tag-report-AS_OF.html)")
           ) -> None:
    """Write the tag report: one self-contained HTML file (catalog, coverage, RFM grid, trends, quality)."""
    from warehouse.report import build_report

    try:
        with console.status("building the tag report"):
            result = build_report(Settings.from_env(), out)
    except FileNotFoundError as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from exc
    console.print(f"report for {result.as_of} with {result.charts} charts: {result.path}")


@app.command()
def export(tag: str = typer.Option(..., help="tag id, e.g. churn_risk"),
           value: str = typer.Option(..., help="the value, e.g. high"),
           out: Path = typer.Option(None, help="CSV path (default: data/exports/campaigns/TAG=VALUE/customers_AS_OF.csv)")
           ) -> None:
    """Export the customers holding one tag value as CSV for a campaign tool (pseudonymised contacts)."""
    from warehouse.campaign_export import export_tag_value

    with _stage_errors():
        result = export_tag_value(Settings.from_env(), tag, value, out)
    console.print(f"{result.rows} customers with {tag} = {value} on {result.as_of}: {result.path}")


@app.command()
def forget(customer_ids: list[str] = typer.Argument(None, help="the customers to erase"),
           email: list[str] = typer.Option(None, help="find a customer by email instead (repeatable)"),
           customers: Path = typer.Option(None, help="a CSV with a customer_id column: erase them all"),
           reason: str = typer.Option(..., help="the request, e.g. a ticket number (logged)"),
           requested_by: str = typer.Option(..., help="who handled the request (logged)")) -> None:
    """Erase people from every layer (lake, work file, warehouse, exports) and log each in ops.erasures.

    One pass over each layer for everyone named: erase a day's requests together."""
    from warehouse.erasure import find_customer, forget as erase
    from warehouse.errors import StageError
    from warehouse.overrides import read_customer_list

    settings = Settings.from_env()
    with _stage_errors():
        targets = list(customer_ids or [])
        if customers is not None:
            try:
                targets += read_customer_list(customers)
            except StageError as exc:
                raise StageError("forget", exc.problem, exc.fix) from exc
        targets += [find_customer(settings, e) for e in email or []]
        result = erase(settings, targets, reason, requested_by)
    for erasure_id, customer_id, records in result.erasures:
        console.print(f"erasure {erasure_id}: {customer_id} ({records} source records) removed from every layer")
    console.print(f"logged in ops.erasures; rows removed{' for all of them' if len(result.erasures) > 1 else ''}:")
    console.print(_table("rows removed", ["where", "rows"], sorted(result.rows_removed.items())))
    if result.inbox_files:
        who = "this person" if len(result.erasures) == 1 else "these people"
        console.print(f"[yellow]the inbox still holds the sources' deliveries with {who} (the pipeline "
                      "skips them from now on); have them re-exported or deleted at the source:[/yellow]")
        for f in result.inbox_files:
            console.print(f"  {f}", markup=False)


@rules_app.command("check")
def rules_check() -> None:
    """Parse and lint every rule file; errors and warnings point at file:line:column.

    Warns on two tags with one definition, values no customer reaches, cases hidden by earlier
    cases (on the last published run's customers), changed values without a new version; fails
    on a changed value type of a published tag.
    """
    from rules.compiler import features_sql, tags_sql
    from rules.lint import lint
    from rules.model import load_rules

    try:
        rules = load_rules()
    except RuleErrors as exc:
        _print_rule_errors(exc)
        raise typer.Exit(1) from exc
    features_sql(rules, date.today(), 730)
    tags_sql(rules)
    findings = lint(rules, Settings.from_env().warehouse)
    for f in findings:
        console.print(str(f), style="red" if f.level == "error" else "yellow", markup=False)
    errors = sum(f.level == "error" for f in findings)
    console.print(f"{'failed' if errors else 'ok'}: {len(rules.features)} features, {len(rules.scores)} scores, "
                  f"{len(rules.models)} models, {len(rules.tags)} tags; {errors} errors, "
                  f"{len(findings) - errors} warnings")
    if errors:
        raise typer.Exit(1)


@rules_app.command("diff")
def rules_diff() -> None:
    """Compute the tags with the rules as edited in rules/ against the last published run and
    show how many customers would move from which value to which; publishes nothing."""
    from rules.model import load_rules
    from warehouse.rules_diff import diff_rules

    try:
        rules = load_rules()
    except RuleErrors as exc:
        _print_rule_errors(exc)
        raise typer.Exit(1) from exc
    with _stage_errors(), console.status("computing the edited rules against the last published run"):
        result = diff_rules(Settings.from_env(), rules)
    if not result.moves:
        console.print(f"no change: the edited rules give the published tags of {result.as_of} "
                      f"for all {result.customers} customers")
        return
    rows = [(tag, "(none)" if old is None else old, "(none)" if new is None else new, n)
            for tag, old, new, n in result.moves]
    console.print(_table(f"customers that would move, against the run published for {result.as_of}",
                         ["tag", "published value", "edited value", "customers"], rows))
    console.print(", ".join(f"{tag}: {n} of {result.customers}" for tag, n in result.changed_tags().items()))


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


def _override_request(tag: str, value: str | None, reason: str, author: str, effective_from: str | None,
                      expires: str | None):
    from warehouse.overrides import OverrideRequest

    return OverrideRequest(tag=tag, value=value, reason=reason, author=author,
                           effective_from=date.fromisoformat(effective_from) if effective_from else None,
                           expires_on=date.fromisoformat(expires) if expires else None)


def _record_overrides(request, customer_ids: list[str], source: str) -> None:
    from rules.model import load_rules
    from warehouse.overrides import add_overrides

    with _stage_errors():
        ids = add_overrides(Settings.from_env(), load_rules(), request, customer_ids, source)
    what = "removes" if request.value is None else f"sets {request.value!r} for"
    console.print(f"recorded overrides {ids[0]}-{ids[-1]}: {request.tag} {what} {len(ids)} customers; "
                  "the next run applies them")


REASON = typer.Option(..., help="why (kept for audit)")
AUTHOR = typer.Option(..., help="who asks for it (kept for audit)")
FROM = typer.Option(None, "--from", help="first as_of it applies to, YYYY-MM-DD (default: yesterday)")
EXPIRES = typer.Option(None, help="last as_of it applies to, YYYY-MM-DD (default: never)")


@tags_app.command("add")
def tags_add(tag: str, customers: Path = typer.Option(..., help="CSV with a customer_id column"),
             value: str = typer.Option(..., help="the value to give them"), reason: str = REASON,
             author: str = AUTHOR, effective_from: str = FROM, expires: str = EXPIRES) -> None:
    """Give a tag value to a list of customers (e.g. event attendees)."""
    from warehouse.overrides import read_customer_list

    with _stage_errors():
        ids = read_customer_list(customers)
    _record_overrides(_override_request(tag, value, reason, author, effective_from, expires), ids, str(customers))


@tags_app.command("set")
def tags_set(customer_id: str, tag: str, value: str = typer.Argument(None, help="the corrected value"),
             remove: bool = typer.Option(False, "--remove", help="the customer gets no value for the tag"),
             reason: str = REASON, author: str = AUTHOR, effective_from: str = FROM, expires: str = EXPIRES) -> None:
    """Correct one customer's value of a tag (or remove it with --remove)."""
    if (value is None) == (not remove):
        console.print("give either a VALUE or --remove", style="red")
        raise typer.Exit(2)
    _record_overrides(_override_request(tag, None if remove else value, reason, author, effective_from, expires),
                      [customer_id], "the command line")


@tags_app.command("list")
def tags_list(tag: str = typer.Option(None, help="only this tag")) -> None:
    """List manual tags and corrections with their reason, author and period."""
    from warehouse.overrides import list_overrides

    columns, rows = list_overrides(Settings.from_env(), tag)
    console.print(_table("overrides", columns, rows))


@tags_app.command("revoke")
def tags_revoke(override_id: int) -> None:
    """Stop an override from applying from the next run on (it stays in the audit trail)."""
    from warehouse.overrides import revoke_override

    with _stage_errors():
        revoke_override(Settings.from_env(), override_id)
    console.print(f"revoked override {override_id}; the next run stops applying it")


@identity_app.command("train")
def identity_train() -> None:
    """Train the identity model on the records the last run staged; the next run uses it."""
    from pipelines.identity_training import train_identity_model

    with _stage_errors():
        result = train_identity_model()
    console.print(_table(f"identity model: {result['records']} records, prior {result['prior']:.3g}",
                         ["comparison", "level", "m", "u", "bayes factor"],
                         [(r["comparison"], r["level"], f"{r['m']:.4f}", f"{r['u']:.6f}", f"{r['bayes_factor']:.3g}")
                          for r in result["levels"]]))
    console.print(f"saved to {result['model']}; the next `tagwright run` scores pairs with it")


@identity_app.command("review")
def identity_review(limit: int = typer.Option(50, help="at most this many pairs, most probable first"),
                    reason: str = typer.Option(None, help="only pairs whose reason contains this text, "
                                                          "e.g. 'member ids' or 'below the acceptance'")) -> None:
    """Pairs of customers the last run left apart: scored below the acceptance probability, or a
    link a limit (member ids, records per customer) stopped; first how many there are for each
    reason, then the pairs."""
    settings = Settings.from_env()
    if not settings.warehouse.exists():
        console.print(f"no warehouse at {settings.warehouse}; run `tagwright run` first", style="red")
        raise typer.Exit(2)
    import duckdb

    matching, params = ("WHERE contains(lower(reason), lower($reason))", {"reason": reason}) if reason else ("", {})
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        # The reasons name counts ("... 3 member ids"): counted with the numbers left out.
        by_reason = con.execute("""SELECT regexp_replace(reason, '[0-9]+', 'N', 'g'), count(*) FROM ops.identity_review
                                   GROUP BY 1 ORDER BY 2 DESC, 1""").fetchall()
        rows = con.execute(f"""SELECT customer_id_a, source_a || ':' || source_customer_id_a, customer_id_b,
                                      source_b || ':' || source_customer_id_b, round(probability, 3),
                                      array_to_string(agreeing, ', '), reason
                               FROM ops.identity_review {matching}
                               ORDER BY probability DESC NULLS LAST, 1, 3 LIMIT $limit""",
                           params | {"limit": limit}).fetchall()
        total = sum(n for _, n in by_reason)
        # The per-reason counts have their numbers left out: a filter is counted on the reasons.
        matched = con.execute(f"SELECT count(*) FROM ops.identity_review {matching}", params).fetchall()[0][0] \
            if reason else total
    if not total:
        console.print("0 pairs left for review: no link was stopped by a limit and no scored pair fell below the"
                      " acceptance probability")
        return
    console.print(_table(f"{total:,} pairs left for review, by reason", ["reason", "pairs"],
                         [(why, f"{n:,}") for why, n in by_reason]))
    console.print(_table(f"{matched:,} pairs{f' whose reason contains {reason!r}' if reason else ''}"
                         f" (showing {len(rows)})",
                         ["customer a", "record a", "customer b", "record b", "probability", "agreeing", "reason"],
                         rows))

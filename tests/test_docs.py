"""The README and docs/ stay true: their SQL runs, their tables match the code."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from rules.docs import render_tags_markdown
from rules.model import load_rules

ROOT = Path(__file__).resolve().parents[1]
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.S)
DOCS_WITH_SQL = ["README.md", "docs/warehouse.md"]


def _sql_blocks() -> list[tuple[str, str]]:
    return [(f"{doc}#{i + 1}", sql) for doc in DOCS_WITH_SQL
            for i, sql in enumerate(SQL_BLOCK.findall((ROOT / doc).read_text(encoding="utf-8")))]


@pytest.mark.e2e
@pytest.mark.parametrize("where,sql", _sql_blocks(), ids=[w for w, _ in _sql_blocks()])
def test_every_sql_block_in_the_docs_runs_on_a_published_warehouse(published, where, sql):
    result, _ = published
    with duckdb.connect(result["warehouse"], read_only=True) as con:
        rows = con.execute(sql).fetchall()
    assert rows, f"{where} returns no rows on the sample run"


def test_docs_tags_md_is_generated_from_the_rules():
    current = (ROOT / "docs" / "tags.md").read_text(encoding="utf-8")
    assert current == render_tags_markdown(load_rules()), "run: tagwright rules docs > docs/tags.md"


def test_docs_performance_md_tables_are_rendered_from_the_bench_results(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from render_performance import rendered

    current = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert current == rendered(current), "run: .venv/bin/python bench/render_performance.py"


def test_every_cli_command_appears_in_the_docs():
    from typer.main import get_command

    from pipelines.cli import app

    docs = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")])
    cli = get_command(app)
    names = []
    for name, command in cli.commands.items():
        names += [f"{name} {sub}" for sub in getattr(command, "commands", {})] or [name]
    missing = [n for n in names if f"tagwright {n}" not in docs]
    assert not missing, f"commands not shown in README.md or docs/: {missing}"


def test_every_doc_link_in_the_readme_exists():
    for link in re.findall(r"\]\(([^)#]+)\)", (ROOT / "README.md").read_text(encoding="utf-8")):
        assert (ROOT / link).exists(), link

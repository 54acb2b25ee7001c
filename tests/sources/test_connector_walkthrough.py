"""docs/connectors.md's walkthrough, followed literally in a copy of the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _walkthrough_commands() -> list[str]:
    text = (ROOT / "docs" / "connectors.md").read_text(encoding="utf-8")
    section = text.split("## Walkthrough", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def _copy_repository(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if name.startswith("data/") or not (ROOT / name).is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes((ROOT / name).read_bytes())


def test_adding_the_ticket_source_exactly_as_the_docs_say(tmp_path):
    repo = tmp_path / "repo"
    _copy_repository(repo)
    (repo / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {**os.environ, "PYTHONPATH": str(repo), "TAGWRIGHT_PII_KEY": "test-key-not-secret"}
    env.pop("TAGWRIGHT_DATA_DIR", None)
    env.pop("TAGWRIGHT_INBOX", None)
    commands = _walkthrough_commands()
    assert len(commands) == 5
    for block in commands:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"step failed:\n{block}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    for kind in ("complaint", "inquiry", "feedback", "return"):
        assert kind in done.stdout
    with duckdb.connect(str(repo / "data" / "warehouse.duckdb"), read_only=True) as con:
        linked = con.execute("""
            SELECT i.interaction_id, list(DISTINCT s.source ORDER BY s.source)
            FROM analytics.interactions i JOIN analytics.customer_source_ids s USING (customer_id)
            WHERE i.source = 'tickets' GROUP BY 1 ORDER BY 1""").fetchall()
        loads = con.execute("SELECT status, rows_in, rows_loaded FROM ops.loads WHERE source = 'tickets'"
                            " ORDER BY entity").fetchall()
    assert [i for i, _ in linked] == ["T0001", "T0002", "T0003", "T0004"]
    assert all({"store", "tickets"} <= set(sources) for _, sources in linked), linked
    assert loads == [("validated", 4, 4), ("validated", 4, 4)]


def test_a_one_file_python_connector_from_the_docs_passes_conformance_and_reaches_the_warehouse(tmp_path):
    repo = tmp_path / "repo"
    _copy_repository(repo)
    (repo / ".venv").symlink_to(Path(sys.executable).parent.parent)
    text = (ROOT / "docs" / "connectors.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", text.split("## Writing a Python connector", 1)[1], re.S)[0]
    folder = repo / "sources" / "tickets_api"
    folder.mkdir()
    (folder / "__init__.py").write_text(code, encoding="utf-8")
    (folder / "README.md").write_text("# tickets_api\n\nTickets via a one-file Python connector.\n", encoding="utf-8")
    samples = repo / "tests" / "sources" / "tickets_api" / "samples"
    samples.mkdir(parents=True)
    export = "ticket_id,card,created\nK1,M00100035,2026-11-20 09:00:00\nK2,M00100049,2026-11-21 18:30:00\n"
    (samples / "tickets_20261121.csv").write_text(export, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(repo), "TAGWRIGHT_PII_KEY": "test-key-not-secret"}
    env.pop("TAGWRIGHT_DATA_DIR", None)
    steps = [
        ".venv/bin/python -m pytest -q -p no:cacheprovider tests/sources/test_conformance.py -k tickets_api",
        ".venv/bin/tagwright sample --customers 200 --days 365 --seed 7 --end-date 2026-11-21 --out data/inbox",
        "mkdir -p data/inbox/tickets_api && cp tests/sources/tickets_api/samples/*.csv data/inbox/tickets_api/",
        ".venv/bin/tagwright run --as-of 2026-11-21",
    ]
    for step in steps:
        done = subprocess.run(["bash", "-c", step], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{step}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "6 passed" in subprocess.run(["bash", "-c", steps[0]], cwd=repo, env=env, capture_output=True,
                                        text=True).stdout
    with duckdb.connect(str(repo / "data" / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT interaction_id, customer_id IS NOT NULL FROM analytics.interactions"
                           " WHERE source = 'tickets_api' ORDER BY 1").fetchall()
    assert rows == [("K1", True), ("K2", True)]


def test_a_scaffolded_connector_passes_the_conformance_suite_before_any_edit(tmp_path):
    repo = tmp_path / "repo"
    _copy_repository(repo)
    (repo / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    for step in (".venv/bin/tagwright sources new wechat_mini",
                 ".venv/bin/python -m pytest -q -p no:cacheprovider tests/sources/wechat_mini",
                 ".venv/bin/tagwright sources list"):
        done = subprocess.run(["bash", "-c", step], cwd=repo, env={**env, "COLUMNS": "200"}, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{step}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "wechat_mini" in done.stdout
    assert {p.name for p in (repo / "sources" / "wechat_mini").iterdir()} == {"mapping.yaml", "README.md"}

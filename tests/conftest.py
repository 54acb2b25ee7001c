"""Shared fixtures: sample exports, an isolated data directory, one real Prefect harness."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from sources.sample import generate  # noqa: E402
from warehouse.settings import Settings  # noqa: E402

AS_OF = date(2026, 11, 21)
SAMPLE = dict(customers=600, days=730, seed=11, end_date=AS_OF)


@pytest.fixture(scope="session")
def sample_inbox(tmp_path_factory) -> Path:
    """Sample exports for 600 people ending on AS_OF (read-only: copy before changing)."""
    out = tmp_path_factory.mktemp("sample")
    generate(out, **SAMPLE)
    return out


@pytest.fixture(scope="session")
def planted(sample_inbox) -> dict:
    return json.loads((sample_inbox / "planted.json").read_text(encoding="utf-8"))


@pytest.fixture()
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty data directory that the stages and the flow use through TAGWRIGHT_DATA_DIR."""
    path = tmp_path / "data"
    monkeypatch.setenv("TAGWRIGHT_DATA_DIR", str(path))
    monkeypatch.delenv("TAGWRIGHT_INBOX", raising=False)
    monkeypatch.setenv("TAGWRIGHT_PII_KEY", "test-key-not-secret")
    return path


def copy_inbox(sample_inbox: Path, data_dir: Path) -> Path:
    import shutil

    inbox = data_dir / "inbox"
    shutil.copytree(sample_inbox, inbox)
    return inbox


def hold_back_newest_marketplace_export(inbox: Path, held: Path) -> None:
    """Move the marketplace's export of AS_OF (and its re-send) out of the inbox into ``held``
    (created), so that a night runs without it."""
    held.mkdir()
    for late in (inbox / "marketplace").glob(f"orders_{AS_OF:%Y%m%d}*.csv"):
        late.rename(held / late.name)


def wide_table_mismatches(con) -> int:
    """How far the published ``customer_tags_wide`` is from ``customer_tags``: tag values one holds
    and the other does not, plus customers of the features the wide table does not hold once."""
    return con.execute("""
        WITH wide AS (UNPIVOT analytics.customer_tags_wide ON COLUMNS(* EXCLUDE (customer_id, as_of))
                      INTO NAME tag VALUE value),
             long AS (SELECT customer_id, tag, value FROM analytics.customer_tags)
        SELECT (SELECT count(*) FROM (SELECT customer_id, tag, value FROM wide EXCEPT ALL FROM long))
             + (SELECT count(*) FROM (FROM long EXCEPT ALL SELECT customer_id, tag, value FROM wide))
             + (SELECT count(*) FROM (SELECT customer_id FROM analytics.customer_features
                                      EXCEPT ALL SELECT customer_id FROM analytics.customer_tags_wide))
             + (SELECT count(*) FROM (SELECT customer_id FROM analytics.customer_tags_wide
                                      EXCEPT ALL SELECT customer_id FROM analytics.customer_features))""").fetchone()[0]


def deliver_held_back(held: Path, inbox: Path) -> None:
    """Move the marketplace files in ``held`` back into the inbox, as a delivery since the last night."""
    for late in held.iterdir():
        late.rename(inbox / "marketplace" / late.name)


@pytest.fixture()
def settings(data_dir) -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def prefect_harness():
    """One real (temporary, local) Prefect API for every end-to-end test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def published(prefect_harness, sample_inbox, tmp_path_factory):
    """One nightly run of the real flow on the sample, shared by read-only assertions.

    Returns the flow's result and the data directory.
    """
    from pipelines.nightly import nightly

    data = tmp_path_factory.mktemp("published") / "data"
    mp = pytest.MonkeyPatch()
    mp.setenv("TAGWRIGHT_DATA_DIR", str(data))
    mp.setenv("TAGWRIGHT_PII_KEY", "test-key-not-secret")
    copy_inbox(sample_inbox, data)
    result = nightly(as_of=AS_OF.isoformat())
    mp.undo()
    return result, data


@pytest.fixture()
def published_copy(published, tmp_path, monkeypatch) -> Path:
    """A private copy of the published data directory, set as TAGWRIGHT_DATA_DIR (tests may change it)."""
    import shutil

    _, data = published
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    monkeypatch.setenv("TAGWRIGHT_DATA_DIR", str(copy))
    monkeypatch.setenv("TAGWRIGHT_PII_KEY", "test-key-not-secret")
    return copy

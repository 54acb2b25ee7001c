"""Great Expectations for the whole pipeline: the committed file context and its Data Docs.

``warehouse/gx/`` is a GX 1.x file context committed with the code: ``great_expectations.yml``
and one suite per source entity (``<entity>_rows``) and per core table (``<table>_core``) in
``expectations/``.  Each run copies it into ``<data dir>/restricted/gx/`` (the repository stays
the single source of the suites; validation results and Data Docs, which quote offending
values, stay in the owner-only area) and validates pandas batches through it: GX's SQL data
source over DuckDB returns no rows (DESIGN.md).  Validation results are stored per run, and
the Data Docs site lists the newest ``TAGWRIGHT_DATA_DOCS_RUNS`` runs (``ops.validations``
keeps every run's summary).

Suites use parameters the run fills in: ``earliest_timestamp``, ``latest_timestamp`` (now plus
a day: no future dates), ``earliest_birth_date``, ``today``, and per batch ``min_rows`` (the
row-count collapse gate).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date, datetime, timedelta, timezone
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pyarrow as pa

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
import great_expectations as gx  # noqa: E402  (the variable above must be set first)
from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier  # noqa: E402
from great_expectations.execution_engine import pandas_execution_engine  # noqa: E402

# GX fingerprints every pandas batch under 1 GB by hashing all of it (a batch marker in the
# results); that was over a third of validation time.  Our batches are named by file, load
# and rows, and ops.loads keeps each file's checksum: no fingerprint.
pandas_execution_engine.HASH_THRESHOLD = 0

from warehouse.settings import Settings  # noqa: E402

# Expectations on keys (GX sees one slice of a large batch at a time: SQL checks the rest).
UNIQUENESS = ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique")

EARLIEST_TIMESTAMP = pd.Timestamp("2000-01-01", tz="UTC")
EARLIEST_BIRTH_DATE = date(1900, 1, 1)


def committed_context_dir() -> Path:
    return Path(str(files("warehouse").joinpath("gx")))


def suite_parameters(now: datetime | None = None) -> dict:
    now = now or datetime.now(timezone.utc)
    return {"earliest_timestamp": EARLIEST_TIMESTAMP, "latest_timestamp": pd.Timestamp(now + timedelta(days=1)),
            "earliest_birth_date": EARLIEST_BIRTH_DATE, "today": now.date()}


class QualityContext:
    """The run's GX file context in the restricted area, with one pandas data source."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.run_id = run_id
        # Given no time, GX reads one from the run's name with dateutil, which takes the random
        # suffix of some run ids for a UTC offset ("...Z-4218ad": -42:18) and fails the night.
        self.run_time = datetime.now(timezone.utc)
        settings.ensure_restricted()
        root = settings.restricted
        target = root / "gx"
        committed = committed_context_dir()
        (target / "expectations").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(committed / "great_expectations.yml", target / "great_expectations.yml")
        for stale in (target / "expectations").glob("*.json"):
            stale.unlink()
        # Validation definitions name the batch definitions of the copied config: start afresh.
        shutil.rmtree(target / "validation_definitions", ignore_errors=True)
        for suite in committed.glob("expectations/*.json"):
            shutil.copyfile(suite, target / "expectations" / suite.name)
        self.context = gx.get_context(mode="file", project_root_dir=str(root))
        self.source = self.context.data_sources.add_or_update_pandas("batches")
        # GX rewrites great_expectations.yml whole (every asset so far, through ruamel) for each
        # asset and batch definition added: quadratic in a run's batches and slices, 2 s of the
        # 24 s validation at 1M customers.  The run's assets live in memory; build_docs writes
        # the file once.  (GX is pinned: this is its FileDataContext's private save hook.)
        self._save_config = self.context._save_project_config
        self.context._save_project_config = lambda: None
        self.parameters = suite_parameters()
        self.docs_index = data_docs_index(settings)
        self.keep_runs = settings.data_docs_runs
        self.results = target / "uncommitted" / "validations"  # the results store (great_expectations.yml)
        self.validated_suites: set[str] = set()  # whose results of this run build_docs renders

    def suite(self, name: str, extra: list | None = None) -> gx.ExpectationSuite:
        """A committed suite (or a new one the run derives), with ``extra`` expectations the run
        derives from the rules; saved in the run's context so Data Docs show it."""
        try:
            suite = self.context.suites.get(name)
        except gx.exceptions.DataContextError:
            suite = self.context.suites.add(gx.ExpectationSuite(name=name))
        for expectation in extra or []:
            suite.add_expectation(expectation)
        return suite

    def per_slice(self, suite: gx.ExpectationSuite) -> gx.ExpectationSuite:
        """``suite`` without its uniqueness expectations, for the slices of a batch too large to
        give GX whole: GX would see a repeated key only within one slice, so the caller checks
        keys in SQL over the whole batch (:func:`key_summary`).  Saved as ``<suite>_per_slice``,
        the name Data Docs show for those slices."""
        name = f"{suite.name}_per_slice"
        try:
            return self.context.suites.get(name)
        except gx.exceptions.DataContextError:
            derived = self.context.suites.add(gx.ExpectationSuite(
                name=name, meta={"notes": f"{suite.name} for one slice of a large batch; its keys are checked"
                                          " over the whole batch in SQL (ops.validations)"}))
        for expectation in suite.expectations:
            if expectation.configuration.type not in UNIQUENESS:
                copied = expectation.configuration.to_domain_obj()
                copied.id = None  # a copy, not the suite's own expectation
                derived.add_expectation(copied)
        return derived

    def validate(self, suite: gx.ExpectationSuite, batch: str, frame: pd.DataFrame, index_column: str | None = None,
                 **parameters):
        """Validate ``frame`` as the batch named ``batch`` (a file, a table); results are stored.
        ``parameters`` add to the run's suite parameters for this batch."""
        asset_name = _asset_name(batch)
        try:
            asset = self.source.get_asset(asset_name)
        except LookupError:
            asset = self.source.add_dataframe_asset(asset_name)
        definition = asset.add_batch_definition_whole_dataframe(f"{asset_name}-{self.run_id}-{suite.name}")
        validation = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{suite.name}:{asset_name}", data=definition, suite=suite))
        self.validated_suites.add(suite.name)
        result_format = {"result_format": "COMPLETE"}
        if index_column:
            result_format["unexpected_index_column_names"] = [index_column]
        try:
            return validation.run(batch_parameters={"dataframe": frame},
                                  expectation_parameters={"min_rows": 0, **self.parameters, **parameters},
                                  result_format=result_format,
                                  run_id=gx.RunIdentifier(run_name=self.run_id, run_time=self.run_time))
        finally:
            # GX's pandas engine keeps each asset's last batch (the whole frame) cached, and every
            # metric it computed (row masks, unexpected indexes: about 35 MB a million rows);
            # a run validates many large frames, so let go of them.
            engine = self.source.get_execution_engine()
            engine.batch_manager.reset_batch_cache()
            engine.batch_manager.batch_data_cache.clear()
            engine._metric_cache.clear()
            pa.default_memory_pool().release_unused()  # the frame's Arrow buffers, for DuckDB's use

    def build_docs(self) -> Path:
        """Render the results this context stored (this run's, of the suites it validated), the
        suites they used and the index into the Data Docs site, after dropping the results of
        runs older than the newest ``keep_runs``.  Pages rendered before are there already:
        the core checks' context does not render the run's validation pages again (2 to 5 s of a
        full run at 1M customers), and no night renders earlier runs' pages or indexes every
        result ever stored (GX's index reads each stored result whole, 6.0 s a build after a
        year of nightly runs at 1M customers)."""
        self._save_config()
        stored = self.context.validation_results_store.list_keys()
        for key in _results_to_drop(stored, self.run_id, self.keep_runs):
            self.context.validation_results_store.remove_key(key)  # its page goes with the index build
        results = [k for k in stored if k.run_id.run_name == self.run_id
                   and k.expectation_suite_identifier.name in self.validated_suites]
        suites = ({k.expectation_suite_identifier.name for k in results}
                  or {k.name for k in self.context.expectations_store.list_keys()})  # GX renders all for none
        self.context.build_data_docs(resource_identifiers=[*map(ExpectationSuiteIdentifier, sorted(suites)), *results])
        for folder in (self.results, self.docs_index.parent / "validations"):
            _remove_empty_folders(folder)  # GX's remove_key means to, but leaves every one behind
        return self.docs_index

    def forget_batches(self, batches: set[tuple[str, str]]) -> int:
        """Delete the stored results of these (run id, batch name) pairs, every slice of them, and
        their Data Docs pages (GX quotes failing values in both): erasure removes them with the
        person's quarantined rows.  Returns how many results went; ``ops.validations`` keeps the
        counts."""
        wanted = [(run_id, f"{self.source.name}-{_asset_name(batch)}") for run_id, batch in batches]
        gone = [key for key in self.context.validation_results_store.list_keys()
                if any(_of_batch(key, run_id, asset) for run_id, asset in wanted)]
        for key in gone:
            self.context.validation_results_store.remove_key(key)
        self.build_docs()  # the index, without them; GX deletes the pages of results no longer stored
        return len(gone)


def _remove_empty_folders(root: Path) -> None:
    """Empty folders under ``root`` (runs whose results went): listing the store walks them all."""
    for folder, _, _ in os.walk(root, topdown=False):
        if folder != str(root) and not os.listdir(folder):
            os.rmdir(folder)


def _of_batch(key, run_id: str, asset: str) -> bool:
    """Whether a stored result is of ``asset`` in run ``run_id``, whole or one slice of it
    (``<asset> rows 1-1000000``)."""
    batch = str(key.batch_identifier)
    return key.run_id.run_name == run_id and (batch == asset or batch.startswith(f"{asset} rows "))


def _asset_name(batch: str) -> str:
    """GX's asset for a batch named like ``web/users.jsonl/customer_record`` (a file's entity)."""
    return batch.replace("/", "__")


def _results_to_drop(keys: list, run_id: str, keep_runs: int) -> list:
    """The stored results of every run but the newest ``keep_runs`` (by when they ran) and the
    run ``run_id``, which is always kept."""
    started: dict[str, str] = {}
    for key in keys:
        name, at = key.run_id.run_name, key.run_id.run_time.isoformat()
        started[name] = min(started.get(name, at), at)
    kept = {run_id, *sorted(started, key=started.get, reverse=True)[:max(keep_runs, 0)]}
    return [key for key in keys if key.run_id.run_name not in kept]


def expectation_columns(kwargs: dict) -> list[str]:
    """The columns an expectation reads (``column``, ``column_list`` or ``column_A``/``column_B``)."""
    named = [kwargs.get("column"), *(kwargs.get("column_list") or []), kwargs.get("column_A"), kwargs.get("column_B")]
    return [c for c in named if c]


def summary(result) -> dict:
    """One expectation's result as a plain row: what ``ops.validations`` keeps, and what
    :func:`merge_summaries` adds up over the slices of a batch."""
    return _summary(result.expectation_config, bool(result.success), result.result.get("element_count"),
                    result.result.get("unexpected_count"), result.result.get("missing_count"),
                    result.result.get("partial_unexpected_list") or [])


def key_summary(expectation, rows: int, unexpected: int, sample: list) -> dict:
    """A uniqueness expectation checked in SQL over a whole batch (see :meth:`QualityContext.per_slice`)
    as the row :func:`summary` gives: ``unexpected`` counts every row of a repeated key, as GX does."""
    return _summary(expectation.configuration, unexpected == 0, rows, unexpected, None, sample)


def _summary(config, success: bool, rows: int | None, unexpected: int | None, missing: int | None,
             sample: list) -> dict:
    return {"expectation": config.type, "column": ",".join(expectation_columns(config.kwargs)) or None,
            "success": success, "element_count": rows, "unexpected_count": unexpected, "missing_count": missing,
            "mostly": config.kwargs.get("mostly"), "meta": dict(config.meta or {}), "sample": sample[:3]}


def key_expectations(suite: gx.ExpectationSuite) -> list:
    """The suite's uniqueness expectations."""
    return [e for e in suite.expectations if e.configuration.type in UNIQUENESS]


def merge_summaries(per_slice: list[list[dict]]) -> list[dict]:
    """One summary per expectation over the slices of a batch: the counts add up; an
    expectation with ``mostly`` is judged on the totals (a slice may fall short where the batch
    does not), any other fails when it failed on a slice."""
    merged: dict[tuple, dict] = {}
    for summaries in per_slice:
        for s in summaries:
            key = (s["expectation"], s["column"], s.get("meta", {}).get("tag"))
            m = merged.setdefault(key, {**s, "element_count": None, "unexpected_count": None,
                                        "missing_count": None, "sample": []})
            m["success"] = m["success"] and s["success"]
            m["sample"] = m["sample"] or s.get("sample") or []
            for count in ("element_count", "unexpected_count", "missing_count"):
                if s.get(count) is not None:
                    m[count] = (m[count] or 0) + s[count]
    for m in merged.values():
        if m.get("mostly") is not None and m["element_count"] is not None:
            judged = m["element_count"] - (m["missing_count"] or 0)
            m["success"] = judged == 0 or (judged - (m["unexpected_count"] or 0)) / judged >= m["mostly"]
    return list(merged.values())


def data_docs_index(settings: Settings) -> Path:
    """The Data Docs site of every run (in the restricted area: it quotes offending values)."""
    return settings.restricted / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def suite_names() -> list[str]:
    return sorted(json.loads(p.read_text(encoding="utf-8"))["name"]
                  for p in committed_context_dir().glob("expectations/*.json"))

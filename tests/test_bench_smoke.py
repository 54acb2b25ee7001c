"""A tiny run of the pipeline benchmark (the benchmark itself is not a timed test): it must run
end to end, time every stage against its floor and write its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["land", "validate", "stage", "resolve_identities", "features", "tags", "core_checks", "publish"]


@pytest.mark.e2e
def test_the_pipeline_benchmark_runs_on_a_tiny_sample(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "TAGWRIGHT_PII_KEY": "bench-key"}
    subprocess.run([sys.executable, str(ROOT / "bench" / "pipeline_timing.py"), "--customers", "300", "--days", "120",
                    "--volume", "2", "--accounts", "2", "--memory-limit", "1GB", "--out", str(tmp_path)],
                   check=True, env=env, cwd=ROOT, timeout=600)
    report = json.loads((tmp_path / "pipeline-300-volume2-accounts2.json").read_text())
    assert report["volume"] == 2 and report["accounts"] == 2
    assert report["sample"]["source_customer_records"] > 1.7 * report["sample"]["people"]
    assert report["inbox_read_s"] >= 0  # the inbox was read once before the timed runs
    assert report["full"]["status"] == "success" and report["incremental"]["status"] == "success"
    for stage in STAGES:
        timing = report["full"]["stages"][stage]
        assert timing["wall_s"] > 0 and timing["floor_s"] > 0 and timing["over_floor"] > 0
    assert report["incremental"]["stages"]["land"]["rows"] > 0          # the held-back export landed
    assert 0 < report["full"]["prefect_share"] < 1
    assert report["prefect_api"] == (os.environ.get("PREFECT_API_URL") or "temporary local server")


@pytest.mark.e2e
def test_the_history_benchmark_publishes_over_more_nights(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "TAGWRIGHT_PII_KEY": "bench-key"}
    subprocess.run([sys.executable, str(ROOT / "bench" / "history_growth.py"), "--customers", "300", "--days", "120",
                    "--nights", "0", "5", "--memory-limit", "1GB", "--out", str(tmp_path)],
                   check=True, env=env, cwd=ROOT, timeout=600)
    two, seven = json.loads((tmp_path / "history-300.json").read_text())["runs"]
    assert (two["nights_of_history"], seven["nights_of_history"]) == (2, 7)
    assert seven["change_rows"] > two["change_rows"] and seven["history_rows"] > two["history_rows"]
    for run in (two, seven):
        assert run["status"] == "success" and run["stages_s"] > run["publish_s"] > run["waited_s"] >= 0
        assert run["copy_s"] > 0 and run["copied_mib"] == run["file_mib"]


@pytest.mark.e2e
def test_the_data_docs_benchmark_keeps_the_newest_runs(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "TAGWRIGHT_PII_KEY": "bench-key", "TAGWRIGHT_DATA_DOCS_RUNS": "5"}
    subprocess.run([sys.executable, str(ROOT / "bench" / "data_docs_growth.py"), "--customers", "300", "--days", "120",
                    "--nights", "2", "6", "--memory-limit", "1GB", "--out", str(tmp_path)],
                   check=True, env=env, cwd=ROOT, timeout=600)
    report = json.loads((tmp_path / "data-docs-300.json").read_text())
    few, more = report["runs"]
    per_night = (more["results_stored"] - few["results_stored"]) // 4
    assert per_night > 0 and few["results_stored"] == report["results_of_the_two_nights"] + 2 * per_night
    assert few["results_kept"] == few["results_stored"] + 1    # two nights, two made up and the probe: 5 runs
    assert more["results_kept"] < more["results_stored"]       # 9 runs: the oldest went
    assert all(run[way] > 0 for run in (few, more) for way in ("every_run_kept_s", "default_retention_s", "next_run_s"))

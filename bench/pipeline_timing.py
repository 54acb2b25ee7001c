"""Per-stage wall time, CPU time and row counts of the pipeline on generated sample data.

    .venv/bin/python bench/pipeline_timing.py --customers 20000 [--days 730] [--seed 7]

Generates the sample into a temporary data directory and holds back the marketplace's newest
export.  The full run (every file, as of the day before the end date) runs each stage as a
plain function (no Prefect).  Then the held-back file is delivered and the incremental run
for the end date goes through the real Prefect flow (local mode, so its wall time includes
starting Prefect's temporary server).  Writes bench/results/pipeline-<customers>.json with
the machine it ran on.  This is a measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from datetime import date, timedelta
from pathlib import Path

from common import scratch_data_dir

AS_OF = date(2026, 11, 21)


def _machine() -> dict:
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    data = scratch_data_dir("tagwright-bench-")

    from rules.model import load_rules
    from sources.sample import generate
    from warehouse.core_checks import check_core_tables
    from warehouse.features import compute_features
    from warehouse.identity import resolve_identities
    from warehouse.land import land
    from warehouse.publish import publish
    from warehouse.runs import RunRecord
    from warehouse.settings import Settings
    from warehouse.stage import stage
    from warehouse.tagging import apply_tags
    from warehouse.validate import validate
    from warehouse.workdb import open_work_db

    started = time.perf_counter()
    sample = generate(data / "inbox", customers=args.customers, days=args.days, seed=args.seed, end_date=AS_OF)
    generate_seconds = time.perf_counter() - started
    held = data / "held"
    held.mkdir()
    for late in (data / "inbox" / "marketplace").glob(f"orders_{AS_OF:%Y%m%d}*.csv"):
        late.rename(held / late.name)

    full_day = AS_OF - timedelta(days=1)
    settings, rules = Settings.from_env(), load_rules()
    record = RunRecord(run_id="bench", as_of=full_day)
    con = open_work_db(settings)
    stages = [
        ("land", lambda: land(con, settings, "bench")),
        ("validate", lambda: validate(con, settings, "bench")),
        ("stage", lambda: stage(con, settings)),
        ("resolve_identities", lambda: resolve_identities(con, "bench")),
        ("features", lambda: compute_features(con, settings, rules, full_day)),
        ("tags", lambda: apply_tags(con, settings, rules, full_day)),
        ("core_checks", lambda: check_core_tables(con, settings, rules, "bench")),
    ]
    results = {}
    for name, call in stages:
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = call()
        results[name] = {"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
                         "rows": outcome.row_count}
    orders = con.execute("SELECT count(*) FROM stage.orders").fetchall()[0][0]
    con.close()
    wall, cpu = time.perf_counter(), time.process_time()
    published = publish(settings, rules, record)
    results["publish"] = {"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
                          "rows": published.row_count}

    for late in held.iterdir():
        late.rename(data / "inbox" / "marketplace" / late.name)
    from pipelines.nightly import nightly

    wall = time.perf_counter()
    flow_result = nightly(as_of=AS_OF.isoformat())
    flow_seconds = time.perf_counter() - wall

    report = {
        "customers": args.customers, "days": args.days, "seed": args.seed, "sample": sample,
        "generate_s": round(generate_seconds, 2), "stages": results,
        "full_run_stages_total_s": round(sum(r["wall_s"] for r in results.values()), 2),
        "orders": orders,
        # What validating costs next to the stages it guards (everything else in the run).
        "validation_overhead": round((results["validate"]["wall_s"] + results["core_checks"]["wall_s"])
                                     / sum(r["wall_s"] for n, r in results.items() if n not in ("validate", "core_checks")),
                                     3),
        "incremental_flow_wall_s": round(flow_seconds, 2),
        "incremental_stages_total_s": round(sum(flow_result["stage_seconds"].values()), 2),
        "incremental_stage_seconds": flow_result["stage_seconds"],
        "incremental_rows_landed": flow_result["row_counts"]["land"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": _machine(), "measured_on": time.strftime("%Y-%m-%d"),
    }
    out = Path(__file__).parent / "results" / f"pipeline-{args.customers}.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("| stage | wall s | cpu s | rows |\n| --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['wall_s']} | {r['cpu_s']} | {r['rows']} |")
    print(f"\nfull run (stages) {report['full_run_stages_total_s']} s; incremental run with one new file: stages "
          f"{report['incremental_stages_total_s']} s, Prefect flow wall {report['incremental_flow_wall_s']} s;"
          f" peak RSS {report['peak_rss_mib']} MiB; written to {out}")


if __name__ == "__main__":
    main()

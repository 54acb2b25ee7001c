"""Building the run's Data Docs over many earlier runs' Great Expectations results.

    .venv/bin/python bench/data_docs_growth.py --customers 1000000 --nights 30 365 1095
        [--memory-limit 2GB] [--out bench/results] [--sample-dir /var/tmp/tagwright-samples]

Validation and the core checks each end by rendering the run's Data Docs pages and the site's
index, and GX's index reads every stored validation result whole.  This runs the nightly for
the day before the sample's end and for the end date (the marketplace's newest export held
back for the second, as in pipeline_timing.py), so the store holds a full run's results and an
incremental run's.  Then, for each number of nights N, it makes N earlier nights by copying the
end date's results (and their pages) under made-up runs a day apart, and times, in a fresh
process, one small validation's ``build_docs`` three ways: with every run kept (as before
TAGWRIGHT_DATA_DOCS_RUNS), with the default retention (this build deletes the older runs), and
the next run's build after it.  Writes <out>/data-docs-<customers>.json with the machine it
ran on.  A measurement, not a test.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

from common import in_fresh_process, machine, shape_suffix, write_result
from pipeline_timing import sample_arguments, two_published_nights

RUN_TIME = "%Y%m%dT%H%M%S.%fZ"  # how GX names a result's folder under its run


def _add_earlier_nights(results: Path, site: Path, nights: int) -> int:
    """``nights`` made-up runs, each a copy (hard links) of the newest run's results and pages,
    one day apart before it; returns how many results the store then holds."""
    stored = sorted(results.rglob("*.json"))
    newest_run = max(stored, key=lambda p: p.parts[-2]).parts[-3]
    for night in range(1, nights + 1):
        for result in (p for p in stored if p.parts[-3] == newest_run):
            suite, run_time, name = result.parts[-4], result.parts[-2], result.name
            earlier = (datetime.strptime(run_time, RUN_TIME) - timedelta(days=night)).strftime(RUN_TIME)
            for source, target in ((result, results / suite / f"made-up-{night}" / earlier / name),
                                   (site / suite / newest_run / run_time / f"{result.stem}.html",
                                    site / suite / f"made-up-{night}" / earlier / f"{result.stem}.html")):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
    return sum(1 for _ in results.rglob("*.json"))


def _timed_docs_build(run_id: str, keep_runs: int | None) -> float:
    """Seconds of ``build_docs`` of a run that validated one small batch (``keep_runs`` None:
    the configured retention)."""
    from dataclasses import replace

    import pandas as pd

    from warehouse.quality import QualityContext
    from warehouse.settings import Settings

    settings = Settings.from_env()
    if keep_runs is not None:
        settings = replace(settings, data_docs_runs=keep_runs)
    quality = QualityContext(settings, run_id)
    quality.validate(quality.suite("customers_core"), "customers", pd.DataFrame({"customer_id": ["a", "b"]}))
    started = time.perf_counter()
    quality.build_docs()
    return round(time.perf_counter() - started, 3)


def main() -> None:
    parser = sample_arguments(__doc__)
    parser.add_argument("--nights", type=int, nargs="+", default=[30, 365, 1095],
                        help="earlier nights of Data Docs, one measurement each")
    args = parser.parse_args()
    data = two_published_nights("tagwright-data-docs-", args)
    uncommitted = data / "restricted" / "gx" / "uncommitted"
    two_nights = data.parent / "two_nights"
    shutil.copytree(uncommitted, two_nights)
    runs = []
    for nights in sorted(args.nights):
        measured = {"nights": nights}
        for way, keep_runs in (("every_run_kept_s", 1_000_000), ("default_retention_s", None)):
            shutil.rmtree(uncommitted)
            shutil.copytree(two_nights, uncommitted)
            measured["results_stored"] = _add_earlier_nights(uncommitted / "validations",
                                                             uncommitted / "data_docs" / "local_site" / "validations",
                                                             nights)
            measured[way] = in_fresh_process(_timed_docs_build, "probe", keep_runs)
        measured["results_kept"] = sum(1 for _ in (uncommitted / "validations").rglob("*.json"))
        measured["next_run_s"] = in_fresh_process(_timed_docs_build, "probe-next", None)
        runs.append(measured)
        print(measured, flush=True)
    report = {"customers": args.customers, "days": args.days, "seed": args.seed, "volume": args.volume,
              "accounts": args.accounts,
              "results_of_the_two_nights": sum(1 for _ in (two_nights / "validations").rglob("*.json")),
              "runs": runs, "machine": machine(), "measured_on": time.strftime("%Y-%m-%d")}
    write_result(f"data-docs-{args.customers}{shape_suffix(args.volume, args.accounts)}", report, args.out)
    shutil.rmtree(data.parent, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Nightly runs over a long tag history: the same night run again with more earlier nights kept.

    .venv/bin/python bench/history_growth.py --customers 1000000 --nights 0 180 365
        [--memory-limit 2GB] [--out bench/results] [--sample-dir /var/tmp/tagwright-samples]

The pipeline benchmark publishes the second night of a history; a warehouse that has run for
months publishes over a long one, and each publish starts from a byte copy of the published
file (made on a thread while the stages before publishing run).  This runs the nightly for the
day before the sample's end and for the end date (the marketplace's newest export held back
for the second, as in pipeline_timing.py), then, for each number of nights N, makes N earlier
nights of history by repeating the end date's tag changes on the N days before the first run
(the change rows, and the history rows they closed), and runs the end date's nightly again
over it, in a fresh process (no new file: landing and staging keep what they have).  Records
the file's size and rows, the stages' seconds, and the copy's: how long it took and how long
publishing waited for it.  Writes <out>/history-<customers>.json with the machine it ran on.
A measurement, not a test.
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

from common import in_fresh_process, machine, shape_suffix, write_result
from pipeline_timing import AS_OF, nightly_run, sample_arguments, two_published_nights

REPEATED = AS_OF  # the night whose changes are repeated on earlier days


def _add_earlier_nights(warehouse: Path, nights: int, memory_limit: str) -> dict:
    """``nights`` made-up nights before the first published day: REPEATED's changes again on each."""
    import duckdb

    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        first = con.execute("SELECT min(as_of) FROM analytics.tag_changes").fetchone()[0]
        con.execute("CREATE TEMP TABLE repeated AS SELECT * FROM analytics.tag_changes WHERE as_of = ?", [REPEATED])
        for night in range(1, nights + 1):
            day = first - timedelta(days=night)
            con.execute("INSERT INTO analytics.tag_changes SELECT ?, customer_id, tag, old_value, new_value"
                        " FROM repeated", [day])
            con.execute("INSERT INTO analytics.tag_history SELECT customer_id, tag, old_value, ?, ? FROM repeated"
                        " WHERE old_value IS NOT NULL", [day - timedelta(days=30), day])
        con.execute("CHECKPOINT")
        history, changes = con.execute("SELECT (SELECT count(*) FROM analytics.tag_history),"
                                       " (SELECT count(*) FROM analytics.tag_changes)").fetchone()
    return {"history_rows": history, "change_rows": changes}


def main() -> None:
    parser = sample_arguments(__doc__)
    parser.add_argument("--nights", type=int, nargs="+", default=[0, 180, 365],
                        help="earlier nights of history to publish over, one run each")
    args = parser.parse_args()
    data = two_published_nights("tagwright-history-", args)
    warehouse = data / "warehouse.duckdb"
    two_nights = data.parent / "two_nights.duckdb"
    shutil.copyfile(warehouse, two_nights)
    runs = []
    for nights in sorted(args.nights):
        shutil.copyfile(two_nights, warehouse)
        rows = in_fresh_process(_add_earlier_nights, warehouse, nights, args.memory_limit)
        size_mib = warehouse.stat().st_size >> 20
        night = in_fresh_process(nightly_run, AS_OF)
        runs.append({"nights_of_history": nights + 2, "file_mib": size_mib, **rows, "status": night["status"],
                     "stages_s": round(sum(night["stage_seconds"].values()), 2),
                     "publish_s": night["stage_seconds"]["publish"], **night["publish_copy"],
                     "peak_rss_mib": night["peak_rss_mib"]})
    report = {"customers": args.customers, "days": args.days, "seed": args.seed, "volume": args.volume,
              "accounts": args.accounts,
              "memory_limit": args.memory_limit,
              "repeated_night": REPEATED.isoformat(), "runs": runs,
              "machine": machine(), "measured_on": time.strftime("%Y-%m-%d")}
    write_result(f"history-{args.customers}{shape_suffix(args.volume, args.accounts)}", report, args.out)
    shutil.rmtree(data.parent, ignore_errors=True)


if __name__ == "__main__":
    main()

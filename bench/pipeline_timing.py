"""The nightly flow at scale against the DuckDB floor of each stage.

    .venv/bin/python bench/pipeline_timing.py --customers 1000000 [--days 730] [--seed 7] [--volume 2.5]
        [--accounts 2] [--memory-limit 2GB] [--out bench/results] [--sample-dir /var/tmp/tagwright-samples]

Generates the sample into a temporary data directory (or, with --sample-dir, once into that
folder and hard-linked from there on later runs of the same arguments: generating 1M customers
takes minutes) and holds back the marketplace's newest export.  ``--volume`` scales the order
lines and events each person leaves, ``--accounts`` the accounts each holds in a source (see
sources/sample.py): ``--volume 2.5 --accounts 2`` gives 3.4M source customer records, 20M
order lines and 52M events at 1M customers (the performance issue asks about 3M, 20M and 50M).
Then, each in a fresh process (its own wall time and peak memory):

1. the full nightly through the real Prefect flow, as of the day before the end: in local mode
   (Prefect starts its temporary server), or against the Prefect server PREFECT_API_URL names,
   as a deployment runs (the JSON's ``prefect_api`` says which);
2. the floor: every stage written by hand in DuckDB SQL on the same inbox (bench/floors.py);
3. the held-back file is delivered and the incremental nightly runs for the end date.

Before each of the three, every inbox file is read once, untimed, so that ours and the floor
alike find the files in the page cache: otherwise whichever ran first read them from disk (at
volume 2.5, 9.8 GB; a cold web events file added 8 s to landing it).  The first of those reads
is recorded as ``inbox_read_s``.

Per stage: wall and CPU seconds (process CPU, all threads), rows, floor seconds and our time
over the floor; per run: Prefect's share (flow wall time not spent in a stage, including, in
local mode, the start of Prefect's temporary server), peak RSS.  Writes
<out>/pipeline-<customers>[-volume<volume>][-accounts<accounts>].json (with -prefect-server against a running
server) with the machine it ran on.  A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

from common import (LOCAL_PREFECT, in_fresh_process, machine, one_or_more, peak_rss_mib, positive, scratch_data_dir,
                    shape_suffix, write_result)

AS_OF = date(2026, 11, 21)


def _generate(inbox: Path, customers: int, days: int, seed: int, volume: float, accounts: float) -> dict:
    from sources.sample import generate

    started = time.perf_counter()
    sample = generate(inbox, customers=customers, days=days, seed=seed, end_date=AS_OF, volume=volume,
                      accounts=accounts)
    return {"sample": sample, "seconds": round(time.perf_counter() - started, 2), "peak_rss_mib": peak_rss_mib()}


def sample(inbox: Path, args) -> dict:
    """Generate the sample of ``args`` (see :func:`sample_arguments`) into ``inbox``, or link a
    kept one generated with the same arguments."""
    arguments = (args.customers, args.days, args.seed, args.volume, args.accounts)
    if args.sample_dir is None:
        return in_fresh_process(_generate, inbox, *arguments)
    shape = shape_suffix(args.volume, args.accounts)
    kept = args.sample_dir / f"customers{args.customers}-days{args.days}-seed{args.seed}{shape}"
    described = kept / "generated.json"
    if not described.exists():
        shutil.rmtree(kept, ignore_errors=True)
        generated = in_fresh_process(_generate, kept / "inbox", *arguments)
        described.write_text(json.dumps(generated), encoding="utf-8")
    shutil.copytree(kept / "inbox", inbox, copy_function=os.link)
    return json.loads(described.read_text(encoding="utf-8"))


def hold_back_newest_export(inbox: Path, held: Path) -> Path:
    """Move the marketplace's export of AS_OF (and its re-send) out of the inbox into ``held``,
    so the first night runs without it."""
    held.mkdir()
    for late in (inbox / "marketplace").glob(f"orders_{AS_OF:%Y%m%d}*.csv"):
        late.rename(held / late.name)
    return held


def deliver_held_back(held: Path, inbox: Path) -> None:
    for late in held.iterdir():
        late.rename(inbox / "marketplace" / late.name)


def nightly_run(as_of: date) -> dict:
    from pipelines.nightly import nightly

    started, cpu = time.perf_counter(), time.process_time()
    result = nightly(as_of=as_of.isoformat())
    return {"wall_s": round(time.perf_counter() - started, 2), "cpu_s": round(time.process_time() - cpu, 2),
            "stage_seconds": result["stage_seconds"], "stage_cpu_seconds": result["stage_cpu_seconds"],
            "stage_peak_rss_mib": result["stage_peak_rss_mib"],
            "row_counts": result["row_counts"], "status": result["status"], "publish_copy": result["publish_copy"],
            "peak_rss_mib": peak_rss_mib()}


def published_nightly(day: date) -> None:
    """The nightly for ``day``, in a fresh process; stops the benchmark if it did not publish."""
    status = in_fresh_process(nightly_run, day)["status"]
    if status not in ("success", "degraded"):
        raise SystemExit(f"the nightly for {day} ended {status}")


def two_published_nights(prefix: str, args) -> Path:
    """A new data directory (``prefix`` names it) holding the sample of ``args`` (see
    :func:`sample_arguments`) and two published nights: the day before the sample's end without
    the marketplace's newest export, then the end date with it.  Returns the data directory."""
    os.environ["TAGWRIGHT_MEMORY_LIMIT"] = args.memory_limit
    data = scratch_data_dir(prefix)
    inbox = data / "inbox"
    sample(inbox, args)
    held = hold_back_newest_export(inbox, data.parent / "held")
    published_nightly(AS_OF - timedelta(days=1))
    deliver_held_back(held, inbox)
    published_nightly(AS_OF)
    return data


def read_inbox(inbox: Path) -> float:
    """Read every file under ``inbox`` once (into the page cache); returns the seconds taken."""
    started = time.perf_counter()
    for path in sorted(p for p in inbox.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            while f.read(16 << 20):
                pass
    return round(time.perf_counter() - started, 2)


def _floors(inbox: Path, as_of: date, scratch: Path, memory_limit: str) -> dict:
    from floors import floors

    seconds = floors(inbox, as_of, scratch, memory_limit)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"stage_seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def _prefect_api() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or LOCAL_PREFECT


def _run_summary(run: dict, floor: dict | None = None) -> dict:
    stages = {}
    for name, wall in run["stage_seconds"].items():
        stages[name] = {"wall_s": wall, "cpu_s": run["stage_cpu_seconds"][name], "rows": run["row_counts"][name],
                        "peak_rss_mib_after": run["stage_peak_rss_mib"][name]}
        if floor:
            stages[name]["floor_s"] = floor[name]
            stages[name]["over_floor"] = round(wall / floor[name], 1) if floor[name] else None
    total = round(sum(run["stage_seconds"].values()), 2)
    return {"stages": stages, "stages_total_s": total, "flow_wall_s": run["wall_s"], "cpu_s": run["cpu_s"],
            "prefect_s": round(run["wall_s"] - total, 2), "prefect_share": round((run["wall_s"] - total) / run["wall_s"], 3),
            "status": run["status"], "peak_rss_mib": run["peak_rss_mib"]}


def sample_arguments(description: str) -> argparse.ArgumentParser:
    """The options every benchmark on the sample takes: its size, the memory limit, where to write."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--volume", type=positive, default=1.0,
                        help="order lines and events per person, times the sample's usual (2.5: the performance "
                             "issue's volumes at 1M customers)")
    parser.add_argument("--accounts", type=one_or_more, default=1.0,
                        help="accounts a person holds in each source they use, on average (2: 3.4M source "
                             "customer records at 1M customers, the performance issue's about 3M)")
    parser.add_argument("--memory-limit", default=os.environ.get("TAGWRIGHT_MEMORY_LIMIT", "4GB"),
                        help="DuckDB memory limit of the runs and of any floor (TAGWRIGHT_MEMORY_LIMIT)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default bench/results)")
    parser.add_argument("--sample-dir", type=Path, default=None,
                        help="keep the generated sample here and reuse it for the same size and seed")
    return parser


def main() -> None:
    args = sample_arguments(__doc__).parse_args()
    os.environ["TAGWRIGHT_MEMORY_LIMIT"] = args.memory_limit
    data = scratch_data_dir("tagwright-bench-")
    inbox = data / "inbox"

    generated = sample(inbox, args)
    held = hold_back_newest_export(inbox, data.parent / "held")
    full_day = AS_OF - timedelta(days=1)
    inbox_read_s = read_inbox(inbox)
    full = in_fresh_process(nightly_run, full_day)
    read_inbox(inbox)
    floor = in_fresh_process(_floors, inbox, full_day, data.parent / "floor", args.memory_limit)
    deliver_held_back(held, inbox)
    read_inbox(inbox)
    incremental = in_fresh_process(nightly_run, AS_OF)

    full_run = _run_summary(full, floor["stage_seconds"])
    floor_total = round(sum(floor["stage_seconds"].values()), 2)
    guarded = sum(s["wall_s"] for n, s in full_run["stages"].items() if n not in ("validate", "core_checks"))
    report = {
        "customers": args.customers, "days": args.days, "seed": args.seed, "volume": args.volume,
        "accounts": args.accounts, "memory_limit": args.memory_limit,
        "sample": generated["sample"], "generate_s": generated["seconds"], "generate_peak_rss_mib": generated["peak_rss_mib"],
        "inbox_read_s": inbox_read_s,
        "full": full_run,
        "floor": {"stage_seconds": floor["stage_seconds"], "total_s": floor_total, "peak_rss_mib": floor["peak_rss_mib"]},
        "full_over_floor": round(full_run["stages_total_s"] / floor_total, 1),
        # What validating costs next to the stages it guards (everything else in the run).
        "validation_overhead": round((full_run["stages"]["validate"]["wall_s"]
                                      + full_run["stages"]["core_checks"]["wall_s"]) / guarded, 3),
        "incremental": _run_summary(incremental),
        "prefect_api": _prefect_api(),
        "machine": machine(), "measured_on": time.strftime("%Y-%m-%d"),
    }
    server = "" if report["prefect_api"] == LOCAL_PREFECT else "-prefect-server"
    write_result(f"pipeline-{args.customers}{shape_suffix(args.volume, args.accounts)}{server}", report, args.out)
    shutil.rmtree(data.parent, ignore_errors=True)


if __name__ == "__main__":
    main()

"""What the benchmark scripts share."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import tempfile
from pathlib import Path


def positive(text: str) -> float:
    """An argument that must be a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def one_or_more(text: str) -> float:
    """An argument that must be a number of 1 or more."""
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def shape_suffix(volume: float = 1, accounts: float = 1) -> str:
    """How a sample's or result's name says its volume and accounts (sources/sample.py): nothing
    for the usual 1."""
    return "".join(f"-{name}{value:g}" for name, value in (("volume", volume), ("accounts", accounts)) if value != 1)


def scratch_data_dir(prefix: str) -> Path:
    """A new, empty data directory in /tmp, set as TAGWRIGHT_DATA_DIR (with a throwaway pseudonym key)."""
    data = Path(tempfile.mkdtemp(prefix=prefix)) / "data"
    os.environ["TAGWRIGHT_DATA_DIR"] = str(data)
    os.environ.setdefault("TAGWRIGHT_PII_KEY", "bench-key")
    return data


# What a result records as ``prefect_api`` when the run started Prefect's temporary server.
LOCAL_PREFECT = "temporary local server"


def write_result(name: str, report: dict, folder: Path | None = None) -> Path:
    """Write ``report`` to <folder, default bench/results>/<name>.json and print it.  Into
    bench/results, also render the tables of docs/performance.md again from every result there."""
    out = (folder or Path(__file__).parent / "results") / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if folder is None:
        from render_performance import render_tables  # which imports this module: not at the top

        render_tables()
        print(f"{out.name} written; the tables of docs/performance.md rendered again from bench/results")
    return out


def in_fresh_process(function, *args):
    """``function(*args)`` in a new (spawned) Python process, so its wall time and peak memory
    are its own; returns what it returns."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(function, args)
        # Let the worker exit on its own: leaving the block terminates it, and a terminated
        # process never stops the temporary Prefect server it started.
        pool.close()
        pool.join()
        return result


def peak_rss_mib() -> float:
    """This process's peak resident memory so far."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def machine() -> dict:
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform()}

"""Render the measured table of docs/performance.md from bench/results/pipeline-*.json.

    .venv/bin/python bench/render_performance.py

Replaces the lines between the two ``<!-- measured -->`` markers in docs/performance.md.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["land", "validate", "stage", "resolve_identities", "features", "tags", "core_checks", "publish"]
MARK = "<!-- measured -->"


def table() -> str:
    results = sorted((json.loads(p.read_text()) for p in (ROOT / "bench" / "results").glob("pipeline-*.json")),
                     key=lambda r: r["customers"])
    machine = results[-1]["machine"]
    lines = [f"Machine: {machine['cpus']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, Python "
             f"{machine['python']}, {machine['platform']}.", "",
             "| customers | orders | source rows landed | " + " | ".join(STAGES) + " | full run | validation overhead "
             "| incremental run (stages) | incremental flow wall | peak RSS MiB | measured |",
             "| --- " * (len(STAGES) + 9) + "|"]
    for r in results:
        stages = r["stages"]
        lines.append(f"| {r['customers']:,} | {r['orders']:,} | {stages['land']['rows']:,} | "
                     + " | ".join(f"{stages[s]['wall_s']:.2f}" for s in STAGES)
                     + f" | {r['full_run_stages_total_s']:.2f} | {100 * r['validation_overhead']:.0f}% "
                       f"| {r['incremental_stages_total_s']:.2f} "
                       f"| {r['incremental_flow_wall_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['measured_on']} |")
    incremental = results[-1]["incremental_stage_seconds"]
    lines += ["", f"Incremental run at {results[-1]['customers']:,} customers, per stage (s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in incremental.items()) + "."]
    return "\n".join(lines)


def main() -> None:
    doc = ROOT / "docs" / "performance.md"
    head, _, rest = doc.read_text(encoding="utf-8").partition(MARK)
    _, _, tail = rest.partition(MARK)
    doc.write_text(f"{head}{MARK}\n{table()}\n{MARK}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Render the measured tables of docs/performance.md from bench/results/*.json.

    .venv/bin/python bench/render_performance.py

Replaces the lines between the two ``<!-- measured -->`` markers (pipeline-*.json), the two
``<!-- identity -->`` markers (identity-*.json), the two ``<!-- history -->`` markers
(history-*.json), the two ``<!-- data-docs -->`` markers (data-docs-*.json) and the two
``<!-- tagging -->`` markers (tagging-*.json) in docs/performance.md.  Each benchmark does
this itself when it writes its result into bench/results; run it by hand after removing or
editing a result.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import LOCAL_PREFECT

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["land", "validate", "stage", "resolve_identities", "features", "tags", "core_checks", "publish"]
MARK = "<!-- measured -->"
IDENTITY_MARK = "<!-- identity -->"
HISTORY_MARK = "<!-- history -->"
DATA_DOCS_MARK = "<!-- data-docs -->"
TAGGING_MARK = "<!-- tagging -->"


def _results(kind: str, key=lambda r: r["customers"]) -> list[dict]:
    """The benchmark's results (bench/results/<kind>-*.json), smallest first, ties in the files'
    name order."""
    files = sorted((ROOT / "bench" / "results").glob(f"{kind}-*.json"))
    return sorted((json.loads(p.read_text()) for p in files), key=key)


def _local_prefect(report: dict) -> bool:
    """Whether the run started Prefect's temporary server (local mode) rather than going to a
    running one, as a deployment does (results before this was recorded were all local)."""
    return report.get("prefect_api", LOCAL_PREFECT) == LOCAL_PREFECT


def _prefect_share(report: dict, run: dict) -> str:
    return f"{100 * run['prefect_share']:.1f}%" + ("" if _local_prefect(report) else " (Prefect server)")


def _size(report: dict, of: str = "customers") -> str:
    """How many ``of`` (the customers generated, or another count), and the volume and accounts
    when not the usual (see sources/sample.py)."""
    shape = [f"{name} {report.get(name, 1):g}" for name in ("volume", "accounts") if report.get(name, 1) != 1]
    return f"{report[of]:,}" + (f" ({', '.join(shape)})" if shape else "")


def table() -> str:
    results = _results("pipeline", key=lambda r: (r["customers"], r.get("volume", 1), r.get("accounts", 1),
                                                  not _local_prefect(r), r["measured_on"]))
    machines = list(dict.fromkeys(_machine(r) for r in results))
    lines = [f"Machine{'s' if len(machines) > 1 else ''} (each row names its CPU): "
             + "; ".join(machines) + ".", "",
             "Full nightly, per stage: our wall seconds / the floor's (hand-written DuckDB SQL, bench/floors.py) "
             "= how many times the floor.", "",
             "| customers | source rows landed | " + " | ".join(STAGES) + " | stages total | floor total | x floor "
             "| Prefect share | validation overhead | peak RSS MiB | DuckDB memory limit | measured | CPU |",
             "| --- " * (len(STAGES) + 11) + "|"]
    for r in results:
        full = r["full"]
        cells = [f"{full['stages'][s]['wall_s']:.1f} / {full['stages'][s]['floor_s']:.2f} = "
                 f"{full['stages'][s]['over_floor']}x" for s in STAGES]
        lines.append(f"| {_size(r)} | {full['stages']['land']['rows']:,} | " + " | ".join(cells)
                     + f" | {full['stages_total_s']:.1f} | {r['floor']['total_s']:.1f} | {r['full_over_floor']}x "
                       f"| {_prefect_share(r, full)} | {100 * r['validation_overhead']:.0f}% "
                       f"| {full['peak_rss_mib']:.0f} | {r['memory_limit']} | {r['measured_on']} "
                       f"| {r['machine']['cpu']} |")
    lines += ["", "Incremental nightly (one new marketplace export, the next day):", "",
              "| customers | rows landed | " + " | ".join(STAGES) + " | stages total | flow wall | Prefect share "
              "| peak RSS MiB | measured | CPU |", "| --- " * (len(STAGES) + 8) + "|"]
    for r in results:
        inc = r["incremental"]
        lines.append(f"| {_size(r)} | {inc['stages']['land']['rows']:,} | "
                     + " | ".join(f"{inc['stages'][s]['wall_s']:.1f}" for s in STAGES)
                     + f" | {inc['stages_total_s']:.1f} | {inc['flow_wall_s']:.1f} | {_prefect_share(r, inc)} "
                       f"| {inc['peak_rss_mib']:.0f} | {r['measured_on']} | {r['machine']['cpu']} |")
    return "\n".join(lines)


def _machine(report: dict) -> str:
    m = report["machine"]
    return f"{m['cpus']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, {m['platform']}"


def identity_table() -> str:
    import yaml

    accept = yaml.safe_load((ROOT / "warehouse" / "identity.yaml").read_text(encoding="utf-8"))["model"]["accept_probability"]
    rows = []
    for r in _results("identity", key=lambda r: (r["customers"], r.get("accounts", 1))):
        for method, run in r["runs"].items():
            pw, bc = run["pairwise"], run["bcubed"]
            shipped = " (shipped)" if method == f"rules + model @ {accept}" else ""
            rows.append([_size(r, "people"), f"{r['source_records']:,}", f"{method}{shipped}",
                         f"{run['resolved_customers']:,}",
                         f"{pw['precision']:.4f} / {pw['recall']:.4f} / {pw['f1']:.4f}",
                         f"{bc['precision']:.4f} / {bc['recall']:.4f} / {bc['f1']:.4f}", str(run["largest_cluster"]),
                         str(run.get("family_phone_over_merges", "")), f"{run['seconds']:.2f}",
                         f"{run['peak_rss_mib']:.0f}", f"{r['train_s']:.1f}", r["measured_on"]])
    return _markdown_table(["people generated", "source records", "method", "customers", "pairwise P / R / F1",
                            "B-cubed P / R / F1", "largest cluster", "family phone over-merges", "seconds",
                            "peak RSS MiB", "model trained in s", "measured"], rows)


def history_table() -> str:
    return _markdown_table(
        ["customers", "nights of history", "file MiB", "tag_history rows", "tag_changes rows", "stages s",
         "publish s", "copying the file s (on its thread)", "publish waited for the copy s", "peak RSS MiB",
         "measured"],
        [[_size(r), str(run["nights_of_history"]), f"{run['file_mib']:,}", f"{run['history_rows']:,}",
          f"{run['change_rows']:,}", f"{run['stages_s']:.1f}", f"{run['publish_s']:.1f}", f"{run['copy_s']:.1f}",
          f"{run['waited_s']:.1f}", f"{run['peak_rss_mib']:.0f}", r["measured_on"]]
         for r in _results("history") for run in r["runs"]])


def data_docs_table() -> str:
    return _markdown_table(
        ["customers", "earlier nights made up", "results stored", "build, every run kept s",
         "build that deletes the older runs s", "results kept", "next run's build s", "measured"],
        [[_size(r), f"{run['nights']:,}", f"{run['results_stored']:,}",
          f"{run['every_run_kept_s']:.2f}", f"{run['default_retention_s']:.2f}", f"{run['results_kept']:,}",
          f"{run['next_run_s']:.2f}", r["measured_on"]]
         for r in _results("data-docs") for run in r["runs"]])


def tagging_table() -> str:
    return _markdown_table(
        ["customers", "tag rows (five tags)", "ours, five tags", "hand-written DuckDB SQL (floor)",
         "pandas (`numpy.select`)", "ours, every active computed tag", "ours / floor", "pandas / ours", "measured"],
        [[f"{r['feature_rows']:,}", f"{r['tag_rows_five']:,}",
          *(f"{r['seconds'][k]:.2f} s" for k in ("ours_five_tags", "floor_five_tags", "pandas_five_tags",
                                                  "ours_all_active_tags")),
          f"{r['ours_over_floor']:.1f}", f"{r['pandas_over_ours']:.1f}", r["measured_on"]]
         for r in _results("tagging", key=lambda r: r["feature_rows"])])


def _markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = [columns, ["---"] * len(columns), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _replace(text: str, mark: str, content: str) -> str:
    head, _, rest = text.partition(mark)
    _, _, tail = rest.partition(mark)
    return f"{head}{mark}\n{content}\n{mark}{tail}"


def rendered(text: str) -> str:
    """``text`` (docs/performance.md) with its tables rendered from bench/results."""
    for mark, content in ((MARK, table()), (IDENTITY_MARK, identity_table()), (HISTORY_MARK, history_table()),
                          (DATA_DOCS_MARK, data_docs_table()), (TAGGING_MARK, tagging_table())):
        text = _replace(text, mark, content)
    return text


def render_tables() -> None:
    doc = ROOT / "docs" / "performance.md"
    doc.write_text(rendered(doc.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    render_tables()

"""``tagwright report``: one self-contained HTML page about the published tags.

Reads only the published warehouse (read-only, so it works during a run) and writes a single
file with plotly.js inlined: it opens offline and fetches nothing.  Sections: the tag catalog
with definitions and owners, coverage and value distribution per tag (in the catalog's
colours), the RFM recency x frequency grid as a heatmap with counts, churn risk and lifecycle
over time from ``tag_history``, the recent tag changes, and the run's data quality.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from warehouse.settings import Settings

MOST_VALUES = 12  # a tag with more values (a province, a probability) shows its largest ones
OVER_TIME = ("churn_risk", "lifecycle_stage")
STYLE = """
body { font-family: -apple-system, "Segoe UI", "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 2rem auto;
       max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; margin-bottom: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1rem; }
.chart { border: 1px solid #eee; border-radius: 4px; }
"""


@dataclass
class ReportResult:
    path: Path
    as_of: str
    charts: int


def _escape(value: object) -> str:
    return "" if value is None else html.escape(str(value))


def _table(columns: list[str], rows: list[tuple], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td class='num'>{_escape(v)}</td>" if i in numeric else f"<td>{_escape(v)}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Charts:
    """Plotly figures rendered as divs; the page inlines plotly.js once."""

    def __init__(self) -> None:
        self.count = 0

    def render(self, figure, height: int = 320) -> str:
        figure.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")
        self.count += 1
        return "<div class='chart'>" + figure.to_html(full_html=False, include_plotlyjs=False,
                                                      div_id=f"chart-{self.count}",
                                                      config={"displayModeBar": False, "responsive": True}) + "</div>"


def build_report(settings: Settings, out: Path | None = None) -> ReportResult:
    """Write the report for the last published run; returns where it went."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    if not settings.warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {settings.warehouse}; run `tagwright run` first")
    charts = _Charts()
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        as_of = con.execute("SELECT max(as_of) FROM analytics.tag_stats").fetchone()[0]
        customers = con.execute("SELECT count(*) FROM analytics.customer_features").fetchone()[0]
        run = con.execute("SELECT run_id, status, stage_seconds FROM ops.runs WHERE as_of = ?"
                          " ORDER BY started_at DESC LIMIT 1", [as_of]).fetchone()
        catalog = con.execute("""
            SELECT tag, name_en, name_zh, category_l1 || ' / ' || category_l2, value_type, owner, definition,
                   status, version, round(100 * coverage, 1), colours
            FROM analytics.tag_catalog ORDER BY category_l1, category_l2, tag""").fetchall()
        stats = con.execute("""SELECT tag, value, customers FROM analytics.tag_stats WHERE as_of = ?
                               ORDER BY tag, customers DESC, value""", [as_of]).fetchall()
        grid = con.execute("""SELECT r_score, f_score, count(*) FROM analytics.customer_features
                              WHERE r_score IS NOT NULL GROUP BY ALL""").fetchall()
        over_time = con.execute(f"""
            WITH days AS (SELECT DISTINCT as_of AS day FROM analytics.tag_stats)
            SELECT h.tag, d.day, h.value, count(*) FROM days d JOIN analytics.tag_history h
              ON h.valid_from <= d.day AND (h.valid_to IS NULL OR h.valid_to > d.day)
            WHERE h.tag IN {tuple(OVER_TIME)} GROUP BY ALL ORDER BY 1, 2, 3""").fetchall()
        changes = con.execute("""SELECT tag, coalesce(old_value, '(none)'), coalesce(new_value, '(none)'), count(*)
                                 FROM analytics.tag_changes WHERE as_of = ? GROUP BY ALL
                                 ORDER BY 4 DESC, 1, 2, 3 LIMIT 25""", [as_of]).fetchall()
        loads = con.execute("""SELECT source, file, coalesce(entity, ''), status, rows_in, rows_loaded,
                                      rows_quarantined FROM ops.loads ORDER BY load_id""").fetchall()
        reasons = con.execute("""SELECT source, entity, "column", expectation, count(*) FROM ops.quarantine
                                 GROUP BY ALL ORDER BY 5 DESC, 1, 2, 3 LIMIT 25""").fetchall()
    colours = {row[0]: dict(row[-1] or {}) for row in catalog}

    parts = [f"<h1>tagwright tag report</h1><div class='meta'>as_of <b>{_escape(as_of)}</b> · "
             f"{customers} customers · run {_escape(run[0] if run else '?')} ({_escape(run[1] if run else '?')}) · "
             f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</div>"]
    parts.append("<h2>Tag catalog</h2>" + _table(
        ["tag", "name", "名称", "category", "type", "owner", "definition (口径)", "status", "version", "coverage %"],
        [r[:10] for r in catalog], numeric={8, 9}))

    per_tag: dict[str, list[tuple[str, int]]] = {}
    for tag, value, n in stats:
        per_tag.setdefault(tag, []).append((value, n))
    bars = []
    for tag, values in per_tag.items():
        shown = values[:MOST_VALUES]
        rest = sum(n for _, n in values[MOST_VALUES:])
        labels = [v for v, _ in shown] + ([f"{len(values) - MOST_VALUES} more values"] if rest else [])
        counts = [n for _, n in shown] + ([rest] if rest else [])
        palette = [colours.get(tag, {}).get(label, "#4c78a8") for label in labels]
        coverage = 100 * sum(n for _, n in values) / customers if customers else 0
        figure = go.Figure(go.Bar(x=counts, y=labels, orientation="h", marker_color=palette, text=counts,
                                  textposition="auto"))
        figure.update_layout(title=f"{tag} · coverage {coverage:.1f}%", yaxis=dict(autorange="reversed"))
        bars.append(charts.render(figure, height=max(220, 28 * len(labels) + 90)))
    parts.append("<h2>Coverage and values per tag</h2><div class='charts'>" + "".join(bars) + "</div>")

    counts = {(int(r), int(f)): n for r, f, n in grid}
    z = [[counts.get((r, f), 0) for f in range(1, 6)] for r in range(1, 6)]
    heatmap = go.Figure(go.Heatmap(z=z, x=[f"F{f}" for f in range(1, 6)], y=[f"R{r}" for r in range(1, 6)],
                                   text=z, texttemplate="%{text}", colorscale="Blues",
                                   hovertemplate="%{y} %{x}: %{z} customers<extra></extra>"))
    heatmap.update_layout(title="RFM grid: customers per recency (R) and frequency (F) score",
                          xaxis_title="frequency score", yaxis_title="recency score")
    parts.append("<h2>RFM grid</h2>" + charts.render(heatmap, height=420))

    trend = []
    for tag in OVER_TIME:
        rows = [r for r in over_time if r[0] == tag]
        figure = go.Figure()
        for value in sorted({r[2] for r in rows}):
            points = [(r[1], r[3]) for r in rows if r[2] == value]
            figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=value,
                                        mode="lines+markers", stackgroup="one",
                                        line=dict(color=colours.get(tag, {}).get(value))))
        figure.update_layout(title=f"{tag} over time (customers, from tag_history)")
        trend.append(charts.render(figure, height=360))
    parts.append("<h2>Churn risk and lifecycle over time</h2><div class='charts'>" + "".join(trend) + "</div>")

    parts.append(f"<h2>Tag changes on {_escape(as_of)}</h2>" + (
        _table(["tag", "from", "to", "customers"], changes, numeric={3}) if changes else "<p>No changes.</p>"))
    stage_seconds = run[2] if run else "{}"
    parts.append("<h2>Data quality of the run</h2>"
                 f"<p>Stage seconds: <code>{_escape(stage_seconds)}</code></p>"
                 + _table(["source", "file", "entity", "status", "rows in", "loaded", "quarantined"], loads,
                          numeric={4, 5, 6})
                 + "<h3>Quarantined rows by reason</h3>"
                 + (_table(["source", "entity", "column", "expectation", "rows"], reasons, numeric={4})
                    if reasons else "<p>No row was quarantined.</p>"))

    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>tagwright tag report {_escape(as_of)}</title><style>{STYLE}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>" + "\n".join(parts) + "</body></html>")
    path = out or settings.data_dir / "reports" / f"tag-report-{as_of}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return ReportResult(path=path, as_of=str(as_of), charts=charts.count)

"""The tagging stage against its floor (hand-written DuckDB SQL) and a plain pandas version.

    .venv/bin/python bench/tagging_baseline.py --customers 20000 --copies 50

Runs the real pipeline stages up to features on a generated sample, then copies the feature
table ``--copies`` times (new customer ids, same values) to reach the target size.  On that
table, in the same run, it times for five tags (activity_level, lifecycle_stage, rfm_segment,
value_tier, churn_risk):

- ours: the tagging stage's own code (``warehouse.tagging.write_tag_rows``, overrides included);
- floor: the same five tags written by hand in DuckDB SQL;
- pandas: the same five tags with ``numpy.select`` over a DataFrame, as an analyst writes them;

checks that the three give the same rows, and also times ours for every active tag.  Writes
bench/results/tagging-<rows>.json.  A measurement, not a test.
"""

from __future__ import annotations

import argparse
import time
from datetime import date

import numpy as np
import pandas as pd

from common import scratch_data_dir, write_result

AS_OF = date(2026, 11, 21)
TAGS = ["activity_level", "churn_risk", "lifecycle_stage", "rfm_segment", "value_tier"]

FLOOR_SQL = """
SELECT customer_id, tag, value FROM (
    SELECT customer_id, 'activity_level' AS tag,
           CASE WHEN active_days_30 >= 15 THEN 'high' WHEN active_days_30 >= 4 THEN 'medium'
                WHEN active_days_30 >= 1 THEN 'low' ELSE 'inactive' END AS value FROM big
    UNION ALL
    SELECT customer_id, 'churn_risk',
           CASE WHEN p_alive < 0.3 OR days_since_last_order > greatest(180, 3 * coalesce(median_gap_days, 0)) THEN 'high'
                WHEN p_alive < 0.7 OR days_since_last_order > 90 THEN 'medium'
                WHEN days_since_last_order >= 0 THEN 'low' END FROM big
    UNION ALL
    SELECT customer_id, 'lifecycle_stage',
           CASE WHEN paid_orders = 0 THEN 'prospect' WHEN days_since_first_order < 30 THEN 'new'
                WHEN days_since_last_order > 180 THEN 'churned'
                WHEN days_since_last_order < 30 AND previous_gap_days > 180 THEN 'returning' ELSE 'active' END FROM big
    UNION ALL
    SELECT customer_id, 'rfm_segment',
           CASE WHEN r_score = 5 AND f_score >= 4 THEN 'Champions' WHEN r_score = 5 AND f_score = 1 THEN 'New Customers'
                WHEN r_score = 4 AND f_score = 1 THEN 'Promising'
                WHEN r_score >= 4 AND f_score BETWEEN 2 AND 3 THEN 'Potential Loyalist'
                WHEN r_score BETWEEN 3 AND 4 AND f_score >= 4 THEN 'Loyal Customers'
                WHEN r_score = 3 AND f_score = 3 THEN 'Need Attention' WHEN r_score = 3 AND f_score <= 2 THEN 'About To Sleep'
                WHEN r_score <= 2 AND f_score = 5 THEN 'Can''t Lose Them'
                WHEN r_score <= 2 AND f_score BETWEEN 3 AND 4 THEN 'At Risk'
                WHEN r_score = 1 AND f_score = 1 THEN 'Lost' WHEN r_score <= 2 AND f_score <= 2 THEN 'Hibernating' END FROM big
    UNION ALL
    SELECT customer_id, 'value_tier',
           CASE WHEN coalesce(age_years < 14, false) THEN NULL WHEN m_score = 5 THEN 'high-value'
                WHEN m_score BETWEEN 3 AND 4 OR (r_score >= 4 AND f_score <= 2) THEN 'potential'
                WHEN m_score IS NOT NULL THEN 'low-value' END FROM big)
WHERE value IS NOT NULL
"""


def _when(*conditions: pd.Series) -> list:
    """Conditions for numpy.select: a missing value is false, as in SQL's CASE."""
    return [c.fillna(False).to_numpy(dtype=bool) for c in conditions]


def pandas_tags(f: pd.DataFrame) -> pd.DataFrame:
    """The five tags as an analyst writes them in pandas."""
    r, fs, m = f["r_score"], f["f_score"], f["m_score"]
    last, first = f["days_since_last_order"], f["days_since_first_order"]
    out = {
        "activity_level": np.select(_when(f["active_days_30"] >= 15, f["active_days_30"] >= 4, f["active_days_30"] >= 1),
                                    ["high", "medium", "low"], "inactive"),
        "churn_risk": np.select(
            _when((f["p_alive"] < 0.3) | (last > np.maximum(180, 3 * f["median_gap_days"].fillna(0))),
                  (f["p_alive"] < 0.7) | (last > 90), last >= 0), ["high", "medium", "low"], None),
        "lifecycle_stage": np.select(
            _when(f["paid_orders"] == 0, first < 30, last > 180, (last < 30) & (f["previous_gap_days"] > 180)),
            ["prospect", "new", "churned", "returning"], "active"),
        "rfm_segment": np.select(
            _when((r == 5) & (fs >= 4), (r == 5) & (fs == 1), (r == 4) & (fs == 1), (r >= 4) & fs.between(2, 3),
                  r.between(3, 4) & (fs >= 4), (r == 3) & (fs == 3), (r == 3) & (fs <= 2), (r <= 2) & (fs == 5),
                  (r <= 2) & fs.between(3, 4), (r == 1) & (fs == 1), (r <= 2) & (fs <= 2)),
            ["Champions", "New Customers", "Promising", "Potential Loyalist", "Loyal Customers", "Need Attention",
             "About To Sleep", "Can't Lose Them", "At Risk", "Lost", "Hibernating"], None),
        "value_tier": np.select(
            _when(f["age_years"] < 14, m == 5, m.between(3, 4) | ((r >= 4) & (fs <= 2)), m.notna()),
            [None, "high-value", "potential", "low-value"], None),
    }
    frames = [pd.DataFrame({"customer_id": f["customer_id"], "tag": tag, "value": values}) for tag, values in out.items()]
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"])


def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    data = scratch_data_dir("tagwright-tagging-")

    from rules.model import load_rules
    from sources.sample import generate
    from warehouse.features import compute_features
    from warehouse.identity import resolve_identities
    from warehouse.land import land
    from warehouse.settings import Settings
    from warehouse.stage import stage
    from warehouse.tagging import write_tag_rows
    from warehouse.validate import validate
    from warehouse.workdb import open_work_db

    generate(data / "inbox", customers=args.customers, seed=args.seed, end_date=AS_OF)
    settings, rules = Settings.from_env(), load_rules()
    con = open_work_db(settings)
    for step in (lambda: land(con, settings, "bench"), lambda: validate(con, settings, "bench"),
                 lambda: stage(con, settings), lambda: resolve_identities(con, "bench"),
                 lambda: compute_features(con, settings, rules, AS_OF)):
        step()
    con.execute(f"""CREATE TEMP TABLE big AS
                    SELECT * REPLACE (customer_id || '-' || copy AS customer_id)
                    FROM features.customer_features, range({args.copies}) t(copy)""")
    rows = con.execute("SELECT count(*) FROM big").fetchall()[0][0]
    five = [rules.tags[t] for t in TAGS]
    subset = type(rules)(rules.features, rules.scores, {t.id: t for t in five}, rules.models, rules.marketing_exclusion)
    ours_s, _ = _timed(lambda: write_tag_rows(con, "ours", subset, AS_OF, "big", temporary=True))
    floor_s, _ = _timed(lambda: con.execute(f"CREATE OR REPLACE TEMP TABLE floor AS {FLOOR_SQL}"))
    all_s, _ = _timed(lambda: write_tag_rows(con, "all_tags", rules, AS_OF, "big", temporary=True))
    frame = con.execute("SELECT * FROM big").fetchdf()
    pandas_s, by_pandas = _timed(lambda: pandas_tags(frame))
    con.register("by_pandas", by_pandas)
    differences = con.execute("""
        SELECT (SELECT count(*) FROM (SELECT customer_id, tag, value FROM ours EXCEPT ALL SELECT * FROM floor))
             + (SELECT count(*) FROM (SELECT * FROM floor EXCEPT ALL SELECT customer_id, tag, value FROM ours))
             + (SELECT count(*) FROM (SELECT * FROM floor EXCEPT ALL SELECT * FROM by_pandas))
             + (SELECT count(*) FROM (SELECT * FROM by_pandas EXCEPT ALL SELECT * FROM floor))""").fetchall()[0][0]
    tag_rows = con.execute("SELECT count(*) FROM ours").fetchall()[0][0]
    con.close()
    report = {
        "customers_generated": args.customers, "copies": args.copies, "feature_rows": rows, "tag_rows_five": tag_rows,
        "differences": differences,
        "seconds": {"ours_five_tags": round(ours_s, 3), "floor_five_tags": round(floor_s, 3),
                    "pandas_five_tags": round(pandas_s, 3), "ours_all_active_tags": round(all_s, 3)},
        "ours_over_floor": round(ours_s / floor_s, 2), "pandas_over_ours": round(pandas_s / ours_s, 1),
        "measured_on": time.strftime("%Y-%m-%d"),
    }
    write_result(f"tagging-{rows}", report)


if __name__ == "__main__":
    main()

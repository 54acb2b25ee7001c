"""Identity resolution against the sample generator's ground truth: pairwise and B-cubed quality.

    .venv/bin/python bench/identity_quality.py --customers 2000 [--seed 7]

Generates the sample (with its traps: families sharing a phone, placeholder contacts, masked
marketplace phones), runs land, validate, stage and resolve_identities as plain functions,
and compares ``identity.node_customer`` with ``ground_truth.csv``.  Writes
bench/results/identity-<customers>.json.  A measurement, not a test.
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import date

from common import scratch_data_dir, write_result

QUALITY_SQL = """
WITH m AS (
    SELECT n.customer_id AS c, t.person_id AS p
    FROM identity.node_customer n
    JOIN read_csv($truth, all_varchar = true) t USING (source, source_customer_id)),
both_ AS (SELECT c, p, count(*) AS n FROM m GROUP BY ALL),
clusters AS (SELECT c, count(*) AS n FROM m GROUP BY c),
people AS (SELECT p, count(*) AS n FROM m GROUP BY p)
SELECT
    (SELECT count(*) FROM m) AS records,
    (SELECT count(*) FROM clusters) AS customers,
    (SELECT count(*) FROM people) AS people,
    (SELECT sum(n * (n - 1) / 2) FROM both_) AS true_positive_pairs,
    (SELECT sum(n * (n - 1) / 2) FROM clusters) AS predicted_pairs,
    (SELECT sum(n * (n - 1) / 2) FROM people) AS true_pairs,
    (SELECT sum(b.n * b.n / c.n) FROM both_ b JOIN clusters c USING (c)) / (SELECT count(*) FROM m) AS bcubed_precision,
    (SELECT sum(b.n * b.n / p.n) FROM both_ b JOIN people p USING (p)) / (SELECT count(*) FROM m) AS bcubed_recall,
    (SELECT max(n) FROM clusters) AS largest_cluster
"""


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    data = scratch_data_dir("tagwright-identity-")

    from sources.sample import generate
    from warehouse.identity import resolve_identities
    from warehouse.land import land
    from warehouse.settings import Settings
    from warehouse.stage import stage
    from warehouse.validate import validate
    from warehouse.workdb import open_work_db

    generate(data / "inbox", customers=args.customers, seed=args.seed, end_date=date(2026, 11, 21))
    settings = Settings.from_env()
    con = open_work_db(settings)
    land(con, settings, "bench")
    validate(con, settings, "bench")
    stage(con, settings)
    started = time.perf_counter()
    resolve_identities(con, "bench")
    seconds = time.perf_counter() - started
    cursor = con.execute(QUALITY_SQL, {"truth": str(data / "inbox" / "ground_truth.csv")})
    row = dict(zip([d[0] for d in cursor.description], cursor.fetchall()[0]))
    con.close()
    pairwise_precision = row["true_positive_pairs"] / row["predicted_pairs"]
    pairwise_recall = row["true_positive_pairs"] / row["true_pairs"]
    report = {
        "customers": args.customers, "seed": args.seed, "source_records": row["records"],
        "resolved_customers": row["customers"], "people": row["people"], "largest_cluster": row["largest_cluster"],
        "pairwise": {"precision": round(pairwise_precision, 4), "recall": round(pairwise_recall, 4),
                     "f1": round(_f1(pairwise_precision, pairwise_recall), 4)},
        "bcubed": {"precision": round(row["bcubed_precision"], 4), "recall": round(row["bcubed_recall"], 4),
                   "f1": round(_f1(row["bcubed_precision"], row["bcubed_recall"]), 4)},
        "resolve_identities_s": round(seconds, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "measured_on": time.strftime("%Y-%m-%d"),
    }
    write_result(f"identity-{args.customers}", report)


if __name__ == "__main__":
    main()

"""Identity resolution against the sample generator's ground truth, side by side with splink alone.

    .venv/bin/python bench/identity_quality.py --customers 100000 [--days 730] [--seed 7] [--accounts 2]

Generates the sample (with its traps: families sharing a phone, placeholder contacts, masked
marketplace phones, traditional-character names), runs land, validate and stage, trains the
identity model (``warehouse/identity.py: train_model``), then measures on the same staged data:

- ``rules``: resolve_identities with the deterministic rules only;
- ``rules + model @ p``: with the model's links accepted from probability ``p`` (the shipped
  setting and two others);
- ``splink alone``: the same trained model predicting every blocked pair and splink's own
  clustering at the shipped acceptance probability, no rules.

Each measurement runs in a fresh process, so its wall time and peak RSS are its own.  Pairwise
and B-cubed precision/recall/F1 against ``ground_truth.csv``.  ``--accounts`` gives each person
that many accounts per source on average (see sources/sample.py): the people they hold are
in the ground truth too.  Writes bench/results/identity-<customers>[-accounts<accounts>].json.
A measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date
from pathlib import Path

from common import in_fresh_process, one_or_more, peak_rss_mib, scratch_data_dir, shape_suffix, write_result

QUALITY_SQL = """
WITH m AS (
    SELECT n.customer_id AS c, t.person_id AS p
    FROM {clusters} n
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


def _quality(con, clusters: str, truth: Path) -> dict:
    cursor = con.execute(QUALITY_SQL.format(clusters=clusters), {"truth": str(truth)})
    row = dict(zip([d[0] for d in cursor.description], cursor.fetchall()[0]))
    # A family sharing a phone merged: a customer holding records of two people with one phone.
    family = con.execute(f"""
        WITH m AS (SELECT n.customer_id, t.person_id, r.phone_e164
                   FROM {clusters} n JOIN read_csv($truth, all_varchar = true) t USING (source, source_customer_id)
                   JOIN stage.customer_records r USING (source, source_customer_id) WHERE r.phone_e164 IS NOT NULL)
        SELECT count(DISTINCT a.customer_id) FROM m a JOIN m b
        ON a.customer_id = b.customer_id AND a.phone_e164 = b.phone_e164 AND a.person_id < b.person_id""",
                         {"truth": str(truth)}).fetchall()[0][0]
    pairwise_p = row["true_positive_pairs"] / row["predicted_pairs"] if row["predicted_pairs"] else 1.0
    pairwise_r = row["true_positive_pairs"] / row["true_pairs"]
    return {"source_records": row["records"], "people": row["people"], "resolved_customers": row["customers"],
            "largest_cluster": row["largest_cluster"], "family_phone_over_merges": family,
            "pairwise": {"precision": round(pairwise_p, 4), "recall": round(pairwise_r, 4),
                         "f1": round(_f1(pairwise_p, pairwise_r), 4)},
            "bcubed": {"precision": round(row["bcubed_precision"], 4), "recall": round(row["bcubed_recall"], 4),
                       "f1": round(_f1(row["bcubed_precision"], row["bcubed_recall"]), 4)}}


def _prepare(customers: int, days: int, seed: int, accounts: float) -> dict:
    from sources.sample import generate
    from warehouse.land import land
    from warehouse.settings import Settings
    from warehouse.stage import stage
    from warehouse.validate import validate
    from warehouse.workdb import open_work_db

    settings = Settings.from_env()
    generate(settings.inbox, customers=customers, days=days, seed=seed, end_date=date(2026, 11, 21), accounts=accounts)
    con = open_work_db(settings)
    land(con, settings, "bench")
    validate(con, settings, "bench")
    stage(con, settings)
    started = time.perf_counter()
    from warehouse.identity import train_model

    train_model(con, settings.identity_model, settings.memory_limit)
    trained = time.perf_counter() - started
    con.close()
    return {"train_s": round(trained, 2), "peak_rss_mib": peak_rss_mib()}


def _resolve(accept: float | None, truth: Path) -> dict:
    import warehouse.identity as identity
    from warehouse.settings import Settings
    from warehouse.workdb import open_work_db

    settings = Settings.from_env()
    config = identity.load_identity_config()
    if accept is not None:
        config["model"]["accept_probability"] = accept
    identity.load_identity_config = lambda: config
    con = open_work_db(settings)
    con.execute("DELETE FROM identity.golden_built")  # every method builds all golden records, as a first run
    started = time.perf_counter()
    result = identity.resolve_identities(con, "bench", settings.identity_model if accept is not None else None,
                                         settings.memory_limit)
    seconds = time.perf_counter() - started
    report = {"seconds": round(seconds, 2), "peak_rss_mib": peak_rss_mib(), "model_links": result.model_links,
              "merged_by": result.merged_by,
              "review_pairs": result.review_pairs, "pairs_limited": result.pairs_limited,
              **_quality(con, "identity.node_customer", truth)}
    con.close()
    return report


def _splink_alone(accept: float, truth: Path) -> dict:
    """The trained model on every blocked pair, clustered by splink at ``accept``; no rules."""
    import logging

    import warehouse.identity as identity
    from warehouse.identity_model import comparison_records, new_linker
    from warehouse.settings import Settings
    from warehouse.workdb import open_work_db

    logging.getLogger("splink").setLevel(logging.WARNING)
    settings = Settings.from_env()
    con = open_work_db(settings)
    started = time.perf_counter()
    config = identity.load_identity_config()
    identity._build_nodes(con, config)
    records = comparison_records(con, config)
    linker = new_linker(records, str(settings.identity_model), settings.memory_limit)
    pairs = linker.inference.predict(threshold_match_probability=accept)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pairs, accept)
    con.register("splink_clusters", clusters.as_pyarrow_table())
    con.execute("""CREATE OR REPLACE TEMP TABLE splink_customers AS
                   SELECT n.source, n.source_customer_id, coalesce(CAST(c.cluster_id AS VARCHAR), 'n' || n.node) AS customer_id
                   FROM nodes n LEFT JOIN splink_clusters c ON c.unique_id = n.node""")
    seconds = time.perf_counter() - started
    report = {"seconds": round(seconds, 2), "peak_rss_mib": peak_rss_mib(),
              **_quality(con, "splink_customers", truth)}
    con.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=2000, help="people the generator simulates")
    parser.add_argument("--days", type=int, default=730, help="history length (fewer days: fewer orders and events)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--accounts", type=one_or_more, default=1.0,
                        help="accounts a person holds in each source they use, on average")
    args = parser.parse_args()
    data = scratch_data_dir("tagwright-identity-")
    from warehouse.identity import load_identity_config

    shipped = float(load_identity_config()["model"]["accept_probability"])
    truth = data / "inbox" / "ground_truth.csv"
    prepared = in_fresh_process(_prepare, args.customers, args.days, args.seed, args.accounts)
    runs = {"rules": in_fresh_process(_resolve, None, truth)}
    for accept in sorted({0.99, 0.9, 0.8, 0.7, shipped}, reverse=True):
        runs[f"rules + model @ {accept}"] = in_fresh_process(_resolve, accept, truth)
    runs[f"splink alone @ {shipped}"] = in_fresh_process(_splink_alone, shipped, truth)
    shipped_run = runs[f"rules + model @ {shipped}"]
    report = {
        "customers": args.customers, "days": args.days, "seed": args.seed, "accounts": args.accounts,
        "source_records": shipped_run["source_records"], "people": shipped_run["people"],
        "shipped_accept_probability": shipped, "train_s": prepared["train_s"],
        "memory_limit": os.environ.get("TAGWRIGHT_MEMORY_LIMIT", "4GB"), "runs": runs,
        "measured_on": time.strftime("%Y-%m-%d"),
    }
    write_result(f"identity-{args.customers}{shape_suffix(accounts=args.accounts)}", report)


if __name__ == "__main__":
    main()

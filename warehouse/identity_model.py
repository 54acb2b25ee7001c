"""Probabilistic identity links with splink (DuckDB backend), for what the rules leave apart.

The deterministic rules (``warehouse/identity.py``) link on strong identifiers only.  A person
whose web account has no name or phone and whose marketplace buyer record has a masked phone
stays two customers there; this model scores such pairs on the fields they do share.

- **Training** (``tagwright identity train``, its own flow, not nightly) fits a Fellegi-Sunter
  model on the staged customer records: the prior from the deterministic links, u by random
  sampling, m from the pairs the deterministic rules linked (their customers as labels).  It is saved as splink
  JSON in ``<data dir>/identity/model.json`` (``Settings.identity_model``).
- **Scoring** (every nightly, if a model exists) compares records blocked on name + city,
  masked phone, birth date + city and email local part; ``identity.py`` accepts a pair as a
  link or sends it to review.

Blocklisted placeholder values are blanked before splink sees them, so they never agree.
Splink runs in its own in-memory DuckDB with the work file's memory limit; only the records'
comparison columns cross over (as Arrow).
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pyarrow as pa

from warehouse import dialect
from warehouse.errors import StageError



def blocked_masks(config: dict) -> list[str]:
    """The masked forms (``138****0000``) of the blocklisted Chinese phones."""
    return [p[3:6] + "****" + p[-4:] for p in config["blocklist"]["phone_e164"] if p.startswith("+86")]


def comparison_records(con: duckdb.DuckDBPyConnection, config: dict) -> pa.Table:
    """One row per source customer with a record (``unique_id`` = the node number), placeholder
    values blanked."""
    block = config["blocklist"]
    return con.sql(f"""
        SELECT n.node AS unique_id,
               r.name_key,
               CASE WHEN {dialect.is_in('CAST(r.birth_date AS VARCHAR)', block['birth_date'], negate=True)}
                    THEN CAST(r.birth_date AS VARCHAR) END AS birth_date,
               nullif(trim(r.city), '') AS city,
               CASE WHEN {dialect.is_in("coalesce(r.phone_e164, '')", block['phone_e164'], negate=True)}
                    THEN r.phone_e164 END AS phone_e164,
               CASE WHEN {dialect.is_in("coalesce(r.phone_e164, '')", block['phone_e164'], negate=True)}
                     AND {dialect.is_in("coalesce(r.phone_masked_key, '')", blocked_masks(config), negate=True)}
                    THEN r.phone_masked_key END AS phone_masked_key,
               CASE WHEN {dialect.is_in("coalesce(r.email_key, '')", block['email_key'], negate=True)}
                    THEN nullif(regexp_extract(r.email_key, '^([^@]+)@', 1), '') END AS email_local,
               r.gender
        FROM stage.customer_records r JOIN nodes n USING (source, source_customer_id)
        ORDER BY n.node""").to_arrow_table()


def _settings():
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    phone = cl.CustomComparison(
        output_column_name="phone",
        comparison_levels=[
            cll.NullLevel("phone_masked_key"),
            cll.ExactMatchLevel("phone_e164"),
            # Two full phones that differ disagree, even when their masked forms agree.
            cll.CustomLevel('"phone_masked_key_l" = "phone_masked_key_r" '
                            'AND ("phone_e164_l" IS NULL OR "phone_e164_r" IS NULL)',
                            label_for_charts="masked phone agrees (one side masked)"),
            cll.ElseLevel(),
        ])
    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.ExactMatch("name_key").configure(term_frequency_adjustments=True),
            cl.ExactMatch("birth_date"),
            cl.ExactMatch("city").configure(term_frequency_adjustments=True),
            phone,
            cl.ExactMatch("email_local"),
            cl.ExactMatch("gender"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("name_key", "city"),
            block_on("phone_masked_key"),
            block_on("birth_date", "city"),
            block_on("email_local"),
        ],
        retain_matching_columns=False,
    )


def new_linker(records: pa.Table, settings, memory_limit: str | None):
    """A splink Linker over ``records`` in its own in-memory DuckDB (``settings``: a
    SettingsCreator, or the path of a saved model)."""
    from splink import DuckDBAPI, Linker

    splink_con = duckdb.connect()
    if memory_limit:
        splink_con.execute(f"SET memory_limit = {dialect.quote(memory_limit)}")
    db_api = DuckDBAPI(splink_con)
    return Linker(db_api.register(records, dataset_display_name="customer_records"), settings, log_level=None)


def train(records: pa.Table, out: Path, memory_limit: str | None = None, seed: int = 1) -> dict:
    """Fit the model on ``records`` and save it as splink JSON at ``out``; returns the model.

    ``records`` carries ``rule_customer``, the customer the deterministic rules gave each
    record: pairs within one are the labelled matches m is estimated from (the rules are
    precise, so their customers are trustworthy labels), u comes from random pairs and the prior
    from the rules' links.  Expectation maximisation is not used: on these fields it drifts to
    "same birthday and city is a match" (conditional independence does not hold).
    """
    from splink import block_on

    if records.num_rows < 100:
        raise StageError("identity_train", f"only {records.num_rows} customer records to learn from",
                         "run the nightly flow first so the staged records hold real data")
    logging.getLogger("splink").setLevel(logging.WARNING)
    linker = new_linker(records, _settings(), memory_limit)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("phone_e164", "name_key"), block_on("email_local", "birth_date")], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=seed)
    linker.training.estimate_m_from_label_column("rule_customer")
    out.parent.mkdir(parents=True, exist_ok=True)
    return linker.misc.save_model_to_json(str(out), overwrite=True)


def describe(model: dict) -> list[tuple[str, str, float, float, float]]:
    """(comparison, level, m, u, Bayes factor m/u) for every trained level of a saved model."""
    rows = []
    for comparison in model["comparisons"]:
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level") or level.get("m_probability") is None:
                continue
            m, u = level["m_probability"], level["u_probability"]
            rows.append((comparison["output_column_name"], level["label_for_charts"], m, u, m / u if u else float("inf")))
    return rows


def score_pairs(records: pa.Table, model: Path, min_probability: float,
                memory_limit: str | None = None) -> pa.Table:
    """Scored candidate pairs at or above ``min_probability``: (a, b, probability, match_weight)
    with node ``a`` < ``b``."""
    # splink warns that u of the email local part is a default: random pairs never share one.
    logging.getLogger("splink").setLevel(logging.ERROR)
    linker = new_linker(records, str(model), memory_limit)
    predictions = linker.inference.predict(threshold_match_probability=min_probability)
    relation = predictions.as_duckdbpyrelation()
    return relation.query("p", """
        SELECT least(unique_id_l, unique_id_r) AS a, greatest(unique_id_l, unique_id_r) AS b,
               match_probability AS probability, match_weight
        FROM p""").to_arrow_table()

"""Resolve identities: source customers -> stable ``customer_id`` and a golden record.

Deterministic stitching on normalised identifiers (DESIGN.md, Identity):

| link | rule |
| --- | --- |
| member id | equal member ids (store card number, also bound in web profiles) |
| email | equal ``email_key`` |
| phone + name | equal E.164 phone *and* equal ``name_key`` (a family sharing a phone does not merge) |
| phone + birth date | equal E.164 phone *and* equal birth date (a record without a name still links; family members sharing a phone have other birthdays) |
| name + birth date + city | equal ``name_key``, birth date *and* city (the same person registered with another phone, e.g. a relative's) |
| masked phone + name | marketplace ``138****5678`` equal to a full phone's prefix/suffix *and* equal name |

Blocklisted placeholder values never link, and an identifier shared by more than
``max_records_per_identifier`` source customers stops linking.  Connected components are
computed set-based by iterated min-label propagation in SQL (a loop over iterations, not rows).

Stable ids: a component keeps the id its records had; when components merge the oldest id
survives; when one splits, the part with most records keeps the id and the others get new
ids.  Both are logged in ``ops.identity_changes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files

import duckdb
import yaml

from warehouse import dialect
from warehouse.faults import failpoint
from warehouse.errors import StageError


@dataclass
class IdentityResult:
    source_customers: int = 0
    customers: int = 0
    new_ids: int = 0
    merges: int = 0
    splits: int = 0
    iterations: int = 0
    capped_identifiers: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return self.customers


def load_identity_config() -> dict:
    return yaml.safe_load(files("warehouse").joinpath("identity.yaml").read_text(encoding="utf-8"))


def _build_edges(con: duckdb.DuckDBPyConnection, config: dict) -> int:
    block = config["blocklist"]
    blocked_masks = [p[3:6] + "****" + p[-4:] for p in block["phone_e164"] if p.startswith("+86")]
    con.execute("""
        CREATE OR REPLACE TEMP TABLE nodes AS
        SELECT row_number() OVER (ORDER BY source, source_customer_id) AS node, source, source_customer_id
        FROM (SELECT source, source_customer_id FROM stage.customer_records
              UNION SELECT source, source_customer_id FROM stage.orders WHERE source_customer_id IS NOT NULL
              UNION SELECT source, source_customer_id FROM stage.events WHERE source_customer_id IS NOT NULL
              UNION SELECT source, source_customer_id FROM stage.interactions WHERE source_customer_id IS NOT NULL)
        """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE identifiers AS
        WITH r AS (SELECT n.node, c.* FROM stage.customer_records c JOIN nodes n USING (source, source_customer_id))
        SELECT node, 'member_id' AS kind, member_id AS key FROM r
            WHERE member_id IS NOT NULL AND {dialect.is_in('member_id', block['member_id'], negate=True)}
        UNION ALL
        SELECT node, 'email', email_key FROM r
            WHERE email_key IS NOT NULL AND {dialect.is_in('email_key', block['email_key'], negate=True)}
        UNION ALL
        SELECT node, 'phone+name', phone_e164 || '|' || name_key FROM r
            WHERE phone_e164 IS NOT NULL AND name_key IS NOT NULL
              AND {dialect.is_in('phone_e164', block['phone_e164'], negate=True)}
        UNION ALL
        SELECT node, 'phone+birth date', phone_e164 || '|' || CAST(birth_date AS VARCHAR) FROM r
            WHERE phone_e164 IS NOT NULL AND birth_date IS NOT NULL
              AND {dialect.is_in('phone_e164', block['phone_e164'], negate=True)}
              AND {dialect.is_in('CAST(birth_date AS VARCHAR)', block['birth_date'], negate=True)}
        UNION ALL
        SELECT node, 'name+birth date+city', name_key || '|' || CAST(birth_date AS VARCHAR) || '|' || trim(city) FROM r
            WHERE name_key IS NOT NULL AND birth_date IS NOT NULL AND nullif(trim(city), '') IS NOT NULL
              AND {dialect.is_in('CAST(birth_date AS VARCHAR)', block['birth_date'], negate=True)}
        UNION ALL
        SELECT node, 'masked phone+name', phone_masked_key || '|' || name_key FROM r
            WHERE phone_masked_key IS NOT NULL AND name_key IS NOT NULL
              AND {dialect.is_in("coalesce(phone_e164, '')", block['phone_e164'], negate=True)}
              AND {dialect.is_in('phone_masked_key', blocked_masks, negate=True)}""")
    cap = int(config["max_records_per_identifier"])
    capped = con.execute(f"""
        CREATE OR REPLACE TEMP TABLE identifier_groups AS
        SELECT kind, key, count(DISTINCT node) AS records, min(node) AS anchor
        FROM identifiers GROUP BY kind, key;
        SELECT count(*) FROM identifier_groups WHERE records > {cap}""").fetchone()[0]
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE edges AS
        SELECT DISTINCT i.node AS a, g.anchor AS b
        FROM identifiers i JOIN identifier_groups g USING (kind, key)
        WHERE g.records BETWEEN 2 AND {cap} AND i.node <> g.anchor""")
    con.execute("INSERT INTO edges SELECT b, a FROM edges")
    return capped


def _connected_components(con: duckdb.DuckDBPyConnection, max_iterations: int = 100) -> int:
    con.execute("CREATE OR REPLACE TEMP TABLE labels AS SELECT node, node AS label FROM nodes")
    for iteration in range(1, max_iterations + 1):
        con.execute("""
            CREATE OR REPLACE TEMP TABLE next_labels AS
            WITH hop AS (
                SELECT e.a AS node, min(l.label) AS label FROM edges e JOIN labels l ON l.node = e.b GROUP BY e.a)
            SELECT l.node, least(l.label, coalesce(h.label, l.label), j.label) AS label
            FROM labels l LEFT JOIN hop h USING (node) JOIN labels j ON j.node = l.label""")
        changed = con.execute("""SELECT count(*) FROM next_labels n JOIN labels l USING (node)
                                 WHERE n.label <> l.label""").fetchone()[0]
        con.execute("CREATE OR REPLACE TEMP TABLE labels AS SELECT * FROM next_labels")
        if changed == 0:
            return iteration
    raise StageError("resolve_identities", f"connected components did not converge in {max_iterations} iterations",
                     "lower max_records_per_identifier in warehouse/identity.yaml")


def _assign_stable_ids(con: duckdb.DuckDBPyConnection, run_id: str, result: IdentityResult) -> None:
    con.execute("""
        CREATE OR REPLACE TEMP TABLE components AS
        SELECT n.node, n.source, n.source_customer_id, l.label AS component, p.customer_id AS old_id
        FROM nodes n JOIN labels l USING (node)
        LEFT JOIN identity.node_customer p USING (source, source_customer_id)""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE claims AS
        SELECT c.component, c.old_id, count(*) AS records, any_value(i.seq) AS seq
        FROM components c JOIN identity.customer_ids i ON i.customer_id = c.old_id
        GROUP BY c.component, c.old_id;
        CREATE OR REPLACE TEMP TABLE won AS
        SELECT * FROM claims
        QUALIFY row_number() OVER (PARTITION BY old_id ORDER BY records DESC, component) = 1;
        CREATE OR REPLACE TEMP TABLE kept AS
        SELECT component, arg_min(old_id, seq) AS customer_id, list(old_id ORDER BY seq) AS won_ids
        FROM won GROUP BY component;""")
    next_seq = con.execute("SELECT coalesce(max(seq), 0) FROM identity.customer_ids").fetchone()[0]
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE assigned AS
        WITH fresh AS (
            SELECT DISTINCT component FROM components WHERE component NOT IN (SELECT component FROM kept))
        SELECT component, customer_id, false AS is_new FROM kept
        UNION ALL
        SELECT component, 'TW' || lpad(CAST({next_seq} + row_number() OVER (ORDER BY component) AS VARCHAR), 8, '0'),
               true
        FROM fresh""")
    con.execute(f"""
        INSERT INTO identity.customer_ids
        SELECT customer_id, CAST(substr(customer_id, 3) AS BIGINT), {dialect.quote(run_id)}
        FROM assigned WHERE is_new""")
    con.execute(f"""
        INSERT INTO ops.identity_changes
        SELECT {dialect.quote(run_id)}, 'merge', k.customer_id, list_filter(k.won_ids, lambda x: x <> k.customer_id),
               (SELECT count(*) FROM components c WHERE c.component = k.component)
        FROM kept k WHERE len(k.won_ids) > 1""")
    con.execute(f"""
        INSERT INTO ops.identity_changes
        SELECT {dialect.quote(run_id)}, 'split', a.customer_id, list(DISTINCT c.old_id ORDER BY c.old_id), count(*)
        FROM assigned a JOIN components c USING (component)
        WHERE c.old_id IS NOT NULL AND c.old_id <> a.customer_id
          AND c.old_id NOT IN (SELECT unnest(won_ids) FROM kept WHERE component = a.component)
        GROUP BY a.customer_id""")
    con.execute("""
        DELETE FROM identity.node_customer;
        INSERT INTO identity.node_customer
        SELECT c.source, c.source_customer_id, a.customer_id FROM components c JOIN assigned a USING (component)
        ORDER BY 1, 2""")
    counts = con.execute(f"""SELECT count(*) FILTER (WHERE is_new),
        (SELECT count(*) FROM ops.identity_changes WHERE run_id = {dialect.quote(run_id)} AND change = 'merge'),
        (SELECT count(*) FROM ops.identity_changes WHERE run_id = {dialect.quote(run_id)} AND change = 'split')
        FROM assigned""").fetchone()
    result.new_ids, result.merges, result.splits = counts


def _golden_records(con: duckdb.DuckDBPyConnection, config: dict) -> None:
    priority = ", ".join(f"({dialect.quote(s)}, {i})" for i, s in enumerate(config["source_priority"]))
    fields = ["email", "email_key", "phone", "phone_e164", "phone_masked_key", "name", "gender", "birth_date",
              "province", "city", "member_id", "email_opt_in", "sms_opt_in"]
    picks = ",\n".join(
        f"first({f} ORDER BY rank, updated_at DESC NULLS LAST, source_customer_id) FILTER (WHERE {f} IS NOT NULL) AS {f}"
        for f in fields)
    con.execute(f"""
        CREATE OR REPLACE TABLE identity.golden AS
        WITH ranked AS (
            SELECT m.customer_id, m.source AS node_source, r.* EXCLUDE (source, source_customer_id),
                   m.source_customer_id, coalesce(p.rank, 99) AS rank
            FROM identity.node_customer m
            LEFT JOIN stage.customer_records r USING (source, source_customer_id)
            LEFT JOIN (VALUES {priority}) AS p(source, rank) ON p.source = m.source)
        SELECT customer_id, {picks},
               min(registered_at) AS first_registered_at,
               first(node_source ORDER BY registered_at NULLS LAST, node_source) AS acquisition_source,
               list(DISTINCT node_source ORDER BY node_source) AS sources
        FROM ranked GROUP BY customer_id ORDER BY customer_id""")


def resolve_identities(con: duckdb.DuckDBPyConnection, run_id: str) -> IdentityResult:
    config = load_identity_config()
    result = IdentityResult()
    con.execute("BEGIN")
    result.capped_identifiers = _build_edges(con, config)
    result.iterations = _connected_components(con)
    _assign_stable_ids(con, run_id, result)
    failpoint("resolve_identities")
    _golden_records(con, config)
    con.execute("COMMIT")
    result.source_customers, result.customers = con.execute(
        "SELECT count(*), count(DISTINCT customer_id) FROM identity.node_customer").fetchone()
    big = con.execute(f"""SELECT customer_id, count(*) FROM identity.node_customer GROUP BY 1
                          HAVING count(*) > {int(config['max_cluster_size'])}""").fetchall()
    result.warnings += [f"customer {cid} has {n} source records (over max_cluster_size)" for cid, n in big]
    if result.capped_identifiers:
        result.warnings.append(f"{result.capped_identifiers} identifier values are shared by more than "
                               f"{config['max_records_per_identifier']} source customers and did not link")
    return result

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

| model | a trained splink model (``warehouse/identity_model.py``) scores the pair at least ``accept_probability`` and it agrees on a name, birth date, phone or email local part |

Blocklisted placeholder values never link, and an identifier shared by more than
``max_records_per_identifier`` source customers stops linking.  Each record links to the first
record sharing its value.  The kinds are applied in the order of the table; where a kind would
give one customer more than ``max_member_ids_per_customer`` member ids or ``max_cluster_size``
records, it merges only what is unambiguous: the customers holding a member id stay apart, and
those holding none join the one member's customer they link to (or each other).  Scored pairs
left apart and links a limit stopped go to ``identity.review``.  Connected components
are computed set-based by iterated min-label propagation in SQL (a loop over iterations, not
rows), per link kind on the customers so far.

Stable ids: a component keeps the id its records had; when components merge the oldest id
survives; when one splits, the part with most records keeps the id and the others get new
ids.  Both are logged in ``ops.identity_changes``.

Only what changed is resolved again.  A customer's outcome depends only on the records of its
connected component over every link (those a limit stops too), so after the first run the links
are followed only from the source customers that changed (a record from a newer load, an id that
appeared or went) and from every record sharing an identifier value with them before or after
the change (``identity.resolved_keys`` keeps each record's values as last resolved, which also
covers a value crossing ``max_records_per_identifier``).  The rest keep their customers, links
and review pairs.  Everything is resolved again on the first run, with a model, after an
erasure, when identity.yaml, this module or the DuckDB version changed, or when the customer
records were staged again from the whole lake; either way the outcome is the one a resolution of
everything gives (tests/warehouse/test_identity_incremental.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import duckdb
import yaml

from warehouse import dialect, identity_model
from warehouse.faults import failpoint
from warehouse.errors import StageError
from warehouse.workdb import staged_files


# Links are applied in this order, strongest first; each kind may only merge what respects the
# limits (member ids per customer, records per customer) after the kinds before it.
LINK_KINDS = ("member_id", "email", "phone+name", "phone+birth date", "name+birth date+city",
              "masked phone+name", "model")
# Each record's identifier values, as ``identity.resolved_keys`` keeps them: hashed (the values are
# personal data, and 11M rows of two hashes at 3M records are written in 1.0 s, 2.3 s with the
# source ids as text); a collision only makes a run resolve more records again.
RECORD_KEYS = """SELECT hash(n.source, n.source_customer_id) AS record_hash, hash(i.kind, i.key) AS key_hash
                 FROM nodes n JOIN identifiers i USING (node)"""
# Fields a model link may rest on; a masked phone and the city only ever support one.
EVIDENCE = ["name", "birth date", "phone", "email local part"]


@dataclass
class IdentityResult:
    source_customers: int = 0
    customers: int = 0
    new_ids: int = 0
    merges: int = 0
    splits: int = 0
    iterations: int = 0
    capped_identifiers: int = 0
    model_links: int = 0          # pairs the model accepted (most confirm what the rules linked)
    merged_by: dict[str, int] = field(default_factory=dict)  # customers absorbed by each link kind
    pairs_limited: int = 0        # pairs in identity.review that a limit left apart
    review_pairs: int = 0
    resolved: int = 0             # source customers resolved this run (all of them when not incremental)
    incremental: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return self.customers


def load_identity_config() -> dict:
    return yaml.safe_load(files("warehouse").joinpath("identity.yaml").read_text(encoding="utf-8"))


def _build_nodes(con: duckdb.DuckDBPyConnection, config: dict) -> None:
    """``nodes``: every source customer (with a record or only orders/events/cases) numbered;
    ``node_members``: their usable member ids."""
    # Staging keeps one record per source customer: only the ids known from orders, events or
    # cases alone need their duplicates removed (a UNION of all four took 1.6 to 1.8 s at the
    # issue's 3M records and 79M rows, this 1.2 to 1.3 s, the same nodes).
    con.execute("""
        CREATE OR REPLACE TEMP TABLE nodes AS
        WITH without_record AS (
            SELECT DISTINCT source, source_customer_id FROM (
                SELECT source, source_customer_id FROM stage.orders WHERE source_customer_id IS NOT NULL
                UNION ALL SELECT source, source_customer_id FROM stage.events WHERE source_customer_id IS NOT NULL
                UNION ALL SELECT source, source_customer_id FROM stage.interactions WHERE source_customer_id IS NOT NULL)
            ANTI JOIN stage.customer_records USING (source, source_customer_id))
        SELECT row_number() OVER (ORDER BY source, source_customer_id) AS node, source, source_customer_id
        FROM (SELECT source, source_customer_id FROM stage.customer_records UNION ALL SELECT * FROM without_record)
        """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE node_members AS
        SELECT n.node, r.member_id FROM stage.customer_records r JOIN nodes n USING (source, source_customer_id)
        WHERE r.member_id IS NOT NULL AND {dialect.is_in('r.member_id', config['blocklist']['member_id'], negate=True)}
        """)


def _rule_links(con: duckdb.DuckDBPyConnection, config: dict) -> int:
    """``links``: (a, b, kind, probability) from the deterministic rules, each record to the first
    record sharing its identifier value; returns how many identifier values were over the cap."""
    block = config["blocklist"]
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
              AND {dialect.is_in('phone_masked_key', identity_model.blocked_masks(config), negate=True)}""")
    cap = int(config["max_records_per_identifier"])
    # A record has one row per kind of identifier (one customer record per node, one branch per
    # kind), so count(*) counts the records; count(DISTINCT node) cost three times as much.
    capped = con.execute(f"""
        CREATE OR REPLACE TEMP TABLE identifier_groups AS
        SELECT kind, key, count(*) AS records, min(node) AS anchor
        FROM identifiers GROUP BY kind, key;
        SELECT count(*) FROM identifier_groups WHERE records > {cap}""").fetchall()[0][0]
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE links AS
        SELECT DISTINCT i.node AS a, g.anchor AS b, i.kind, CAST(NULL AS DOUBLE) AS probability
        FROM identifiers i JOIN identifier_groups g USING (kind, key)
        WHERE g.records BETWEEN 2 AND {cap} AND i.node <> g.anchor""")
    return capped


def _model_links(con: duckdb.DuckDBPyConnection, config: dict, model: Path, memory_limit: str | None,
                 result: IdentityResult) -> None:
    """Scores candidate pairs with the trained splink model.  A pair is a ``model`` link when its
    probability reaches ``accept_probability`` *and* it agrees on an evidence field (not only a
    masked phone or the city); the other scored pairs become review candidates."""
    settings = config["model"]
    records = identity_model.comparison_records(con, config)
    pairs = identity_model.score_pairs(records, model, float(settings["review_probability"]), memory_limit)
    con.register("model_records", records)
    con.register("model_pairs", pairs)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE scored AS
        WITH compared AS (
            SELECT p.a, p.b, p.probability,
                   list_filter([CASE WHEN ra.name_key = rb.name_key THEN 'name' END,
                                CASE WHEN ra.birth_date = rb.birth_date THEN 'birth date' END,
                                CASE WHEN ra.phone_e164 = rb.phone_e164 THEN 'phone'
                                     WHEN ra.phone_masked_key = rb.phone_masked_key
                                      AND (ra.phone_e164 IS NULL OR rb.phone_e164 IS NULL) THEN 'masked phone' END,
                                CASE WHEN ra.email_local = rb.email_local THEN 'email local part' END,
                                CASE WHEN ra.city = rb.city THEN 'city' END], lambda x: x IS NOT NULL) AS agreeing
            FROM model_pairs p
            JOIN model_records ra ON ra.unique_id = p.a JOIN model_records rb ON rb.unique_id = p.b)
        SELECT *, list_has_any(agreeing, [{', '.join(dialect.quote(e) for e in EVIDENCE)}]) AS has_evidence,
               has_evidence AND probability >= {float(settings['accept_probability'])} AS accepted
        FROM compared;
        INSERT INTO links SELECT a, b, 'model', probability FROM scored WHERE accepted""")
    con.unregister("model_records")
    con.unregister("model_pairs")
    result.model_links = con.execute("SELECT count(*) FROM links WHERE kind = 'model'").fetchall()[0][0]


def _resolution_definition(config: dict) -> str:
    """A digest of the rules (identity.yaml), of this module and of the DuckDB version (whose
    ``hash`` made ``identity.resolved_keys``): when any changes, the next run resolves everything."""
    text = json.dumps(config, sort_keys=True, default=str) + Path(__file__).read_text(encoding="utf-8")
    return hashlib.sha256(f"{text}\nduckdb {duckdb.__version__}".encode()).hexdigest()[:16]


def _limit_to_affected(con: duckdb.DuckDBPyConnection, through: int) -> None:
    """Keep in ``nodes``, ``node_members`` and ``links`` only the source customers whose outcome
    can differ from the last resolution's; ``changed``: those whose records changed since (newer
    than load ``through``, new, or gone), ``scope``: the source customers whose rows in
    ``identity.node_customer``, ``identity.links`` and ``identity.review`` this run rewrites.

    From the changed records and the records sharing one of their identifier values before or
    after the change, the links (made or stopped by a limit) are followed until nothing new is
    reached (a loop over steps, not rows).  What is left out is whole components of links that
    kept every record and value they had, so the last run's customers there stand: each was
    joined by links, and a link whose value changed has both ends among the records followed."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE changed AS
        SELECT source, source_customer_id FROM stage.customer_records WHERE _load_id > {through}
        UNION
        SELECT source, source_customer_id FROM nodes ANTI JOIN identity.node_customer USING (source, source_customer_id)
        UNION
        SELECT source, source_customer_id FROM identity.node_customer ANTI JOIN nodes USING (source, source_customer_id);
        -- The changed records' values now (and those of any record whose hash collides with theirs).
        CREATE OR REPLACE TEMP TABLE changed_keys AS {RECORD_KEYS}
        WHERE record_hash IN (SELECT hash(source, source_customer_id) FROM changed);
        CREATE OR REPLACE TEMP TABLE touched AS  -- the changed records' identifier values, before and after
        SELECT key_hash FROM identity.resolved_keys WHERE record_hash IN (SELECT hash(source, source_customer_id) FROM changed)
        UNION
        SELECT key_hash FROM changed_keys;
        CREATE OR REPLACE TEMP TABLE frontier AS
        SELECT node FROM nodes SEMI JOIN changed USING (source, source_customer_id)
        UNION
        SELECT node FROM identifiers WHERE hash(kind, key) IN (SELECT key_hash FROM touched);
        CREATE OR REPLACE TEMP TABLE affected AS SELECT node FROM frontier""")
    reached = True
    while reached:  # each step adds records not reached before: it ends
        reached = con.execute("""
            CREATE OR REPLACE TEMP TABLE frontier AS
            SELECT node FROM (
                SELECT l.b AS node FROM links l SEMI JOIN frontier f ON f.node = l.a
                UNION
                SELECT l.a FROM links l SEMI JOIN frontier f ON f.node = l.b)
            ANTI JOIN affected USING (node);
            INSERT INTO affected SELECT node FROM frontier;
            SELECT count(*) FROM frontier""").fetchall()[0][0]
    con.execute("""
        CREATE OR REPLACE TEMP TABLE scope AS
        SELECT source, source_customer_id FROM nodes SEMI JOIN affected USING (node)
        UNION ALL
        SELECT source, source_customer_id FROM changed ANTI JOIN nodes USING (source, source_customer_id);  -- gone
        CREATE OR REPLACE TEMP TABLE nodes AS SELECT * FROM nodes SEMI JOIN affected USING (node);
        CREATE OR REPLACE TEMP TABLE node_members AS SELECT * FROM node_members SEMI JOIN affected USING (node);
        CREATE OR REPLACE TEMP TABLE links AS SELECT * FROM links SEMI JOIN affected ON affected.node = links.a""")


def _remember_resolution(con: duckdb.DuckDBPyConnection, definition: str, incremental: bool) -> None:
    """``identity.resolved`` and ``identity.resolved_keys`` for the next run (after everything was
    resolved: all of them; after an incremental run: the changed records' values, and those of any
    record whose hash equals one of theirs, so that a collision loses nothing)."""
    if incremental:
        con.execute("""
            DELETE FROM identity.resolved_keys WHERE record_hash IN (SELECT hash(source, source_customer_id) FROM changed);
            INSERT INTO identity.resolved_keys SELECT * FROM changed_keys""")
    else:
        con.execute(f"CREATE OR REPLACE TABLE identity.resolved_keys AS {RECORD_KEYS}")
    _remember_built(con, "identity.resolved", definition)


def _components(con: duckdb.DuckDBPyConnection, edges: str, out: str, max_iterations: int = 100) -> int:
    """``out(node, root)``: the smallest node of each connected component of the symmetric edge
    table ``edges(a, b)``, by iterated min-label propagation (a loop over iterations, not rows)."""
    # Each node starts from the smallest of itself and its neighbours (the first hop).
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {out} AS
                    SELECT a AS node, least(a, min(b)) AS root FROM {edges} GROUP BY a""")
    for iteration in range(1, max_iterations + 1):
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE next_comp AS
            WITH hop AS (SELECT e.a AS node, min(c.root) AS root FROM {edges} e JOIN {out} c ON c.node = e.b GROUP BY e.a)
            SELECT c.node, least(c.root, h.root, j.root) AS root, c.root AS was
            FROM {out} c JOIN hop h USING (node) JOIN {out} j ON j.node = c.root""")
        changed = con.execute("SELECT count(*) FROM next_comp WHERE root <> was").fetchall()[0][0]
        con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT node, root FROM next_comp")
        if changed == 0:
            return iteration
    raise StageError("resolve_identities", f"connected components did not converge in {max_iterations} iterations",
                     "lower max_records_per_identifier in warehouse/identity.yaml")


def _link_in_order(con: duckdb.DuckDBPyConnection, config: dict, result: IdentityResult) -> None:
    """``labels(node, label)``: each link kind in ``LINK_KINDS`` order merges the customers it
    connects.  Where the merged customer would hold more than ``max_member_ids_per_customer``
    member ids or more than ``max_cluster_size`` records, the merge is made only as far as it is
    unambiguous (:func:`_merge_within_limits`); the links left apart are kept in ``rejected``
    with the reason."""
    max_members, max_size = int(config["max_member_ids_per_customer"]), int(config["max_cluster_size"])
    con.execute("""
        CREATE OR REPLACE TEMP TABLE labels AS SELECT node, node AS label FROM nodes;
        CREATE OR REPLACE TEMP TABLE rejected (a BIGINT, b BIGINT, kind VARCHAR, probability DOUBLE, reason VARCHAR)""")
    for kind in LINK_KINDS:
        pending = con.execute(f"""
            CREATE OR REPLACE TEMP TABLE crossing AS  -- this kind's links between customers so far
            SELECT l.a, l.b, l.probability, la.label AS label_a, lb.label AS label_b
            FROM links l JOIN labels la ON la.node = l.a JOIN labels lb ON lb.node = l.b
            WHERE l.kind = {dialect.quote(kind)} AND la.label <> lb.label;
            CREATE OR REPLACE TEMP TABLE layer AS SELECT DISTINCT label_a AS a, label_b AS b FROM crossing;
            INSERT INTO layer SELECT b, a FROM layer;
            SELECT count(*) FROM layer""").fetchall()[0][0]
        if not pending:
            continue
        result.iterations += _components(con, "layer", "merged")
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE linked AS  -- the records of the customers this kind links
            SELECT c.root, l.label, m.member_id
            FROM labels l JOIN merged c ON c.node = l.label LEFT JOIN node_members m ON m.node = l.node;
            CREATE OR REPLACE TEMP TABLE over_limit AS
            SELECT root, count(*) AS records, count(DISTINCT member_id) AS member_ids FROM linked
            GROUP BY root HAVING count(*) > {max_size} OR count(DISTINCT member_id) > {max_members}""")
        result.iterations += _merge_within_limits(con, max_size)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE relabel AS
            SELECT node AS label, root FROM merged WHERE root NOT IN (SELECT root FROM over_limit)
            UNION ALL
            SELECT label, root FROM within_limits;
            INSERT INTO rejected
            SELECT x.a, x.b, {dialect.quote(kind)}, x.probability,
                   CASE WHEN o.member_ids > {max_members} THEN 'would give one customer ' || o.member_ids || ' member ids'
                        ELSE 'would give one customer ' || o.records || ' records' END
            FROM crossing x JOIN within_limits wa ON wa.label = x.label_a JOIN within_limits wb ON wb.label = x.label_b
            JOIN merged c ON c.node = x.label_a JOIN over_limit o ON o.root = c.root
            WHERE wa.root <> wb.root;
            UPDATE labels SET label = r.root FROM relabel r WHERE r.label = labels.label AND r.root <> r.label""")
        result.merged_by[kind] = con.execute("SELECT count(*) FROM relabel WHERE label <> root").fetchall()[0][0]


def _merge_within_limits(con: duckdb.DuckDBPyConnection, max_size: int) -> int:
    """``within_limits(label, root)`` for the customers of the ``over_limit`` components of this
    kind's ``layer``: the customers holding a member id stay apart; those holding none merge with
    each other along the layer, and such a group joins a member's customer when it links to that
    one only (a group linked to two members' customers could be either person: it stays apart).
    A customer that would then hold more than ``max_size`` records is not made: its memberless
    groups stay on their own, or apart altogether if they too are too large.  Returns the
    iterations its connected components took."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE held AS
        SELECT label, count(*) AS records, count(member_id) > 0 AS member FROM linked SEMI JOIN over_limit USING (root)
        GROUP BY label;
        CREATE OR REPLACE TEMP TABLE memberless_layer AS
        SELECT y.a, y.b FROM layer y JOIN held ha ON ha.label = y.a JOIN held hb ON hb.label = y.b
        WHERE NOT ha.member AND NOT hb.member""")
    iterations = _components(con, "memberless_layer", "memberless_comp")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE memberless AS
        SELECT h.label, coalesce(c.root, h.label) AS grp FROM held h LEFT JOIN memberless_comp c ON c.node = h.label
        WHERE NOT h.member;
        CREATE OR REPLACE TEMP TABLE joins_member AS
        SELECT g.grp, min(y.b) AS root
        FROM memberless g JOIN layer y ON y.a = g.label JOIN held h ON h.label = y.b AND h.member
        GROUP BY g.grp HAVING count(DISTINCT y.b) = 1;
        CREATE OR REPLACE TEMP TABLE within_limits AS
        WITH proposed AS (
            SELECT h.label, h.records, coalesce(g.grp, h.label) AS grp, coalesce(j.root, g.grp, h.label) AS root
            FROM held h LEFT JOIN memberless g USING (label) LEFT JOIN joins_member j USING (grp))
        SELECT label, CASE WHEN sum(records) OVER (PARTITION BY root) <= {max_size} THEN root
                           WHEN sum(records) OVER (PARTITION BY grp) <= {max_size} THEN grp
                           ELSE label END AS root
        FROM proposed""")
    return iterations


def _assign_stable_ids(con: duckdb.DuckDBPyConnection, run_id: str, result: IdentityResult) -> None:
    """Customer ids for the components of ``labels``; ``identity.node_customer`` rewritten where
    it changed (for the source customers in ``scope`` only, when resolving incrementally)."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE components AS
        SELECT n.node, n.source, n.source_customer_id, l.label AS component, p.customer_id AS old_id
        FROM nodes n JOIN labels l USING (node)
        LEFT JOIN identity.node_customer p USING (source, source_customer_id)""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE claims AS
        SELECT c.component, c.old_id, c.records, i.seq
        FROM (SELECT component, old_id, count(*) AS records FROM components WHERE old_id IS NOT NULL GROUP BY ALL) c
        JOIN identity.customer_ids i ON i.customer_id = c.old_id;
        CREATE OR REPLACE TEMP TABLE won AS
        SELECT * FROM claims
        QUALIFY row_number() OVER (PARTITION BY old_id ORDER BY records DESC, component) = 1;
        -- Most components won one id: only those that won several are ordered (an ordered list
        -- per component took 1.4 s at 1M customers, 0.2 s so).
        CREATE OR REPLACE TEMP TABLE kept AS
        WITH shared AS (SELECT component FROM won GROUP BY component HAVING count(*) > 1)
        SELECT component, old_id AS customer_id, [old_id] AS won_ids FROM won ANTI JOIN shared USING (component)
        UNION ALL
        SELECT component, arg_min(old_id, seq), list(old_id ORDER BY seq)
        FROM won SEMI JOIN shared USING (component) GROUP BY component;""")
    next_seq = con.execute("SELECT coalesce(max(seq), 0) FROM identity.customer_ids").fetchall()[0][0]
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
    scoped = "SEMI JOIN scope USING (source, source_customer_id)" if result.incremental else ""
    # Only the rows whose customer changed are rewritten: deleting and inserting all 1.65M rows of
    # this keyed table at 1M customers made the run's commit take 21 s on a night that changed few.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE node_ids AS
        SELECT c.node, c.source, c.source_customer_id, a.customer_id FROM components c JOIN assigned a USING (component);
        CREATE OR REPLACE TEMP TABLE nodes_left AS
        SELECT * FROM identity.node_customer {scoped}
        ANTI JOIN node_ids USING (source, source_customer_id, customer_id);
        CREATE OR REPLACE TEMP TABLE nodes_joined AS
        SELECT source, source_customer_id, customer_id
        FROM node_ids ANTI JOIN identity.node_customer USING (source, source_customer_id, customer_id);
        CREATE OR REPLACE TEMP TABLE customers_moved AS
        SELECT customer_id FROM nodes_left UNION SELECT customer_id FROM nodes_joined;
        DELETE FROM identity.node_customer
        WHERE (source, source_customer_id) IN (SELECT source, source_customer_id FROM nodes_left);
        INSERT INTO identity.node_customer SELECT * FROM nodes_joined
        ORDER BY 1, 2""")
    counts = con.execute(f"""SELECT count(*) FILTER (WHERE is_new),
        (SELECT count(*) FROM ops.identity_changes WHERE run_id = {dialect.quote(run_id)} AND change = 'merge'),
        (SELECT count(*) FROM ops.identity_changes WHERE run_id = {dialect.quote(run_id)} AND change = 'split')
        FROM assigned""").fetchall()[0]
    result.new_ids, result.merges, result.splits = counts


def _golden_sql(config: dict, customers: str | None = None) -> str:
    """The golden records of the customers in ``customers`` (a relation of customer_id; all if None)."""
    priority = ", ".join(f"({dialect.quote(s)}, {i})" for i, s in enumerate(config["source_priority"]))
    fields = ["email", "email_key", "phone", "phone_e164", "phone_masked_key", "name", "gender", "birth_date",
              "province", "city", "member_id", "email_opt_in", "sms_opt_in"]
    # Each field from the first record holding it, in ``pick_order``: arg_min over a position is
    # a plain aggregate (first(... ORDER BY ...) sorted every customer's records once per field).
    # source_customer_id, then the source, break ties.  The acquisition source is the first
    # registered record's (a struct orders as its fields do; no record's registration time: last).
    picks = ",\n".join(f"arg_min({f}, pick_order) FILTER (WHERE {f} IS NOT NULL) AS {f}" for f in fields)
    # A customer of one source record (most of them) takes it as it is: no ordering, no aggregate.
    # Only the columns read are carried, and each customer's records are counted by a GROUP BY:
    # a window count carried every column of every record (the JSON attributes too) through a
    # sort: 10.0 s became 8.5 at the data (and 6.6 without sorting the result, below).
    only = f"SEMI JOIN {customers} USING (customer_id)" if customers else ""
    return f"""
        WITH ranked AS (
            SELECT m.customer_id, m.source AS node_source, {", ".join(f"r.{f}" for f in fields)},
                   r.registered_at, r.updated_at, m.source_customer_id, coalesce(p.rank, 99) AS rank, c.records
            FROM identity.node_customer m {only}
            JOIN (SELECT customer_id, count(*) AS records FROM identity.node_customer {only} GROUP BY customer_id) c
                USING (customer_id)
            LEFT JOIN stage.customer_records r USING (source, source_customer_id)
            LEFT JOIN (VALUES {priority}) AS p(source, rank) ON p.source = m.source),
        placed AS (
            SELECT *,
                   row_number() OVER (PARTITION BY customer_id ORDER BY rank, updated_at DESC NULLS LAST,
                                                                        source_customer_id, node_source) AS pick_order
            FROM ranked WHERE records > 1)
        SELECT customer_id, {picks},
               min(registered_at) AS first_registered_at,
               arg_min(node_source, {{'registered_at': coalesce(registered_at, 'infinity'::TIMESTAMPTZ),
                                      'source': node_source, 'id': source_customer_id}}) AS acquisition_source,
               list(DISTINCT node_source ORDER BY node_source) AS sources
        FROM placed GROUP BY customer_id
        UNION ALL
        SELECT customer_id, {", ".join(fields)}, registered_at, node_source, [node_source]
        FROM ranked WHERE records = 1"""


def _golden_records(con: duckdb.DuckDBPyConnection, config: dict) -> None:
    """``identity.golden``: one record per customer from their source records.

    When the customer records were only added to since the last build (``identity.golden_built``
    keeps the files they were staged from, see ``stage.staged_files``), only the customers whose
    source ids moved this run (``customers_moved``, from :func:`_assign_stable_ids`) or with a
    record from a newer load are built again; otherwise (the
    first run, a changed definition, a lake file changed or removed) all of them.
    """
    definition = hashlib.sha256(_golden_sql(config).encode()).hexdigest()[:16]
    through = _built_through(con, "identity.golden_built", definition)
    if through is not None:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE golden_customers AS
            SELECT customer_id FROM customers_moved
            UNION
            SELECT m.customer_id FROM identity.node_customer m JOIN stage.customer_records r USING (source, source_customer_id)
            WHERE r._load_id > {through};
            DELETE FROM identity.golden WHERE customer_id IN (SELECT customer_id FROM golden_customers);
            INSERT INTO identity.golden {_golden_sql(config, "golden_customers")}""")
    else:
        # In no particular order: sorting the 1.7M golden records at the data took 1.9 of
        # 8.5 s, and every reader joins them (publishing sorts the customers it publishes).
        con.execute(f"CREATE OR REPLACE TABLE identity.golden AS {_golden_sql(config)}")
    _remember_built(con, "identity.golden_built", definition)


def _built_through(con: duckdb.DuckDBPyConnection, table: str, definition: str) -> int | None:
    """The newest load of the customer records that ``table`` (``identity.golden_built`` or
    ``identity.resolved``) says was last built with ``definition``, when the records were only
    added to since (every file they were staged from then is still staged, unchanged); else None."""
    built = con.execute(f"SELECT records_through, records_files FROM {table} WHERE definition = ?",
                        [definition]).fetchall()
    if built and set(built[0][1]) <= set(staged_files(con, "customer_records")):
        return built[0][0]
    return None


def _remember_built(con: duckdb.DuckDBPyConnection, table: str, definition: str) -> None:
    con.execute(f"""DELETE FROM {table};
                    INSERT INTO {table}
                    SELECT ?, coalesce((SELECT max(_load_id) FROM stage.customer_records), -1), ?""",
                [definition, staged_files(con, "customer_records")])


def _record_links(con: duckdb.DuckDBPyConnection, run_id: str, result: IdentityResult) -> None:
    """``identity.links``: the links inside each customer (what explain shows); ``identity.review``:
    scored pairs left apart (below the acceptance probability, or resting on support fields only)
    and links a limit rejected, between records that ended up in different customers.  When
    resolving incrementally, the rows of the source customers in ``scope`` are replaced, and every
    review row takes this run's id.  Links are stored in no particular order: explain sorts the few
    of one customer, and sorting all 2.9M at 1M customers took 1 s."""
    ends = "JOIN node_ids na ON na.node = x.a JOIN node_ids nb ON nb.node = x.b"  # the node's record and customer
    links = f"""
        SELECT na.customer_id, na.source AS source_a, na.source_customer_id AS source_customer_id_a,
               nb.source AS source_b, nb.source_customer_id AS source_customer_id_b, x.kind, x.probability
        FROM links x {ends}
        WHERE na.customer_id = nb.customer_id"""
    if result.incremental:
        con.execute(f"""
            DELETE FROM identity.links
            WHERE (source_a, source_customer_id_a) IN (SELECT source, source_customer_id FROM scope);
            INSERT INTO identity.links {links}""")
    else:
        con.execute(f"CREATE OR REPLACE TABLE identity.links AS {links}")
    kept = f"""
            UNION ALL
            SELECT * REPLACE ({dialect.quote(run_id)} AS run_id) FROM identity.review r
            ANTI JOIN scope s ON s.source = r.source_a AND s.source_customer_id = r.source_customer_id_a""" \
        if result.incremental else ""
    con.execute(f"""
        CREATE OR REPLACE TABLE identity.review AS
        WITH candidates AS (
            SELECT a, b, probability, agreeing,
                   CASE WHEN has_evidence THEN 'below the acceptance probability'
                        ELSE 'agrees on masked phone or city only' END AS reason, {len(LINK_KINDS)} AS strength
            FROM scored WHERE NOT accepted
            UNION ALL  -- a pair several kinds would have linked: the strongest kind's reason
            SELECT r.a, r.b, r.probability, NULL, r.kind || ' link not made: ' || r.reason,
                   list_position([{', '.join(dialect.quote(k) for k in LINK_KINDS)}], r.kind)
            FROM rejected r)
        SELECT {dialect.quote(run_id)} AS run_id, na.customer_id AS customer_id_a, na.source AS source_a,
               na.source_customer_id AS source_customer_id_a, nb.customer_id AS customer_id_b, nb.source AS source_b,
               nb.source_customer_id AS source_customer_id_b, x.probability, x.agreeing, x.reason
        FROM candidates x {ends}
        WHERE na.customer_id <> nb.customer_id
        QUALIFY row_number() OVER (PARTITION BY x.a, x.b ORDER BY x.probability DESC NULLS LAST, x.strength) = 1
        {kept}
        ORDER BY probability DESC NULLS LAST, customer_id_a, customer_id_b""")
    result.review_pairs, result.pairs_limited = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE reason LIKE '% link not made: %') FROM identity.review").fetchall()[0]


def train_model(con: duckdb.DuckDBPyConnection, out: Path, memory_limit: str | None = None) -> dict:
    """Train the splink model on the staged customer records, the rules' customers as labels,
    and save it at ``out``."""
    config = load_identity_config()
    _build_nodes(con, config)
    _rule_links(con, config)
    _link_in_order(con, config, IdentityResult())
    records = identity_model.comparison_records(con, config)
    con.register("model_records", records)
    labelled = con.sql("""SELECT r.*, l.label AS rule_customer FROM model_records r
                          JOIN labels l ON l.node = r.unique_id ORDER BY r.unique_id""").to_arrow_table()
    con.unregister("model_records")
    return identity_model.train(labelled, out, memory_limit)


def resolve_identities(con: duckdb.DuckDBPyConnection, run_id: str, model: Path | None = None,
                       memory_limit: str | None = None) -> IdentityResult:
    """Link source customers into customers (``model``: a trained splink model; without one only
    the deterministic rules link)."""
    config = load_identity_config()
    result = IdentityResult()
    con.execute("""CREATE OR REPLACE TEMP TABLE scored (a BIGINT, b BIGINT, probability DOUBLE, agreeing VARCHAR[],
                                                        has_evidence BOOLEAN, accepted BOOLEAN)""")
    con.execute("BEGIN")
    _build_nodes(con, config)
    result.capped_identifiers = _rule_links(con, config)
    definition = _resolution_definition(config)
    if model is not None:
        _model_links(con, config, model, memory_limit, result)
    elif (through := _built_through(con, "identity.resolved", definition)) is not None:
        _limit_to_affected(con, through)
        result.incremental = True
    result.resolved = con.execute("SELECT count(*) FROM nodes").fetchall()[0][0]
    _link_in_order(con, config, result)
    _assign_stable_ids(con, run_id, result)
    failpoint("resolve_identities")
    _record_links(con, run_id, result)
    _golden_records(con, config)
    if model is None:
        _remember_resolution(con, definition, result.incremental)
    else:  # the model's pairs reach across any limit on what is resolved: the next run resolves everything
        con.execute("DELETE FROM identity.resolved")
    con.execute("COMMIT")
    result.source_customers, result.customers = con.execute(
        "SELECT count(*), count(DISTINCT customer_id) FROM identity.node_customer").fetchall()[0]
    if result.capped_identifiers:
        result.warnings.append(f"{result.capped_identifiers} identifier values are shared by more than "
                               f"{config['max_records_per_identifier']} source customers and did not link")
    if result.pairs_limited:
        result.warnings.append(f"{result.pairs_limited} pairs of records were left apart because linking them would "
                               "exceed max_member_ids_per_customer or max_cluster_size (see ops.identity_review)")
    return result

"""``tagwright explain CUSTOMER_ID``: why a customer has the tags it has.

Reads only the published warehouse (so it works during a run): the customer's source records,
the identifiers they carried and the links (rule or model score) that joined them, the feature values of the last run, every tag with the rule
case that gave its value (the case is found by evaluating the rule's conditions on the
published feature row), and the overrides that replaced a computed value.
"""

from __future__ import annotations

import duckdb

from rules.compiler import DIALECT
from rules.kinds import AllMatches, Computed, FirstMatch, Manual
from rules.model import Tag, load_rules
from warehouse.settings import Settings

Section = tuple[str, list[str], list[tuple]]


def _why(tag: Tag, case_index: int | None) -> str:
    rule = tag.rule
    if isinstance(rule, AllMatches):
        return "every case that holds: " + "; ".join(f"{c.value} when {c.when.sql(dialect=DIALECT)}" for c in rule.cases)
    if isinstance(rule, FirstMatch):
        if not case_index:
            return f"no case holds: fallback {rule.fallback!r}"
        case = rule.cases[case_index - 1]
        return f"case {case_index}: {case.when.sql(dialect=DIALECT)}"
    if isinstance(rule, Computed):
        return f"value of {rule.value.sql(dialect=DIALECT)}"
    if isinstance(rule, Manual):
        return "manual tag"
    return ""


def explain_customer(settings: Settings, customer_id: str) -> list[Section]:
    """Tables describing ``customer_id``; LookupError when the warehouse does not know it."""
    if not settings.warehouse.exists():
        raise LookupError(f"no warehouse at {settings.warehouse}; run `tagwright run` first")
    rules = load_rules()
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        sources = con.execute("""SELECT source, source_customer_id, has_member_id, has_email, has_phone,
                                        has_masked_phone, has_name
                                 FROM analytics.customer_source_ids WHERE customer_id = ? ORDER BY 1, 2""",
                              [customer_id]).fetchall()
        if not sources:
            raise LookupError(f"no customer {customer_id!r} in {settings.warehouse}")
        links = con.execute("""SELECT source_a || ':' || source_customer_id_a, source_b || ':' || source_customer_id_b,
                                      kind, round(probability, 4)
                               FROM analytics.customer_links WHERE customer_id = ? ORDER BY 1, 2, 3""",
                            [customer_id]).fetchall()
        cursor = con.execute("SELECT * FROM analytics.customer_features WHERE customer_id = ?", [customer_id])
        features = list(zip([d[0] for d in cursor.description], cursor.fetchone() or []))
        tags = con.execute("SELECT tag, value, score, as_of FROM analytics.customer_tags WHERE customer_id = ?"
                           " ORDER BY tag", [customer_id]).fetchall()
        overrides = {r[0]: r[1:] for r in con.execute(
            """SELECT tag, override_id, author, reason FROM analytics.tag_overrides
               WHERE customer_id = ? AND in_force""", [customer_id]).fetchall()}
        fired = _fired_cases(con, customer_id, [rules.tags[t] for t, *_ in tags if t in rules.tags])
        override_rows = con.execute("""SELECT override_id, tag, coalesce(value, '(removed)'), reason, author,
                                              effective_from, expires_on, in_force
                                       FROM analytics.tag_overrides WHERE customer_id = ? ORDER BY override_id""",
                                    [customer_id]).fetchall()
    rows = []
    for tag_id, value, score, as_of in tags:
        if tag_id in overrides:
            oid, author, reason = overrides[tag_id]
            why = f"override {oid} by {author}: {reason}"
        elif tag_id in rules.tags:
            why = _why(rules.tags[tag_id], fired.get(tag_id))
        else:
            why = "(tag no longer in rules/)"
        rows.append((tag_id, value, "" if score is None else round(score, 4), as_of, why))
    sections: list[Section] = [
        (f"source records of {customer_id} and the identifiers they carry",
         ["source", "id", "member id", "email", "phone", "masked phone", "name"], sources)]
    if links:
        sections.append(("what linked them (a rule's identifier, or the model's probability)",
                         ["record", "linked to", "by", "probability"], links))
    if features:
        sections.append(("features", ["feature", "value"], features))
    sections.append(("tags", ["tag", "value", "score", "as_of", "why"], rows))
    if override_rows:
        sections.append(("overrides", ["id", "tag", "value", "reason", "author", "from", "expires", "in force"],
                         override_rows))
    return sections


def _fired_cases(con: duckdb.DuckDBPyConnection, customer_id: str, tags: list[Tag]) -> dict[str, int]:
    """The 1-based case that fired per first-match tag (0: fallback), from the published features."""
    first_match = [t for t in tags if isinstance(t.rule, FirstMatch) and not isinstance(t.rule, AllMatches)]
    if not first_match:
        return {}
    columns = ", ".join(f"{t.rule.case_index_sql().sql(dialect=DIALECT)} AS {t.id}" for t in first_match)
    try:
        cursor = con.execute(f"SELECT {columns} FROM analytics.customer_features WHERE customer_id = ?",
                             [customer_id])
    except duckdb.BinderException:  # the rules name a feature the published run did not compute
        return {}
    row = cursor.fetchone() or ()
    return {d[0]: v for d, v in zip(cursor.description, row)}

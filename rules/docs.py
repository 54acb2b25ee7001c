"""docs/tags.md, generated from the rules so the documentation cannot drift from them."""

from __future__ import annotations

from rules.compiler import DIALECT
from rules.kinds import AllMatches, Computed, FirstMatch, Manual
from rules.model import RuleSet, Tag

HEADER = """# Tags

Generated from `rules/*.yaml` by `tagwright rules docs > docs/tags.md`; a test fails when this
page and the rules disagree.  Coverage of the last run is in `analytics.tag_catalog`
(`coverage`) and per value in `analytics.tag_stats`.

## How a tag is written

A tag is one YAML file in `rules/`: an immutable `id`, display `names` (en, zh), a `category`
(level 1 / level 2), a value `type` (enum, flag, number, list), an `owner`, a `definition`
(口径) in plain words, a `status` (draft | active | retired), a `version`, `refresh` (daily),
optional `colours` per value (used by the catalog and the report), `marketing: true` for tags
that campaigns use (children under 14 get none of them), and `tests` (given features, the
expected value), which `tagwright rules test` and pytest run; every declared value needs a
test.  The rule itself is one of four kinds (`rules/kinds.py`):

| kind | keys | value |
| --- | --- | --- |
| first match | `cases` (ordered `value` / `when`), `fallback` | the first case whose condition holds, else the fallback (`null`: no value) |
| list (type list) | `cases`, `fallback` | every case that holds, in case order, joined by `,` (e.g. `email,sms`), else the fallback |
| computed | `value` (an expression), optional `when`, `score`, `values` | the expression's value where `when` holds; a number tag keeps four decimals and the full value in `score` |
| manual | `manual: true`, `values` | only what operations staff set with `tagwright tags add` / `tags set` |

Conditions and expressions are SQL over the features below, parsed and checked with sqlglot:
an unknown feature, a subquery, DDL or a function outside the allowed list is an error at
`file:line:column`.  `tagwright rules check` also warns about two tags with one definition,
values no customer reaches, cases hidden by earlier cases and values changed without a new
version, and fails on a published tag whose value type changed.  `tagwright rules diff` shows
how many customers an edit would move before it ships.  Manual tags and corrections
(`tagwright tags add|set|list|revoke`) are applied after the rules, with a reason, an author and
an optional expiry, and are published in `analytics.tag_overrides`.
"""


def _rule_rows(tag: Tag) -> list[str]:
    rule = tag.rule
    if isinstance(rule, Manual):
        return [f"| {', '.join(rule.values)} | set by hand (`tagwright tags add {tag.id} ...`) |"]
    if isinstance(rule, Computed):
        when = f" where `{rule.when.sql(dialect=DIALECT)}`" if rule.when is not None else ""
        score = f"; score `{rule.score.sql(dialect=DIALECT)}`" if rule.score is not None else ""
        values = f" (one of: {', '.join(rule.values)})" if rule.values else ""
        fallback = rule.fallback if rule.fallback is not None else "(no value)"
        return [f"| `{rule.value.sql(dialect=DIALECT)}`{values} | {when.strip() or 'always'}{score} |",
                f"| {fallback} | otherwise |"]
    assert isinstance(rule, FirstMatch)
    rows = [f"| {c.value} | `{c.when.sql(dialect=DIALECT)}` |" for c in rule.cases]
    fallback = rule.fallback if rule.fallback is not None else "(no value)"
    return rows + [f"| {fallback} | {'no case holds' if isinstance(rule, AllMatches) else 'otherwise'} |"]


def render_tags_markdown(rules: RuleSet) -> str:
    out = [HEADER, "## Features\n", "| feature | entity | aggregate | window | definition |",
           "| --- | --- | --- | --- | --- |"]
    for f in rules.features.values():
        window = {None: "all history", "lookback": "lookback"}.get(f.window_days, f"{f.window_days} days")
        where = f" where `{f.filter.sql(dialect=DIALECT)}`" if f.filter is not None else ""
        by = f" by {f.by}" if f.by else ""
        out.append(f"| `{f.id}` | {f.entity} | {f.aggregate}{f' of {f.of}' if f.of else ''}{by}{where} | {window} "
                   f"| {f.description} |")
    out += ["", "## Scores\n", "| score | of | direction | cut points | definition |", "| --- | --- | --- | --- | --- |"]
    for s in rules.scores.values():
        direction = "higher is better" if s.higher_is_better else "lower is better"
        out.append(f"| `{s.id}` | `{s.of}` | {direction} | {', '.join(map(str, s.cuts))} | {s.description} |")
    out += ["", "## Models\n", "| model | kind | inputs | definition |", "| --- | --- | --- | --- |"]
    for m in rules.models.values():
        out.append(f"| `{m.id}` | {m.kind} | purchases `{m.purchases}`, first to last `{m.first_to_last_days}`, "
                   f"age `{m.age_days}` (days / {m.unit_days}) | {m.description} |")
    if rules.marketing_exclusion is not None:
        out += ["", f"Marketing tags get no value where `{rules.marketing_exclusion.sql(dialect=DIALECT)}`."]
    out.append("")
    for tag in sorted(rules.tags.values(), key=lambda t: (t.category, t.id)):
        colours = f"; colours: {', '.join(f'{k} {v}' for k, v in tag.colours.items())}" if tag.colours else ""
        out += [f"## `{tag.id}`: {tag.names.get('en')} / {tag.names.get('zh')}\n",
                f"- category: {tag.category[0]} / {tag.category[1]}; type: {tag.value_type}; "
                f"rule: {tag.kind}; status: {tag.status}; version: {tag.version}; refresh: {tag.refresh}"
                f"{'; marketing tag' if tag.marketing else ''}",
                f"- owner: {tag.owner}; rule file: `rules/{tag.file}`{colours}",
                f"- definition (口径): {tag.definition}", "",
                "| value | when |", "| --- | --- |", *_rule_rows(tag), ""]
    return "\n".join(out)

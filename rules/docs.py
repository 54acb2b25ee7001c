"""docs/tags.md, generated from the rules so the documentation cannot drift from them."""

from __future__ import annotations

from rules.model import RuleSet

HEADER = """# Tags

Generated from `rules/*.yaml` by `tagwright rules docs > docs/tags.md`; a test fails when this
page and the rules disagree.  Coverage of the last run is in `analytics.tag_catalog`.

## How a tag is written

A tag is one YAML file in `rules/`: an immutable `id`, display `names` (en, zh), a `category`
(level 1 / level 2), a value `type`, an `owner`, a `definition` (口径) in plain words, a
`status` (draft | active | retired), a `version`, ordered `cases` (first match wins) with
conditions in SQL over the features below, a `fallback` (`null`: no value), and `tests`
(given features, the expected value), which `tagwright rules test` and pytest run.
Conditions are parsed and checked with sqlglot: an unknown feature, a subquery, DDL or a
function outside the allowed list is an error at `file:line:column`.
"""


def render_tags_markdown(rules: RuleSet) -> str:
    out = [HEADER, "## Features\n", "| feature | entity | aggregate | window | definition |",
           "| --- | --- | --- | --- | --- |"]
    for f in rules.features.values():
        window = {None: "all history", "lookback": "lookback"}.get(f.window_days, f"{f.window_days} days")
        where = f" where `{f.filter.sql(dialect='duckdb')}`" if f.filter is not None else ""
        out.append(f"| `{f.id}` | {f.entity} | {f.aggregate}{f' of {f.of}' if f.of else ''}{where} | {window} "
                   f"| {f.description} |")
    out += ["", "## Scores\n", "| score | of | direction | cut points | definition |", "| --- | --- | --- | --- | --- |"]
    for s in rules.scores.values():
        direction = "higher is better" if s.higher_is_better else "lower is better"
        out.append(f"| `{s.id}` | `{s.of}` | {direction} | {', '.join(map(str, s.cuts))} | {s.description} |")
    out.append("")
    for tag in sorted(rules.tags.values(), key=lambda t: (t.category, t.id)):
        out += [f"## `{tag.id}`: {tag.names.get('en')} / {tag.names.get('zh')}\n",
                f"- category: {tag.category[0]} / {tag.category[1]}; type: {tag.value_type}; "
                f"status: {tag.status}; version: {tag.version}; refresh: {tag.refresh}",
                f"- owner: {tag.owner}; rule file: `rules/{tag.file}`",
                f"- definition (口径): {tag.definition}", "",
                "| value | when (first match wins) |", "| --- | --- |"]
        for case in tag.cases:
            out.append(f"| {case.value} | `{case.when.sql(dialect='duckdb')}` |")
        out += [f"| {tag.fallback if tag.fallback is not None else '(no value)'} | otherwise |", ""]
    return "\n".join(out)

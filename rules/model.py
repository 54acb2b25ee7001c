"""Typed rule objects, parsed and checked from rules/*.yaml before any SQL exists.

``features.yaml`` declares features (aggregates over a feature entity) and scores (quantile
scores over a feature); every other ``*.yaml`` declares one tag.  ``load_rules`` collects every
problem it finds (file:line:column plus the fix) and raises them together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp

from rules.errors import RuleError, RuleErrors
from rules.expressions import parse_condition
from rules.yaml_positions import Mapping, Position, load

ID = re.compile(r"^[a-z][a-z0-9_]*$")
VALUE_TYPES = ("enum", "flag", "number", "list")
STATUSES = ("draft", "active", "retired")

# The entities features aggregate over, with their columns (built by warehouse/features.py).
FEATURE_ENTITIES: dict[str, dict[str, str]] = {
    "orders": {"order_date": "date", "amount": "decimal", "status": "text", "channel": "text",
               "gap_days": "integer"},
    "activity": {"activity_date": "date", "kind": "text"},
}
AGGREGATES = ("count", "count_distinct", "sum", "min", "max", "avg", "median", "latest",
              "days_since_latest", "days_since_earliest")
LOOKBACK = "lookback"


@dataclass(frozen=True)
class Feature:
    """An aggregate over a feature entity per customer, as of the run date.

    Example: ``{entity: orders, aggregate: sum, of: amount, filter: "status = 'paid'"}``
    compiles to ``sum(amount) FILTER (WHERE status = 'paid' AND order_date <= as_of)``.
    """

    id: str
    description: str
    entity: str
    aggregate: str
    of: str | None
    filter: exp.Expression | None
    window_days: int | str | None
    default: float | None
    position: Position


@dataclass(frozen=True)
class Score:
    """A 1..N quantile score of a feature from percent_rank; ties get equal scores.

    ``1 + (pr >= cut_1) + (pr >= cut_2) + ...`` with ``pr = percent_rank() OVER (ORDER BY of)``
    among customers where ``among`` holds (descending when lower is better), NULL elsewhere.
    """

    id: str
    description: str
    of: str
    higher_is_better: bool
    cuts: tuple[float, ...]
    among: exp.Expression | None
    position: Position


@dataclass(frozen=True)
class Case:
    value: str
    when: exp.Expression
    position: Position


@dataclass(frozen=True)
class Tag:
    id: str
    names: dict[str, str]
    category: tuple[str, str]
    value_type: str
    owner: str
    definition: str
    status: str
    version: int
    refresh: str
    cases: tuple[Case, ...]
    fallback: str | None
    tests: tuple[dict, ...]
    file: str
    colours: dict[str, str] = field(default_factory=dict)

    @property
    def values(self) -> list[str]:
        return list(dict.fromkeys([c.value for c in self.cases] + ([self.fallback] if self.fallback else [])))


@dataclass(frozen=True)
class RuleSet:
    features: dict[str, Feature]
    scores: dict[str, Score]
    tags: dict[str, Tag]

    @property
    def names(self) -> set[str]:
        """Everything a tag condition may refer to."""
        return set(self.features) | set(self.scores)

    @property
    def active_tags(self) -> list[Tag]:
        return [t for t in self.tags.values() if t.status == "active"]


class _Reader:
    """Field access on one YAML mapping that records problems instead of stopping at the first."""

    def __init__(self, data: Mapping, errors: list[RuleError], what: str) -> None:
        self.data, self.errors, self.what = data, errors, what

    def where(self, key: str | None = None) -> Position:
        return self.data.positions.get(key, self.data.position) if key else self.data.position

    def fail(self, key: str | None, problem: str, fix: str) -> None:
        p = self.where(key)
        self.errors.append(RuleError(p.file, p.line, p.column, problem, fix))

    def get(self, key: str, kind: type | tuple, required: bool = True, default=None, choices=None):
        if key not in self.data:
            if required:
                self.fail(None, f"{self.what} has no {key!r}", f"add '{key}:'")
            return default
        value = self.data[key]
        if not isinstance(value, kind):
            self.fail(key, f"{self.what}: {key!r} must be {getattr(kind, '__name__', kind)}, got {value!r}",
                      f"write {key} as a {getattr(kind, '__name__', kind)}")
            return default
        if choices and value not in choices:
            self.fail(key, f"{self.what}: {key!r} is {value!r}", f"use one of {', '.join(map(str, choices))}")
            return default
        return value

    def condition(self, key: str, names: set[str], required: bool = True) -> exp.Expression | None:
        if key not in self.data and not required:
            return None
        try:
            return parse_condition(self.data.get(key), names, self.where(key), f"{self.what} {key}")
        except RuleError as exc:
            self.errors.append(exc)
            return None


def _parse_features(data: Mapping, errors: list[RuleError]) -> tuple[dict[str, Feature], dict[str, Score]]:
    features: dict[str, Feature] = {}
    for fid, spec in (data.get("features") or {}).items():
        r = _Reader(spec, errors, f"feature {fid!r}")
        if not ID.match(str(fid)):
            r.fail(None, f"feature id {fid!r} is not [a-z][a-z0-9_]*", "rename it in snake_case")
        entity = r.get("entity", str, choices=list(FEATURE_ENTITIES))
        columns = set(FEATURE_ENTITIES.get(entity, {}))
        aggregate = r.get("aggregate", str, choices=AGGREGATES)
        of = r.get("of", str, required=aggregate not in (None, "count"))
        if of is not None and columns and of not in columns:
            r.fail("of", f"feature {fid!r}: entity {entity!r} has no column {of!r}",
                   f"use one of {', '.join(sorted(columns))}")
        window = r.get("window_days", (int, str), required=False)
        if isinstance(window, str) and window != LOOKBACK:
            r.fail("window_days", f"feature {fid!r}: window_days is {window!r}",
                   f"use a number of days or '{LOOKBACK}' (the configured lookback)")
        features[fid] = Feature(
            id=fid, description=r.get("description", str, default=""), entity=entity, aggregate=aggregate, of=of,
            filter=r.condition("filter", columns, required=False), window_days=window,
            default=r.get("default", (int, float), required=False), position=spec.position)
    scores: dict[str, Score] = {}
    for sid, spec in (data.get("scores") or {}).items():
        r = _Reader(spec, errors, f"score {sid!r}")
        of = r.get("of", str, choices=list(features))
        cuts = r.get("cuts", list, required=False, default=[0.2, 0.4, 0.6, 0.8])
        if not all(isinstance(c, (int, float)) and 0 < c < 1 for c in cuts) or cuts != sorted(cuts):
            r.fail("cuts", f"score {sid!r}: cuts must be increasing numbers between 0 and 1",
                   "write e.g. [0.2, 0.4, 0.6, 0.8]")
        scores[sid] = Score(id=sid, description=r.get("description", str, default=""), of=of,
                            higher_is_better=r.get("higher_is_better", bool, required=False, default=True),
                            cuts=tuple(cuts), among=r.condition("among", set(features), required=False),
                            position=spec.position)
    return features, scores


def _parse_tag(data: Mapping, file: str, names: set[str], errors: list[RuleError]) -> Tag | None:
    spec = data.get("tag")
    if not isinstance(spec, Mapping):
        errors.append(RuleError(file, 1, 1, "a tag file must hold a 'tag:' mapping", "see docs/rules.md"))
        return None
    r = _Reader(spec, errors, f"tag {spec.get('id', '?')!r}")
    tag_id = r.get("id", str, default="?")
    if not ID.match(tag_id):
        r.fail("id", f"tag id {tag_id!r} is not [a-z][a-z0-9_]*", "use a snake_case id; ids never change")
    names_map = r.get("names", dict, default={})
    if not {"en", "zh"} <= set(names_map):
        r.fail("names", f"tag {tag_id!r} needs display names in en and zh", "add names: {en: ..., zh: ...}")
    category = r.get("category", list, default=["?", "?"])
    if len(category) != 2:
        r.fail("category", f"tag {tag_id!r}: category must be [level 1, level 2]", "e.g. [value, rfm]")
    cases = []
    for i, case in enumerate(r.get("cases", list, default=[])):
        if not isinstance(case, Mapping):
            r.fail("cases", f"tag {tag_id!r}: case {i + 1} must be a mapping", "write '- value: ...\\n  when: ...'")
            continue
        cr = _Reader(case, errors, f"tag {tag_id!r} case {i + 1}")
        value = cr.get("value", (str, int, bool))
        when = cr.condition("when", names)
        if value is not None and when is not None:
            cases.append(Case(str(value), when, case.position))
    fallback = spec.get("fallback")
    tests = r.get("tests", list, required=False, default=[])
    return Tag(
        id=tag_id, names=names_map, category=tuple(category[:2]) if len(category) == 2 else ("?", "?"),
        value_type=r.get("type", str, choices=VALUE_TYPES, default="enum"),
        owner=r.get("owner", str, default=""), definition=r.get("definition", str, default="").strip(),
        status=r.get("status", str, choices=STATUSES, default="draft"), version=r.get("version", int, default=1),
        refresh=r.get("refresh", str, required=False, default="daily", choices=["daily"]),
        cases=tuple(cases), fallback=None if fallback is None else str(fallback), tests=tuple(tests), file=file,
        colours=r.get("colours", dict, required=False, default={}))


def rules_dir() -> Path:
    return Path(__file__).resolve().parent


def load_rules(folder: Path | None = None) -> RuleSet:
    """Parse features.yaml and every tag file in ``folder``; raise RuleErrors listing all problems."""
    folder = folder or rules_dir()
    errors: list[RuleError] = []
    features_file = folder / "features.yaml"
    try:
        features, scores = _parse_features(load(features_file, features_file.name), errors)
    except RuleError as exc:
        raise RuleErrors([exc]) from exc
    tags: dict[str, Tag] = {}
    names = set(features) | set(scores)
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "features.yaml":
            continue
        try:
            tag = _parse_tag(load(path, path.name), path.name, names, errors)
        except RuleError as exc:
            errors.append(exc)
            continue
        if tag is None:
            continue
        if tag.id in tags:
            errors.append(RuleError(path.name, 1, 1, f"tag id {tag.id!r} is also declared in {tags[tag.id].file}",
                                    "tag ids are unique; rename one"))
        tags[tag.id] = tag
    if errors:
        raise RuleErrors(errors)
    return RuleSet(features, scores, tags)

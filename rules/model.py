"""Typed rule objects, parsed and checked from rules/*.yaml before any SQL exists.

``features.yaml`` declares features (aggregates over a feature entity), scores (quantile
scores over a feature), models (BG/NBD p_alive over three features) and the condition that
excludes a customer from marketing tags; every other ``*.yaml`` declares one tag, whose rule
kind is in ``rules/kinds.py``.  ``load_rules`` collects every problem it finds
(file:line:column plus the fix) and raises them together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp

from rules.errors import RuleError, RuleErrors
from rules.expressions import parse_condition, parse_expression
from rules.kinds import AllMatches, Case, Computed, FirstMatch, Manual, TagRule
from rules.yaml_positions import Mapping, Position, load

ID = re.compile(r"^[a-z][a-z0-9_]*$")
VALUE_TYPES = ("enum", "flag", "number", "list")
STATUSES = ("draft", "active", "retired")

# The entities features aggregate over, with their columns and column types (number, text,
# boolean, date), built by warehouse/features.py.  ``profile`` has one row per customer.
FEATURE_ENTITIES: dict[str, dict[str, str]] = {
    "orders": {"order_date": "date", "amount": "number", "status": "text", "channel": "text",
               "gap_days": "number"},
    "order_lines": {"order_date": "date", "status": "text", "category": "text", "quantity": "number",
                    "line_amount": "number"},
    "activity": {"activity_date": "date", "kind": "text"},
    "interactions": {"interaction_date": "date", "kind": "text", "channel": "text", "rating": "number"},
    "profile": {"age_years": "number", "birth_month": "number", "gender": "text", "province": "text",
                "city": "text", "city_tier": "text", "email_opt_in": "boolean", "sms_opt_in": "boolean",
                "is_member": "boolean"},
}
AGGREGATES = ("count", "count_distinct", "sum", "min", "max", "avg", "median", "latest", "value", "top",
              "days_since_latest", "days_since_earliest", "span_days")
# The aggregates whose result has the type of their column (the others are numbers).
TYPED_AGGREGATES = ("min", "max", "latest", "value", "top")
MODEL_KINDS = ("bg_nbd",)
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
    by: str | None = None

    @property
    def type(self) -> str:
        """number, text, boolean or date: what a condition compares this feature with."""
        if self.aggregate in TYPED_AGGREGATES and self.of:
            return FEATURE_ENTITIES.get(self.entity, {}).get(self.of, "number")
        return "number"


@dataclass(frozen=True)
class Model:
    """A model-based feature: BG/NBD ``p_alive`` fitted at every run (rules/bgnbd.py).

    ``x = purchases - 1``, ``t_x = first_to_last_days / unit_days``, ``T = age_days / unit_days``;
    NULL for customers without a purchase.
    """

    id: str
    description: str
    kind: str
    purchases: str
    first_to_last_days: str
    age_days: str
    unit_days: int
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
    rule: TagRule
    tests: tuple[dict, ...]
    file: str
    position: Position
    colours: dict[str, str] = field(default_factory=dict)
    marketing: bool = False

    @property
    def values(self) -> list[str] | None:
        """The declared value set, or None when values come from the data (a category name)."""
        return self.rule.values

    @property
    def kind(self) -> str:
        return type(self.rule).__name__


@dataclass(frozen=True)
class RuleSet:
    features: dict[str, Feature]
    scores: dict[str, Score]
    tags: dict[str, Tag]
    models: dict[str, Model] = field(default_factory=dict)
    marketing_exclusion: exp.Expression | None = None

    @property
    def names(self) -> set[str]:
        """Everything a tag condition may refer to."""
        return set(self.features) | set(self.scores) | set(self.models)

    def types(self) -> dict[str, str]:
        """Every name a condition may use, with its type (number, text, boolean, date)."""
        return {**{f.id: f.type for f in self.features.values()}, **{s: "number" for s in self.scores},
                **{m: "number" for m in self.models}}

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
        for key, column in (("of", of), ("by", spec.get("by"))):
            if column is not None and columns and column not in columns:
                r.fail(key, f"feature {fid!r}: entity {entity!r} has no column {column!r}",
                       f"use one of {', '.join(sorted(columns))}")
        by = r.get("by", str, required=aggregate == "top")
        window = r.get("window_days", (int, str), required=False)
        if isinstance(window, str) and window != LOOKBACK:
            r.fail("window_days", f"feature {fid!r}: window_days is {window!r}",
                   f"use a number of days or '{LOOKBACK}' (the configured lookback)")
        if window is not None and entity == "profile":
            r.fail("window_days", f"feature {fid!r}: the profile entity has no dates to window",
                   "remove window_days")
        features[fid] = Feature(
            id=fid, description=r.get("description", str, default=""), entity=entity, aggregate=aggregate, of=of,
            filter=r.condition("filter", columns, required=False), window_days=window,
            default=r.get("default", (int, float), required=False), position=spec.position, by=by)
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


def _parse_models(data: Mapping, features: dict[str, Feature], errors: list[RuleError]) -> dict[str, Model]:
    models: dict[str, Model] = {}
    for mid, spec in (data.get("models") or {}).items():
        r = _Reader(spec, errors, f"model {mid!r}")
        if mid in features:
            r.fail(None, f"model {mid!r} has the id of a feature", "give the model its own id")
        inputs = {key: r.get(key, str, choices=list(features))
                  for key in ("purchases", "first_to_last_days", "age_days")}
        unit = r.get("unit_days", int, required=False, default=7)
        models[mid] = Model(id=mid, description=r.get("description", str, default=""),
                            kind=r.get("kind", str, choices=MODEL_KINDS), unit_days=unit,
                            position=spec.position, **inputs)
    return models


def _parse_tag(data: Mapping, file: str, names: set[str], errors: list[RuleError]) -> Tag | None:
    spec = data.get("tag")
    if not isinstance(spec, Mapping):
        errors.append(RuleError(file, 1, 1, "a tag file must hold a 'tag:' mapping", "see docs/tags.md, How a tag is written"))
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
    value_type = r.get("type", str, choices=VALUE_TYPES, default="enum")
    rule = _tag_rule(spec, r, tag_id, value_type, names, errors)
    tests = r.get("tests", list, required=False, default=[])
    return Tag(
        id=tag_id, names=names_map, category=tuple(category[:2]) if len(category) == 2 else ("?", "?"),
        value_type=value_type, owner=r.get("owner", str, default=""),
        definition=r.get("definition", str, default="").strip(),
        status=r.get("status", str, choices=STATUSES, default="draft"), version=r.get("version", int, default=1),
        refresh=r.get("refresh", str, required=False, default="daily", choices=["daily"]),
        rule=rule, tests=tuple(tests), file=file, position=spec.position,
        colours=r.get("colours", dict, required=False, default={}),
        marketing=r.get("marketing", bool, required=False, default=False))


def _value_text(value: object) -> str:
    """YAML true/false become the flag values 'true'/'false'; everything else its text."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _tag_rule(spec: Mapping, r: _Reader, tag_id: str, value_type: str, names: set[str],
              errors: list[RuleError]) -> TagRule:
    """The tag's rule kind, from its keys (see rules/kinds.py)."""
    fallback = None if spec.get("fallback") is None else _value_text(spec.get("fallback"))
    if "value" in spec:
        value = None
        try:
            value = parse_expression(spec["value"], names, r.where("value"), f"tag {tag_id!r} value")
        except RuleError as exc:
            errors.append(exc)
        score = None
        if "score" in spec:
            try:
                score = parse_expression(spec["score"], names, r.where("score"), f"tag {tag_id!r} score")
            except RuleError as exc:
                errors.append(exc)
        declared = r.get("values", list, required=False)
        return Computed(value=value if value is not None else exp.null(), when=r.condition("when", names, False),
                        score=score, number=value_type == "number", fallback=fallback,
                        declared=tuple(_value_text(v) for v in declared) if declared else None)
    if value_type == "number":
        r.fail("type", f"tag {tag_id!r} is a number tag without 'value:'", "add value: <expression over features>")
    if spec.get("manual"):
        values = r.get("values", list, default=[])
        return Manual(declared=tuple(_value_text(v) for v in values))
    cases = []
    for i, case in enumerate(r.get("cases", list, default=[])):
        if not isinstance(case, Mapping):
            r.fail("cases", f"tag {tag_id!r}: case {i + 1} must be a mapping", "write '- value: ...\\n  when: ...'")
            continue
        cr = _Reader(case, errors, f"tag {tag_id!r} case {i + 1}")
        value = cr.get("value", (str, int, bool))
        when = cr.condition("when", names)
        if value is not None and when is not None:
            cases.append(Case(_value_text(value), when, case.position))
    kind = AllMatches if value_type == "list" else FirstMatch
    rule = kind(cases=tuple(cases), fallback=fallback)
    if value_type == "flag" and not set(rule.values) <= {"true", "false"}:
        r.fail("cases", f"tag {tag_id!r} is a flag but has values {rule.values}",
               "a flag's values are true and false (fallback: false)")
    return rule


def rules_dir() -> Path:
    return Path(__file__).resolve().parent


def load_rules(folder: Path | None = None) -> RuleSet:
    """Parse features.yaml and every tag file in ``folder``; raise RuleErrors listing all problems."""
    folder = folder or rules_dir()
    errors: list[RuleError] = []
    features_file = folder / "features.yaml"
    try:
        features_data = load(features_file, features_file.name)
    except RuleError as exc:
        raise RuleErrors([exc]) from exc
    features, scores = _parse_features(features_data, errors)
    models = _parse_models(features_data, features, errors)
    names = set(features) | set(scores) | set(models)
    exclusion = _Reader(features_data, errors, "features.yaml").condition("marketing_exclusion", names, False)
    tags: dict[str, Tag] = {}
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
    return RuleSet(features, scores, tags, models, exclusion)

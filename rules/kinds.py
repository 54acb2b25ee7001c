"""Tag rule kinds: how a tag's value (and score) is computed from the features of one customer.

A kind is a small class with ``value_sql()`` and ``score_sql()`` returning sqlglot trees and
``values`` (the declared value set; None when the values come from the data, such as a
category name).  Which kind a tag file uses follows from its keys: ``value:`` makes a
``Computed`` tag, ``manual: true`` a ``Manual`` one, ``cases:`` with type ``list`` an
``AllMatches`` one, and ``cases:`` otherwise ``FirstMatch``.  A new kind is one more class here
and one more branch in ``rules.model._tag_rule``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from rules.yaml_positions import Position


@dataclass(frozen=True)
class Case:
    value: str
    when: exp.Expression
    position: Position


def _literal(value: str | None) -> exp.Expression:
    return exp.null() if value is None else exp.Literal.string(value)


def _null_score() -> exp.Expression:
    return exp.cast(exp.null(), "double")


@dataclass(frozen=True)
class FirstMatch:
    """Ordered cases, the first that holds gives the value; ``fallback`` when none holds::

        CASE WHEN active_days_30 >= 15 THEN 'high' WHEN active_days_30 >= 4 THEN 'medium' ELSE 'inactive' END
    """

    cases: tuple[Case, ...]
    fallback: str | None

    @property
    def values(self) -> list[str]:
        return list(dict.fromkeys([c.value for c in self.cases] + ([self.fallback] if self.fallback else [])))

    def value_sql(self) -> exp.Expression:
        case = exp.Case()
        for c in self.cases:
            case = case.when(c.when.copy(), exp.Literal.string(c.value))
        return case.else_(_literal(self.fallback))

    def score_sql(self) -> exp.Expression:
        return _null_score()

    def case_index_sql(self) -> exp.Expression:
        """Which case fired (1-based), 0 for the fallback: ``CASE WHEN c1 THEN 1 ... ELSE 0 END``."""
        case = exp.Case()
        for i, c in enumerate(self.cases, start=1):
            case = case.when(c.when.copy(), exp.Literal.number(i))
        return case.else_(exp.Literal.number(0))


@dataclass(frozen=True)
class AllMatches(FirstMatch):
    """A list tag: every case that holds contributes its value, in case order, joined by ``,``;
    ``fallback`` when none holds::

        COALESCE(NULLIF(RTRIM(CASE WHEN email_opt_in THEN 'email,' ELSE '' END
                              || CASE WHEN sms_opt_in THEN 'sms,' ELSE '' END, ','), ''), 'none')
    """

    def value_sql(self) -> exp.Expression:
        parts = [exp.Case().when(c.when.copy(), exp.Literal.string(c.value + ",")).else_(exp.Literal.string(""))
                 for c in self.cases]
        joined = parts[0] if parts else exp.Literal.string("")
        for part in parts[1:]:
            joined = exp.DPipe(this=joined, expression=part)
        trimmed = exp.Trim(this=joined, expression=exp.Literal.string(","), position="TRAILING")
        return exp.func("coalesce", exp.func("nullif", trimmed, exp.Literal.string("")), _literal(self.fallback))


@dataclass(frozen=True)
class Computed:
    """The value is an expression over features (a category, a province, a probability), kept
    where ``when`` holds; a number tag also stores the unrounded value as ``score``::

        CASE WHEN frequency > 0 THEN CAST(favourite_category_365 AS VARCHAR) ELSE NULL END
        CASE WHEN p_alive IS NOT NULL THEN CAST(round(p_alive, 4) AS VARCHAR) END, p_alive AS score
    """

    value: exp.Expression
    when: exp.Expression | None
    score: exp.Expression | None
    number: bool
    fallback: str | None
    declared: tuple[str, ...] | None = None

    @property
    def values(self) -> list[str] | None:
        """The ``values:`` the tag file declares (checked by the data quality suite), if any."""
        return list(self.declared) if self.declared else None

    def value_sql(self) -> exp.Expression:
        value = exp.func("round", self.value.copy(), exp.Literal.number(4)) if self.number else self.value.copy()
        guard = exp.and_(self.when.copy() if self.when is not None else exp.true(),
                         exp.not_(exp.Is(this=self.value.copy(), expression=exp.null())))
        return exp.Case().when(guard, exp.cast(value, "varchar")).else_(_literal(self.fallback))

    def score_sql(self) -> exp.Expression:
        score = self.score if self.score is not None else (self.value if self.number else None)
        if score is None:
            return _null_score()
        return exp.cast(score.copy(), "double")


@dataclass(frozen=True)
class Manual:
    """No rule: values come only from manual tag assignments (``tagwright tags add``)::

        CAST(NULL AS VARCHAR)
    """

    declared: tuple[str, ...]

    @property
    def values(self) -> list[str]:
        return list(self.declared)

    def value_sql(self) -> exp.Expression:
        return exp.cast(exp.null(), "varchar")

    def score_sql(self) -> exp.Expression:
        return _null_score()


TagRule = FirstMatch | AllMatches | Computed | Manual

"""The BG/NBD model (Fader, Hardie & Lee 2005, "Counting your customers the easy way").

Each customer is summarised by ``x`` (repeat purchases), ``t_x`` (time of the last purchase,
measured from the first) and ``T`` (time since the first purchase).  The four parameters
``r, alpha, a, b`` are fitted by maximum likelihood over the whole customer base; customers
with equal ``(x, t_x, T)`` are counted once with a weight, so a million customers cost what
their distinct summaries cost.  ``p_alive`` then follows in closed form (their eq. 12)::

    P(alive | x, t_x, T) = 1 / (1 + [x > 0] * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))

A customer with no repeat purchase is alive with probability 1 under the model (drop-out
happens only right after a purchase); the churn rules combine p_alive with recency for that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import sqlglot
from scipy.optimize import minimize
from scipy.special import digamma, gammaln
from sqlglot import exp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class _Summaries:
    """Customers' ``(x, t_x, T)`` as indexes into each one's distinct values: each takes few
    values (whole days over a unit), so the gamma and log terms are evaluated once per value."""

    weights: np.ndarray
    x: np.ndarray
    x_values: np.ndarray
    x_index: np.ndarray
    t_x_values: np.ndarray
    t_x_index: np.ndarray
    T_values: np.ndarray
    T_index: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray) -> _Summaries:
        (x_values, x_index), (t_x_values, t_x_index), (T_values, T_index) = (
            np.unique(v, return_inverse=True) for v in (x, t_x, T))
        return cls(weights, x, x_values, x_index, t_x_values, t_x_index, T_values, T_index)


def _negative_log_likelihood(log_params: np.ndarray, s: _Summaries) -> tuple[float, np.ndarray]:
    """The weighted negative log-likelihood and its gradient in the log parameters.

    Per customer, ``LL = A1 + log(exp(A3) + exp(A4))`` (their eq. 6); the gradient weighs the
    derivatives of A3 and A4 by their shares ``w3, w4`` of the sum.
    """
    r, alpha, a, b = np.exp(log_params)
    xv, xi = s.x_values, s.x_index
    gamma_terms = gammaln(r + xv) - gammaln(r) + gammaln(a + b) + gammaln(b + xv) - gammaln(b) - gammaln(a + b + xv)
    repeat_base = np.maximum(b + xv - 1, 1e-12)  # x = 0 has no A4 term
    alpha_T, alpha_tx = alpha + s.T_values, alpha + s.t_x_values  # per distinct value
    log_alpha_T, log_alpha_tx = np.log(alpha_T)[s.T_index], np.log(alpha_tx)[s.t_x_index]
    a3 = -(r + s.x) * log_alpha_T
    a4 = np.where(s.x > 0, (np.log(a) - np.log(repeat_base))[xi] - (r + s.x) * log_alpha_tx, -np.inf)
    # log(exp(a3) + exp(a4)) and the share w4 of exp(a4) in it, with one exp and one log per customer
    smaller_over_larger = np.exp(-np.abs(a4 - a3))
    log_sum = np.maximum(a3, a4) + np.log1p(smaller_over_larger)
    w4 = np.where(a4 > a3, 1, smaller_over_larger) / (1 + smaller_over_larger)
    w3 = 1 - w4
    d_r = (digamma(r + xv) - digamma(r))[xi] + np.log(alpha) - w3 * log_alpha_T - w4 * log_alpha_tx
    d_alpha = r / alpha - (r + s.x) * (w3 / alpha_T[s.T_index] + w4 / alpha_tx[s.t_x_index])
    d_a = (digamma(a + b) - digamma(a + b + xv))[xi] + w4 / a
    d_b = (digamma(a + b) + digamma(b + xv) - digamma(b) - digamma(a + b + xv))[xi] - w4 / repeat_base[xi]
    value = -float(s.weights @ (gamma_terms[xi] + r * np.log(alpha) + log_sum))
    gradient = -np.array([s.weights @ d for d in (d_r, d_alpha, d_a, d_b)]) * np.array([r, alpha, a, b])
    return value, gradient


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, counts: np.ndarray | None = None) -> BgNbdParams:
    """Maximum-likelihood parameters for the customers ``(x, t_x, T)`` (arrays of equal length),
    each row standing for ``counts`` customers (default one)."""
    data = np.column_stack([np.asarray(x, float), np.asarray(t_x, float), np.asarray(T, float)])
    if len(data) == 0:
        raise ValueError("BG/NBD needs at least one customer with a purchase to fit")
    if (data < 0).any() or (data[:, 1] > data[:, 2] + 1e-9).any():
        raise ValueError("BG/NBD inputs must satisfy 0 <= t_x <= T and x >= 0")
    if counts is None:  # equal summaries weigh once each, counted
        data, inverse = np.unique(data, axis=0, return_inverse=True)
        weights = np.bincount(inverse.ravel()).astype(float)
    else:  # counted by the caller (a repeated summary would only cost time)
        weights = np.asarray(counts, float)
    xs, txs, Ts = data.T
    start = np.log([1.0, max(float(np.mean(Ts)), 1.0), 1.0, 1.0])
    # The mean over customers, not the sum: the tolerances below are then relative to one
    # customer's likelihood, whatever the size of the customer base.
    args = (_Summaries.of(xs, txs, Ts, weights / weights.sum()),)
    # L-BFGS-B with the exact gradient; Nelder-Mead, slower but derivative-free, takes over
    # from where it stopped if it does not converge.
    result = minimize(_negative_log_likelihood, start, args=args, jac=True, method="L-BFGS-B",
                      options={"ftol": 1e-15, "gtol": 1e-10})
    if not result.success:
        result = minimize(lambda *v: _negative_log_likelihood(*v)[0], result.x, args=args, method="Nelder-Mead",
                          options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20000})
    if not result.success:  # the best point found is still used; say so
        log.warning("BG/NBD fit did not converge on %.0f customers: %s", weights.sum(), result.message)
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    return BgNbdParams(r=r, alpha=alpha, a=a, b=b)


def p_alive(params: BgNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """P(alive) per customer; the same formula the compiler writes in SQL (used to test it)."""
    x, t_x, T = (np.asarray(v, float) for v in (x, t_x, T))
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = params.a / (params.b + x - 1) * ((params.alpha + T) / (params.alpha + t_x)) ** (params.r + x)
    return np.where(x > 0, 1.0 / (1.0 + odds), 1.0)


def p_alive_sql(params: BgNbdParams, purchases: exp.Expression, first_to_last_days: exp.Expression,
                age_days: exp.Expression, unit_days: int) -> exp.Expression:
    """``p_alive`` in SQL from fitted parameters (NULL without a purchase)::

        CASE WHEN purchases IS NULL OR purchases < 1 THEN NULL WHEN purchases = 1 THEN 1.0
             ELSE 1.0 / (1.0 + a / (b + x - 1) * power((alpha + T) / (alpha + t_x), r + x)) END
    """
    template = f"""
        CASE WHEN :n IS NULL OR :n < 1 THEN NULL WHEN :n = 1 THEN 1.0
             ELSE 1.0 / (1.0 + {params.a!r} / ({params.b!r} + (:n - 1) - 1)
                  * power(({params.alpha!r} + :age / {unit_days}.0) / ({params.alpha!r} + :span / {unit_days}.0),
                          {params.r!r} + (:n - 1)))
        END"""
    values = {"n": purchases, "age": age_days, "span": first_to_last_days}
    return sqlglot.parse_one(template, dialect="duckdb").transform(
        lambda node: values[node.name].copy() if isinstance(node, exp.Placeholder) and node.name in values else node)

"""The BG/NBD churn model: the published CDNOW fit, and SQL that agrees with the formula."""

from __future__ import annotations

import importlib.metadata

import duckdb
import numpy as np
import pandas as pd
import pytest
from sqlglot import exp

from rules.bgnbd import BgNbdParams, fit_bgnbd, p_alive, p_alive_sql


def cdnow_summary() -> pd.DataFrame:
    """The CDNOW calibration sample (2,357 customers, 39 weeks) as shipped by the lifetimes
    package: frequency (x), recency (t_x) and T in weeks.  Located by file, not imported."""
    path = importlib.metadata.distribution("lifetimes").locate_file("lifetimes/datasets/cdnow_customers_summary.csv")
    return pd.read_csv(path)


def test_the_fit_reproduces_the_published_cdnow_parameters():
    data = cdnow_summary()
    assert len(data) == 2357
    params = fit_bgnbd(data["frequency"], data["recency"], data["T"])
    # Fader, Hardie & Lee (2005): r = 0.243, alpha = 4.414, a = 0.793, b = 2.426.
    assert (round(params.r, 3), round(params.alpha, 3), round(params.a, 3), round(params.b, 3)) == \
        (0.243, 4.414, 0.793, 2.426)


def test_the_fit_converges_as_well_for_a_large_customer_base(caplog):
    """CDNOW's customers each counted 100,000 times (236M): the same parameters, converged (the
    fit's tolerances are on the mean likelihood, not on a sum that grows with the base)."""
    data = cdnow_summary()
    once = fit_bgnbd(data["frequency"], data["recency"], data["T"])
    many = fit_bgnbd(data["frequency"], data["recency"], data["T"], counts=np.full(len(data), 100_000))
    assert many.as_dict() == pytest.approx(once.as_dict(), rel=1e-4)
    heavy = np.where(data["frequency"] > 5, 1_000, 1)  # counts do weigh: frequent buyers dominate
    assert fit_bgnbd(data["frequency"], data["recency"], data["T"], counts=heavy).r > 2 * once.r
    assert "did not converge" not in caplog.text


def test_the_sql_expression_gives_the_formula_values():
    params = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    purchases = np.array([1, 2, 5, 10, 3])
    span_days = np.array([0, 70, 200, 250, 14])
    age_days = np.array([30, 270, 270, 260, 270])
    expected = p_alive(params, purchases - 1, span_days / 7, age_days / 7)
    sql = p_alive_sql(params, exp.column("n"), exp.column("span"), exp.column("age"), 7).sql(dialect="duckdb")
    with duckdb.connect() as con:
        con.register("customers", pd.DataFrame({"n": purchases, "span": span_days, "age": age_days}))
        got = [r[0] for r in con.execute(f"SELECT {sql} FROM customers").fetchall()]
        assert con.execute(f"SELECT {sql} FROM (SELECT NULL::INT AS n, NULL AS span, NULL AS age)").fetchone() == (None,)
    assert got == pytest.approx(list(expected))
    assert got[0] == 1.0  # a single purchase day: alive under the model
    assert got[4] < got[1]  # three purchases in the first two weeks, then 36 silent weeks: likely gone


def test_the_fit_recovers_the_parameters_of_simulated_customers():
    rng = np.random.default_rng(3)
    r, alpha, a, b, T = 0.5, 3.0, 0.8, 2.5, 52.0
    n = 20_000
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):  # simulating the model is per customer by nature; the fit is not
        t, alive = 0.0, True
        while alive:
            t += rng.exponential(1 / lam[i])
            if t > T:
                break
            x[i], t_x[i] = x[i] + 1, t
            alive = rng.random() > p[i]
    fitted = fit_bgnbd(x, t_x, np.full(n, T))
    assert fitted.r == pytest.approx(r, rel=0.15) and fitted.alpha == pytest.approx(alpha, rel=0.2)
    assert fitted.a == pytest.approx(a, rel=0.3) and fitted.b == pytest.approx(b, rel=0.3)


def test_the_fit_refuses_impossible_inputs():
    with pytest.raises(ValueError, match="t_x <= T"):
        fit_bgnbd(np.array([1]), np.array([5.0]), np.array([2.0]))
    with pytest.raises(ValueError, match="at least one customer"):
        fit_bgnbd(np.array([]), np.array([]), np.array([]))


def test_the_likelihood_gradient_is_exact():
    """The fit follows the analytic gradient: it must agree with finite differences, at the
    start point and near the optimum, with and without repeat buyers of every frequency."""
    from scipy.optimize import check_grad

    from rules.bgnbd import _negative_log_likelihood, _Summaries

    data = cdnow_summary()
    xs, txs, Ts = (data[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    summaries = _Summaries.of(xs, txs, Ts, np.full(len(xs), 1 / len(xs)))
    for point in ([0.0, 3.0, 0.0, 0.0], np.log([0.243, 4.414, 0.793, 2.426]), [1.0, -1.0, 2.0, -0.5]):
        error = check_grad(lambda p: _negative_log_likelihood(p, summaries)[0],
                           lambda p: _negative_log_likelihood(p, summaries)[1], np.asarray(point, float))
        assert error < 1e-6

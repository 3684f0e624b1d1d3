"""Mean or coefficient shifts of an annual series (discontinuous breaks, Bai & Perron).

Optimal partition by dynamic programming over a segment-RSS matrix, the number of breaks by BIC,
existence by the sup-F test (Andrews 1993) with a simulated finite-sample p-value, and break-date
intervals from Bai's (1997) asymptotic distribution, computed as R ``strucchange::confint`` does.
A break is reported as the last year of the old regime (strucchange's convention). The default
regressors model the trend (``y ~ 1 + t``): on a trending series ``y ~ 1`` finds spurious shifts.

References
----------
Bai, J. (1997) Review of Economics and Statistics 79:551-563.
Bai, J., Perron, P. (2003) Journal of Applied Econometrics 18:1-22.
Andrews, D.W.K. (1993) Econometrica 61:821-856.
Zeileis, A. et al. (2003) Computational Statistics & Data Analysis 44:109-123 (strucchange).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

from pipeline.errors import ModelError
from pipeline.methods.breakpoint_common import (
    NO_BREAK_TEXT,
    SHIFT_CONVENTION,
    clean_series,
    information_criterion,
    mc_pvalue,
)


# ---------------------------------------------------------------------------------------------
# Bai (1997): distribution of the break-date estimator
# ---------------------------------------------------------------------------------------------
def pargmax_v(x: float | np.ndarray, xi: float = 1.0, phi1: float = 1.0, phi2: float = 1.0) -> np.ndarray:
    """CDF of the argmax of a two-sided Brownian motion with drift (Bai 1997).

    Parameters
    ----------
    x
        Point(s) at which to evaluate the CDF (scaled break-date units).
    xi
        Ratio of the regressor second moments after/before the break, ``d'Q2 d / d'Q1 d``.
    phi1, phi2
        Error standard deviations before and after the break.

    Returns
    -------
    numpy.ndarray
        ``P(V <= x)``.

    Notes
    -----
    With ``phi = xi (phi2/phi1)^2`` the CDF is ``G1`` for ``x < 0`` and ``G2`` for ``x >= 0``
    (Bai 1997, Proposition 3). With ``xi = phi = 1`` it reduces to the symmetric law of Yao (1987),
    ``G(x) = 1 + sqrt(x/2pi) e^{-x/8} + 1.5 e^x Phi(-1.5 sqrt x) - (x+5)/2 Phi(-sqrt(x)/2)``,
    whose 97.5 % quantile is 11.03.

    References
    ----------
    Bai, J. (1997) Review of Economics and Statistics 79:551-563; strucchange ``pargmaxV``.
    """
    x = np.asarray(x, dtype=float)
    phi = xi * (phi2 / phi1) ** 2
    ax = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lx = np.log(ax)
        frac = xi / phi
        g1 = (
            -np.exp(lx / 2 - ax / 8 - math.log(2 * math.pi) / 2)
            - (phi / xi * (phi + 2 * xi) / (phi + xi))
            * np.exp(frac * (1 + frac) * ax / 2 + stats.norm.logcdf(-(0.5 + frac) * np.sqrt(ax)))
            + np.exp(np.log(ax / 2 - 2 + (phi + 2 * xi) ** 2 / ((phi + xi) * xi)) + stats.norm.logcdf(-np.sqrt(ax) / 2))
        )
        frac2 = xi**2 / phi
        g2 = (
            1
            + math.sqrt(frac2) * np.exp(lx / 2 - frac2 * ax / 8 - math.log(2 * math.pi) / 2)
            + (xi / phi * (2 * phi + xi) / (phi + xi))
            * np.exp((phi + xi) * ax / 2 + stats.norm.logcdf(-(phi + xi / 2) / math.sqrt(phi) * np.sqrt(ax)))
            - np.exp(
                np.log((2 * phi + xi) ** 2 / ((phi + xi) * phi) - 2 + frac2 * ax / 2)
                + stats.norm.logcdf(-math.sqrt(frac2) * np.sqrt(ax) / 2)
            )
        )
    # log(negative) in the last term only happens for tiny |x| where the limit is 1/2 for both.
    out = np.where(x < 0, g1, g2)
    out = np.where(ax < 1e-12, np.where(x < 0, 1.0 - _g2_at_zero(xi, phi), _g2_at_zero(xi, phi)), out)
    return out


def _g2_at_zero(xi: float, phi: float) -> float:
    # Limit x -> 0+ of G2: 1 + 0 + c1/2 - c2/2 (the Phi terms tend to 1/2).
    c1 = xi / phi * (2 * phi + xi) / (phi + xi)
    c2 = (2 * phi + xi) ** 2 / ((phi + xi) * phi) - 2
    return 1 + c1 / 2 - c2 / 2


def _argmax_quantile(level: float, xi: float, phi1: float, phi2: float) -> float:
    f = lambda v: float(pargmax_v(v, xi, phi1, phi2)) - level  # noqa: E731
    lo, hi = (-1.0, 0.0) if level < 0.5 else (0.0, 1.0)
    while f(lo) > 0:
        lo *= 2
    while f(hi) < 0:
        hi *= 2
    return optimize.brentq(f, lo, hi, xtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Segment RSS and the optimal partition (Bai & Perron 2003)
# ---------------------------------------------------------------------------------------------
def design_matrix(n: int, regressors: Literal["mean", "trend"]) -> np.ndarray:
    """Regressors of the shift model: a constant (``mean``) or a constant and a trend."""
    if regressors == "mean":
        return np.ones((n, 1))
    if regressors == "trend":
        t = np.arange(n, dtype=float)
        return np.column_stack([np.ones(n), (t - t.mean()) / max(n - 1, 1)])
    raise ValueError(f"unknown regressors {regressors!r}")


def segment_rss(y: np.ndarray, X: np.ndarray, min_size: int) -> np.ndarray:
    """RSS of the OLS fit of ``y`` on ``X`` for every segment ``i..j`` (inclusive).

    Parameters
    ----------
    y
        Series, shape ``(n,)`` or ``(s, n)`` for ``s`` series sharing the design.
    X
        Regressors, shape ``(n, k)``.
    min_size
        Segments shorter than this get ``inf``.

    Returns
    -------
    numpy.ndarray
        ``rss[..., i, j]``, shape ``(n, n)`` or ``(s, n, n)``.

    Notes
    -----
    ``RSS = y'y - (X'y)' (X'X)^-1 X'y`` with the cross-products of a segment taken as
    differences of cumulative sums, so all ``n^2/2`` segments cost one batched solve.
    """
    y = np.asarray(y, dtype=float)
    single = y.ndim == 1
    Y = y[None, :] if single else y
    s, n = Y.shape
    k = X.shape[1]
    Y = Y - Y.mean(axis=1, keepdims=True)  # centring keeps the cumulative sums well conditioned
    cxx = np.concatenate([np.zeros((1, k, k)), np.cumsum(X[:, :, None] * X[:, None, :], axis=0)])
    cxy = np.concatenate([np.zeros((s, 1, k)), np.cumsum(Y[:, :, None] * X[None, :, :], axis=1)], axis=1)
    cyy = np.concatenate([np.zeros((s, 1)), np.cumsum(Y**2, axis=1)], axis=1)
    i, j = np.triu_indices(n)
    ok = (j - i + 1) >= max(min_size, k)
    i, j = i[ok], j[ok]
    xx = cxx[j + 1] - cxx[i]
    xy = cxy[:, j + 1] - cxy[:, i]
    yy = cyy[:, j + 1] - cyy[:, i]
    sol = np.linalg.solve(xx[None], xy[..., None])[..., 0]
    rss = np.maximum(yy - np.einsum("spk,spk->sp", xy, sol), 0.0)
    out = np.full((s, n, n), np.inf)
    out[:, i, j] = rss
    return out[0] if single else out


def optimal_partition(rss: np.ndarray, max_breaks: int, min_size: int) -> dict[int, tuple[tuple[int, ...], float]]:
    """Least-squares partition into ``m + 1`` segments for each ``m <= max_breaks``.

    Parameters
    ----------
    rss
        Segment RSS matrix from :func:`segment_rss`, shape ``(n, n)``.
    max_breaks
        Largest number of breaks.
    min_size
        Minimum segment length (observations).

    Returns
    -------
    dict
        ``m -> (break indices, total RSS)``; a break index is the 0-based position of the
        **last** observation of the old segment.

    Notes
    -----
    Dynamic programming (Bai & Perron 2003): ``C_m(j) = min_i C_{m-1}(i) + RSS(i+1, j)``.
    """
    n = rss.shape[0]
    cost = [rss[0].copy()]
    arg: list[np.ndarray] = [np.full(n, -1)]
    out: dict[int, tuple[tuple[int, ...], float]] = {0: ((), float(rss[0, n - 1]))}
    for m in range(1, max_breaks + 1):
        c = np.full(n, np.inf)
        a = np.full(n, -1)
        for j in range((m + 1) * min_size - 1, n):
            cand = np.arange(m * min_size - 1, j - min_size + 1)
            if cand.size == 0:
                continue
            tot = cost[m - 1][cand] + rss[cand + 1, j]
            b = int(np.argmin(tot))
            c[j], a[j] = tot[b], cand[b]
        cost.append(c)
        arg.append(a)
        if not np.isfinite(c[n - 1]):
            break
        bps, j = [], n - 1
        for mm in range(m, 0, -1):
            j = int(arg[mm][j])
            bps.append(j)
        out[m] = (tuple(sorted(bps)), float(c[n - 1]))
    return out


def _sup_f_shift(y: np.ndarray, X: np.ndarray, min_size: int) -> np.ndarray:
    """sup over break dates of the Chow F statistic (one break vs none), per series."""
    rss = segment_rss(y, X, min_size)
    if rss.ndim == 2:
        rss = rss[None]
    n, k = X.shape
    rss0 = rss[:, 0, n - 1]
    b = np.arange(min_size - 1, n - min_size)
    rss1 = rss[:, 0, b] + rss[:, b + 1, n - 1]
    f = ((rss0[:, None] - rss1) / k) / (rss1 / (n - 2 * k))
    return f.max(axis=1)


@functools.lru_cache(maxsize=64)
def _null_sup_f_shift(n: int, regressors: str, min_size: int, n_sim: int, seed: int) -> np.ndarray:
    # Under Gaussian errors the statistic does not depend on the coefficients or on sigma, so one
    # simulation per (n, design, trimming) serves every series of that shape.
    rng = np.random.default_rng(seed)
    X = design_matrix(n, regressors)  # type: ignore[arg-type]
    out = [_sup_f_shift(rng.standard_normal((500, n)), X, min_size) for _ in range(-(-n_sim // 500))]
    return np.sort(np.concatenate(out)[:n_sim])


def bai_confint(y: np.ndarray, X: np.ndarray, breaks: Sequence[int], level: float = 0.95) -> list[tuple[int, int]]:
    """Confidence intervals of break dates (Bai 1997), as R ``strucchange::confint``.

    Parameters
    ----------
    y, X
        Series ``(n,)`` and regressors ``(n, k)``.
    breaks
        0-based indices of the last observation of each old segment.
    level
        Coverage.

    Returns
    -------
    list of (lower, upper)
        0-based indices on the same convention as ``breaks``.

    Notes
    -----
    For the break between segments 1 and 2 with coefficient change ``d``, segment moments
    ``Q_i = X_i'X_i/n_i``, error variances ``s_i^2 = RSS_i/n_i``: ``xi = d'Q2 d / d'Q1 d``,
    the bounds are ``b - ceil(q_hi c)`` and ``b - floor(q_lo c)`` with ``q`` the quantiles of
    :func:`pargmax_v` and ``c = d'(s_1^2 Q1)d / (d'Q1 d)^2``.

    References
    ----------
    Bai (1997); Zeileis et al. (2003), strucchange ``confint.breakpointsfull``.
    """
    a2 = (1 - level) / 2
    n = len(y)
    edges = [-1, *breaks, n - 1]
    segs = []
    for s in range(len(edges) - 1):
        Xs, ys = X[edges[s] + 1 : edges[s + 1] + 1], y[edges[s] + 1 : edges[s + 1] + 1]
        beta, *_ = np.linalg.lstsq(Xs, ys, rcond=None)
        res = ys - Xs @ beta
        segs.append((beta, Xs.T @ Xs / len(ys), float(res @ res) / len(ys)))
    out = []
    for s, b in enumerate(breaks):
        (b1, q1, s1), (b2, q2, s2) = segs[s], segs[s + 1]
        d = b2 - b1
        qp1, qp2 = float(d @ q1 @ d), float(d @ q2 @ d)
        xi = qp2 / qp1
        scale = float(d @ (s1 * q1) @ d) / qp1**2
        upper = _argmax_quantile(1 - a2, xi, math.sqrt(s1), math.sqrt(s2)) * scale
        lower = _argmax_quantile(a2, xi, math.sqrt(s1), math.sqrt(s2)) * scale
        out.append((int(b - math.ceil(upper)), int(b - math.floor(lower))))
    return out


def mean_shift_breaks(
    years: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    regressors: Literal["mean", "trend"] = "trend",
    max_breaks: int = 2,
    min_segment: int | float = 4,
    criterion: Literal["bic", "aic"] = "bic",
    alpha: float = 0.05,
    n_sim: int = 4000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean (or mean-and-trend coefficient) shifts, Bai-Perron style.

    Parameters
    ----------
    years
        Consecutive years (or any ordered time index), shape ``(n,)``.
    y
        Values, same units as the caller's series.
    regressors
        ``"trend"`` (default): shifts of intercept and slope of ``y ~ 1 + t`` (discontinuous);
        ``"mean"``: level shifts of ``y ~ 1``, for series without a trend only (on a trending
        series it reports spurious level steps: docs/validation_breakpoints.md).
    max_breaks
        Largest number of breaks considered.
    min_segment
        Minimum segment length: an integer number of observations, or a fraction of ``n``
        (strucchange's ``h``; 0.15 is its default).
    criterion
        Information criterion choosing the number of breaks.
    alpha
        Test level and ``1 - alpha`` interval coverage.
    n_sim, seed
        Size and seed of the simulated null distribution of the sup-F statistic.

    Returns
    -------
    dict
        JSON-ready result: chosen number of breaks, each break year (last year of the old
        regime) with its ``1 - alpha`` interval, segment coefficients, sup-F statistic and
        p-value, per-``m`` RSS and criterion, and a plain-language conclusion.

    Notes
    -----
    The number of parameters of an ``m``-break model is ``k(m+1) + m + 1`` (coefficients,
    break dates, variance), as strucchange counts them; BIC ``= -2 log L + p log n``. The
    sup-F statistic is ``max_b [(RSS_0 - RSS_1(b))/k] / [RSS_1(b)/(n - 2k)]`` over admissible
    dates; its p-value is ``(#{F* >= F} + 1)/(n_sim + 1)`` over Gaussian null simulations with
    the same design and trimming (the statistic is pivotal in that case, so the p-value is a
    finite-sample one, not Andrews' asymptotic approximation).

    References
    ----------
    Bai & Perron (2003); Bai (1997); Andrews (1993); strucchange (Zeileis et al. 2003).
    """
    yrs, yy = clean_series(years, y)
    n = len(yy)
    h = int(math.floor(min_segment * n)) if isinstance(min_segment, float) and min_segment < 1 else int(min_segment)
    X = design_matrix(n, regressors)
    k = X.shape[1]
    h = max(h, k + 1)
    if n < 2 * h:
        raise ModelError(
            f"series of {n} values is too short for a break with segments of at least {h} "
            f"values. Fix: supply a longer series or lower trend.min_segment_years"
        )
    rss = segment_rss(yy, X, h)
    parts = optimal_partition(rss, max_breaks, h)
    models: list[dict[str, Any]] = []
    for m, (bps, r) in sorted(parts.items()):
        models.append(
            {
                "n_breaks": m,
                "rss": r,
                criterion: information_criterion(r, n, k * (m + 1) + m + 1, criterion),
                "break_years": [float(yrs[b]) for b in bps],
            }
        )
    ic_choice = min(models, key=lambda d: (d[criterion], d["n_breaks"]))["n_breaks"]
    supf = float(_sup_f_shift(yy, X, h)[0])
    null = _null_sup_f_shift(n, regressors, h, n_sim, seed)
    p = mc_pvalue(supf, null)
    # Breaks are reported only when the existence test rejects (test first, then the criterion
    # chooses how many), which keeps the false-break rate at the test's level.
    m = ic_choice if p < alpha else 0
    breaks = []
    if m > 0:
        bps = parts[m][0]
        cis = bai_confint(yy, X, bps, 1 - alpha)
        for b, (lo, hi) in zip(bps, cis):
            breaks.append(
                {
                    "break_year": float(yrs[b]),
                    "first_year_new_regime": float(yrs[b + 1]),
                    "index": int(b),
                    "ci_low": float(yrs[max(lo, 0)]) + min(lo, 0) * 1.0,
                    "ci_high": float(yrs[min(hi, n - 1)]) + max(hi - (n - 1), 0) * 1.0,
                }
            )
    edges = [-1, *[b["index"] for b in breaks], n - 1]
    segments = []
    for s in range(len(edges) - 1):
        sl = slice(edges[s] + 1, edges[s + 1] + 1)
        beta, *_ = np.linalg.lstsq(X[sl], yy[sl], rcond=None)
        seg = {"first_year": float(yrs[sl][0]), "last_year": float(yrs[sl][-1]), "mean": float(yy[sl].mean())}
        if regressors == "trend":
            seg["slope_per_year"] = float(beta[1] / max(n - 1, 1))
        segments.append(seg)
    significant = p < alpha
    conclusion = (
        f"{m} break(s) chosen by {criterion.upper()}; sup-F p = {p:.3g}"
        if significant and m > 0
        else f"{NO_BREAK_TEXT} (sup-F p = {p:.3g} >= {alpha:g})"
        if not significant
        else f"sup-F p = {p:.3g} < {alpha:g} but {criterion.upper()} prefers no break"
    )
    return {
        "method": f"Bai-Perron {'mean' if regressors == 'mean' else 'intercept-and-slope'} shifts "
        "(discontinuous), dynamic programming",
        "regressors": regressors,
        "year_convention": SHIFT_CONVENTION,
        "min_segment": h,
        "criterion": criterion,
        "models": models,
        "n_breaks": m,
        "criterion_choice": ic_choice,
        "breaks": breaks,
        "segments": segments,
        "interval": f"{100 * (1 - alpha):g} % Bai (1997), heterogeneous segments",
        "existence_test": {
            "name": "sup-F (Andrews 1993), finite-sample p-value simulated under Gaussian errors",
            "statistic": supf,
            "p_value": p,
            "n_sim": int(n_sim),
            "seed": int(seed),
        },
        "significant": bool(significant),
        "conclusion": conclusion,
    }

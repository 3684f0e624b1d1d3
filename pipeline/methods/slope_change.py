"""Slope changes of an annual series: continuous broken lines with 0, 1 or 2 kinks (Muggeo).

``y = a + b t + sum_k d_k (t - psi_k)_+``, the number of kinks by BIC (or AIC). The fit is
Muggeo's algorithm (piecewise-regression) started from the global optimum of an exact
profile-likelihood grid, so it never depends on random restarts. Existence of a kink: Davies'
test as R ``segmented::davies.test`` computes it (:mod:`pipeline.methods.davies`) and a
finite-sample sup-F test whose null distribution is simulated once per design. The kink's
interval is the profile-F interval (:mod:`pipeline.methods.kink_interval`), stable when the
kink sits on a data year.

References
----------
Muggeo, V.M.R. (2003) Statistics in Medicine 22:3055-3071.
Davies, R.B. (1987) Biometrika 74:33-43; (2002) Biometrika 89:484-489.
Pilgrim, C. (2021) JOSS 6(68):3859 (piecewise-regression).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats

from pipeline.errors import ModelError
from pipeline.methods.breakpoint_common import (
    KINK_CONVENTION,
    NO_BREAK_TEXT,
    clean_series,
    information_criterion,
    mc_pvalue,
)
from pipeline.methods.davies import davies_test
from pipeline.methods.kink_interval import profile_kink_interval


# ---------------------------------------------------------------------------------------------
# Continuous segmented regression (slope changes)
# ---------------------------------------------------------------------------------------------
def _kink_design(t: np.ndarray, psis: np.ndarray) -> np.ndarray:
    """Design ``[1, t, (t - psi_1)_+, ...]`` for a batch of kink vectors, shape (g, n, 2 + m)."""
    g, m = psis.shape
    base = np.broadcast_to(np.column_stack([np.ones_like(t), t]), (g, t.size, 2))
    hinge = np.maximum(t[None, :, None] - psis[:, None, :], 0.0)
    return np.concatenate([base, hinge], axis=2)


def kink_grid(years: np.ndarray, n_breaks: int, min_segment: int, step: float = 0.1) -> np.ndarray:
    """Admissible kink positions: each segment spans at least ``min_segment`` observations.

    Returns shape ``(g, n_breaks)``, rows sorted lexicographically (deterministic).
    """
    t = np.asarray(years, dtype=float)
    lo, hi = t[min_segment - 1], t[-min_segment]
    axis = np.round(np.arange(lo, hi + step / 2, step), 10)
    if n_breaks == 0:
        return np.zeros((1, 0))
    if n_breaks == 1:
        return axis[:, None]
    if n_breaks == 2:
        gap = t[min_segment - 1] - t[0]
        a, b = np.meshgrid(axis, axis, indexing="ij")
        ok = b - a >= gap - 1e-9
        return np.column_stack([a[ok], b[ok]])
    raise ValueError("at most 2 kinks are supported")


def kink_profile_rss(years: np.ndarray, Y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """RSS of the broken-line OLS fit at each kink vector of ``grid``, for one or many series.

    Parameters
    ----------
    years
        Time axis, shape ``(n,)``.
    Y
        Series, ``(n,)`` or ``(d, n)``.
    grid
        Kink vectors, ``(g, m)``.

    Returns
    -------
    numpy.ndarray
        ``(g,)`` or ``(g, d)``.

    Notes
    -----
    For fixed kinks the model is linear, so the profile RSS is ``y'y - y'X(X'X)^-1X'y``; its
    minimum over a fine grid is the least-squares (maximum-likelihood) kink estimate.
    """
    t = np.asarray(years, dtype=float)
    t0 = t.mean()
    Yb = np.atleast_2d(np.asarray(Y, dtype=float))
    X = _kink_design(t - t0, grid - t0)
    xtx = np.einsum("gnp,gnq->gpq", X, X)
    xty = np.einsum("gnp,dn->gpd", X, Yb)
    sol = np.linalg.solve(xtx, xty)
    rss = (Yb**2).sum(axis=1)[None, :] - np.einsum("gpd,gpd->gd", xty, sol)
    rss = np.maximum(rss, 0.0)
    return rss[:, 0] if np.ndim(Y) == 1 else rss


def _sup_f_kink(years: np.ndarray, Y: np.ndarray, grid1: np.ndarray) -> np.ndarray:
    t = np.asarray(years, dtype=float)
    Yb = np.atleast_2d(Y)
    n = t.size
    X0 = np.column_stack([np.ones(n), t - t.mean()])
    beta = np.linalg.lstsq(X0, Yb.T, rcond=None)[0]
    rss0 = ((Yb.T - X0 @ beta) ** 2).sum(axis=0)
    rss1 = kink_profile_rss(t, Yb, grid1)
    f = (rss0[None, :] - rss1) / (rss1 / (n - 3))
    return f.max(axis=0)


@functools.lru_cache(maxsize=64)
def _null_sup_f_kink(years: tuple[float, ...], min_segment: int, n_sim: int, seed: int) -> np.ndarray:
    # The kink sup-F is invariant to the line's intercept, slope and sigma under the null.
    rng = np.random.default_rng(seed)
    t = np.asarray(years)
    grid1 = kink_grid(t, 1, min_segment)
    out = [_sup_f_kink(t, rng.standard_normal((1000, t.size)), grid1) for _ in range(-(-n_sim // 1000))]
    return np.sort(np.concatenate(out)[:n_sim])


def _muggeo(t: np.ndarray, y: np.ndarray, start: np.ndarray) -> dict[str, Any] | None:
    """Muggeo's algorithm via piecewise-regression from a given start; None when it fails."""
    import piecewise_regression as pw

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = pw.Fit(list(t), list(y), start_values=list(start), n_boot=0)
        except Exception:  # the library raises ValueError/LinAlgError on degenerate starts
            return None
    if fit.best_muggeo is None or not fit.best_muggeo.converged:
        return None
    bf = fit.best_muggeo.best_fit
    return {"estimates": bf.estimates, "rss": float(bf.residual_sum_squares), "converged": True}


def _one_step(t: np.ndarray, y: np.ndarray, psi: np.ndarray) -> dict[str, Any] | None:
    """Muggeo's SE at fixed kinks (one iteration of piecewise-regression); None if singular."""
    from piecewise_regression.main import NextBreakpoints

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nb = NextBreakpoints(np.asarray(t, float), np.asarray(y, float), np.asarray(psi, float))
        except Exception:  # singular design at a degenerate kink position
            return None
    est = {k: dict(v) for k, v in nb.estimates.items()}
    for i, p in enumerate(np.atleast_1d(psi)):
        est[f"breakpoint{i + 1}"]["estimate"] = float(p)
    if not all(np.isfinite(est[f"breakpoint{i + 1}"]["se"]) for i in range(len(np.atleast_1d(psi)))):
        return None
    return {"estimates": est, "rss": float(nb.residual_sum_squares), "converged": False}


def _second_kink_pvalue(
    t: np.ndarray, y: np.ndarray, psi1: np.ndarray, rss1: float, rss2: float, min_segment: int, n_boot: int, seed: int
) -> float:
    n = t.size
    X = _kink_design(t - t.mean(), (np.atleast_1d(psi1) - t.mean())[None, :])[0]
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    sigma = math.sqrt(rss1 / (n - 4))
    f_obs = (rss1 - rss2) / (rss2 / (n - 6))
    rng = np.random.default_rng(seed)
    Ystar = (X @ beta)[None, :] + sigma * rng.standard_normal((n_boot, n))
    r1 = kink_profile_rss(t, Ystar, kink_grid(t, 1, min_segment)).min(axis=0)
    r2 = kink_profile_rss(t, Ystar, kink_grid(t, 2, min_segment, step=0.5)).min(axis=0)
    f_star = (r1 - r2) / (r2 / (n - 6))
    return float((np.sum(f_star >= f_obs) + 1) / (n_boot + 1))


def _admissible(t: np.ndarray, psi: np.ndarray, min_segment: int) -> bool:
    gap = t[min_segment - 1] - t[0]
    return bool(
        np.all(np.isfinite(psi))
        and psi[0] >= t[min_segment - 1] - 1e-9
        and psi[-1] <= t[-min_segment] + 1e-9
        and np.all(np.diff(psi) >= gap - 1e-9)
    )


def _davies(t: np.ndarray, y: np.ndarray) -> float:
    """Davies' test p-value for a slope change in y ~ 1 + t, as R ``segmented::davies.test``
    (lm route ``daviesLM``, k = 10, two-sided): :func:`pipeline.methods.davies.davies_test`.

    (Formerly piecewise-regression's ``davies_test``, which tests a slope change given a jump
    with a normal reference and its own grid: 0.39 on FAOSTAT China where R gives 0.97;
    docs/validation_breakpoints.md.)
    """
    return float(davies_test(np.asarray(t, float), np.asarray(y, float))["p_value"])


def segmented_breaks(
    years: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    max_breaks: int = 2,
    min_segment: int = 4,
    criterion: Literal["bic", "aic"] = "bic",
    alpha: float = 0.05,
    n_sim: int = 4000,
    seed: int = 0,
) -> dict[str, Any]:
    """Slope changes: continuous segmented regression with 0..``max_breaks`` kinks.

    Parameters
    ----------
    years
        Time axis (years), shape ``(n,)``.
    y
        Values (any unit; slopes come out in that unit per year).
    max_breaks
        0, 1 or 2.
    min_segment
        Each segment spans at least this many observations (kinks lie in
        ``[t[min_segment-1], t[n-min_segment]]``).
    criterion
        ``"bic"`` or ``"aic"`` to choose the number of kinks.
    alpha
        Test level; intervals have coverage ``1 - alpha``.
    n_sim, seed
        Simulated null distribution of the kink sup-F statistic.

    Returns
    -------
    dict
        JSON-ready: per-``m`` RSS and criterion, chosen ``n_breaks``, each kink with estimate,
        standard error, Wald ``1-alpha`` interval (Muggeo) and profile-likelihood interval,
        slopes of each segment with intervals, fitted values, the existence tests and a plain
        conclusion.

    Notes
    -----
    Model: ``y = a + b t + sum_k d_k (t - psi_k)_+ + e``. Parameters counted by the criterion:
    ``2 + 2m + 1`` (line, one slope change and one position per kink, variance). The Muggeo
    fit (piecewise-regression, ``n_boot=0``) starts at the profile-grid optimum (grid step
    0.1 yr), so the result is deterministic; when Muggeo does not converge, the profile
    optimum is reported with its profile interval and ``converged: false``. The profile
    interval is ``{psi : (RSS(psi) - RSS_min) / (RSS_min/(n-p)) <= F_{1,n-p}(1-alpha)}``
    (one kink; the reported interval, stable when the kink sits on a data year, with
    ``truncated_low``/``truncated_high`` flags; the Muggeo Wald interval is supplementary).
    Existence: Davies' test (R ``segmented::davies.test``, lm route, two-sided) and
    the sup-F of one kink vs a straight line with its simulated finite-sample p-value; the
    sup-F p-value is the one that decides "significant" because its size is exact at n = 25
    (see docs/validation.md for both tests' measured false-positive rates).

    References
    ----------
    Muggeo (2003); Davies (1987); Pilgrim (2021) piecewise-regression.
    """
    t, yy = clean_series(years, y)
    n = len(yy)
    if n < 2 * min_segment + 1:
        raise ModelError(
            f"series of {n} values is too short for a kink with segments of at least "
            f"{min_segment} values. Fix: supply a longer series or lower trend.min_segment_years"
        )
    models: list[dict[str, Any]] = []
    fits: dict[int, dict[str, Any]] = {}
    X0 = np.column_stack([np.ones(n), t - t.mean()])
    beta0 = np.linalg.lstsq(X0, yy, rcond=None)[0]
    rss0 = float(((yy - X0 @ beta0) ** 2).sum())
    models.append(
        {"n_breaks": 0, "rss": rss0, criterion: information_criterion(rss0, n, 3, criterion), "break_years": []}
    )
    for m in range(1, max_breaks + 1):
        grid = kink_grid(t, m, min_segment)
        if grid.size == 0:
            break
        prof = kink_profile_rss(t, yy, grid)
        best = int(np.argmin(prof))
        psi, rss = grid[best], float(prof[best])
        mug = _muggeo(t, yy, psi)
        # Accept Muggeo only inside the admissible region and not at a worse optimum than the
        # grid's; otherwise keep the grid optimum and take the SE from one Muggeo step there.
        if mug is not None:
            est = mug["estimates"]
            psi_hat = np.array([est[f"breakpoint{i + 1}"]["estimate"] for i in range(m)])
            if mug["rss"] <= rss * (1 + 1e-6) + 1e-12 and _admissible(t, psi_hat, min_segment):
                psi, rss = psi_hat, mug["rss"]
            else:
                mug = None
        if mug is None:
            mug = _one_step(t, yy, psi)
        fits[m] = {"psi": np.asarray(psi, float), "rss": rss, "muggeo": mug, "grid": grid, "profile": prof}
        models.append(
            {
                "n_breaks": m,
                "rss": rss,
                criterion: information_criterion(rss, n, 3 + 2 * m, criterion),
                "break_years": [float(p) for p in np.atleast_1d(psi)],
            }
        )
    ic_choice = min(models, key=lambda d: (d[criterion], d["n_breaks"]))["n_breaks"]
    grid1 = kink_grid(t, 1, min_segment)
    supf = float(_sup_f_kink(t, yy, grid1)[0])
    p_supf = mc_pvalue(supf, _null_sup_f_kink(tuple(float(v) for v in t), min_segment, n_sim, seed))
    p_davies = _davies(t, yy)
    significant = p_supf < alpha
    # The criterion alone over-fits at n = 25 (a kink is found in ~13 % of straight lines), so a
    # kink is reported only when the existence test also rejects.
    chosen = ic_choice if significant else 0
    p_second = None
    if chosen == 2:
        # BIC adds a spurious second kink to ~10 % of one-kink series at n = 25: keep it only
        # if a parametric-bootstrap F test of two kinks against one also rejects.
        p_second = _second_kink_pvalue(
            t, yy, fits[1]["psi"], fits[1]["rss"], fits[2]["rss"], min_segment, n_boot=199, seed=seed
        )
        if p_second >= alpha:
            chosen = 1
    result: dict[str, Any] = {
        "method": "continuous segmented regression (Muggeo 2003, piecewise-regression), "
        "start from the profile-likelihood grid optimum",
        "year_convention": KINK_CONVENTION,
        "min_segment": int(min_segment),
        "criterion": criterion,
        "models": models,
        "n_breaks": chosen,
        "criterion_choice": ic_choice,
        "existence_test": {
            "decision_test": "sup-F",
            "sup_f": {
                "name": "sup-F, one kink vs a straight line; finite-sample p-value simulated under Gaussian errors",
                "statistic": supf,
                "p_value": p_supf,
                "n_sim": int(n_sim),
                "seed": int(seed),
            },
            "davies": {
                "name": "Davies (1987) for y ~ 1 + t as R segmented::davies.test (k = 10, two-sided)",
                "p_value": p_davies,
            },
            "second_kink": None
            if p_second is None
            else {
                "name": "F test of two kinks vs one, parametric bootstrap from the one-kink fit (199 draws)",
                "p_value": p_second,
            },
        },
        "significant": bool(significant),
    }
    result.update(_describe_kinks(t, yy, chosen, fits.get(chosen), alpha))
    if not significant:
        result["conclusion"] = f"{NO_BREAK_TEXT} (sup-F p = {p_supf:.3g} >= {alpha:g}; Davies p = {p_davies:.3g})"
    elif chosen == 0:
        result["conclusion"] = f"sup-F p = {p_supf:.3g} < {alpha:g} but {criterion.upper()} prefers a straight line"
    else:
        yrs = ", ".join(f"{b['break_year']:.1f}" for b in result["breaks"])
        result["conclusion"] = f"{chosen} slope change(s) at {yrs} (sup-F p = {p_supf:.3g}; Davies p = {p_davies:.3g})"
    return result


def _describe_kinks(t: np.ndarray, y: np.ndarray, m: int, fit: dict[str, Any] | None, alpha: float) -> dict[str, Any]:
    n = t.size
    dof = n - 2 - 2 * m
    tq = float(stats.t.ppf(1 - alpha / 2, dof))
    if m == 0:
        psi = np.zeros(0)
    else:
        assert fit is not None, "segmented_breaks passes the fit of every model with kinks"
        psi = fit["psi"]
    X = _kink_design(t - t.mean(), (psi - t.mean())[None, :])[0]
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    fitted = X @ beta
    s2 = float(((y - fitted) ** 2).sum()) / dof
    cov = s2 * np.linalg.inv(X.T @ X)
    breaks = []
    mug = fit["muggeo"] if fit else None
    for i in range(m):
        b: dict[str, Any] = {
            "break_year": float(psi[i]),
            "last_year_old_regime": int(math.floor(psi[i])),
            "first_year_new_regime": int(math.floor(psi[i])) + 1,
        }
        if mug is not None:
            e = mug["estimates"][f"breakpoint{i + 1}"]
            b.update(
                se=float(e["se"]),
                wald_ci_low=float(psi[i] - tq * e["se"]),
                wald_ci_high=float(psi[i] + tq * e["se"]),
                converged=bool(mug["converged"]),
            )
        else:
            b.update(se=None, wald_ci_low=None, wald_ci_high=None, converged=False)
        if m == 1:
            # Profile-likelihood F interval: the primary one. It depends on psi only through the
            # continuous RSS(psi), so it does not jump when the kink sits on a data year, as the
            # Muggeo SE does (11.6 vs 10.6 for a shift of 1e-7; docs/validation_breakpoints.md).
            assert fit is not None  # m == 1 > 0: see above
            grid = fit["grid"][:, 0]
            pr = profile_kink_interval(
                t, y, level=1 - alpha, method="F", psi_hat=float(psi[0]), bounds=(float(grid.min()), float(grid.max()))
            )
            b.update(
                ci_low=pr["low"],
                ci_high=pr["high"],
                profile_ci_low=pr["low"],
                profile_ci_high=pr["high"],
                truncated_low=pr["truncated_low"],
                truncated_high=pr["truncated_high"],
                disjoint=pr["disjoint"],
                interval_method="profile likelihood F",
            )
        else:
            # two kinks: the Wald (Muggeo) interval, the profile of one kink needs the other fixed
            b.update(ci_low=b["wald_ci_low"], ci_high=b["wald_ci_high"], interval_method="Wald (Muggeo SE)")
        breaks.append(b)
    # Slope of segment s = b + sum_{k<s} d_k: a linear combination of the coefficients.
    slopes = []
    edges = [float(t[0]), *[float(p) for p in psi], float(t[-1])]
    for s in range(m + 1):
        c = np.zeros(X.shape[1])
        c[1] = 1.0
        c[2 : 2 + s] = 1.0
        est, se = float(c @ beta), float(math.sqrt(c @ cov @ c))
        if mug is not None and f"alpha{s + 1}" in mug["estimates"]:
            # Muggeo's SE comes from the linearised model that also estimates the kink, so it
            # carries the kink's uncertainty; the fixed-kink OLS SE would not.
            se = float(mug["estimates"][f"alpha{s + 1}"]["se"])
        slopes.append(
            {
                "segment": s + 1,
                "from_year": edges[s],
                "to_year": edges[s + 1],
                "slope_per_year": est,
                "se": se,
                "ci_low": est - tq * se,
                "ci_high": est + tq * se,
            }
        )
    return {
        "breaks": breaks,
        "slopes": slopes,
        "fitted": [float(v) for v in fitted],
        "interval": (
            f"{100 * (1 - alpha):g} % profile-likelihood F interval of the kink (one kink; "
            f"truncated_* flags when it reaches the search bounds), Wald (Muggeo SE, t with {dof} "
            "dof) as wald_ci_* and for two kinks"
        ),
        "converged": all(b["converged"] for b in breaks),
    }


def kink_year_draws(
    years: Sequence[float] | np.ndarray, draws: np.ndarray, min_segment: int = 4, step: float = 0.1
) -> np.ndarray:
    """One-kink least-squares break year of each series in ``draws`` (e.g. Monte Carlo draws).

    Parameters
    ----------
    years
        Time axis, ``(n,)``.
    draws
        Series, ``(d, n)``.
    min_segment, step
        Admissible range and resolution (years) of the kink grid.

    Returns
    -------
    numpy.ndarray
        Break year per draw, ``(d,)``.

    Notes
    -----
    The profile-likelihood grid optimum, i.e. the value Muggeo's algorithm converges to when
    it reaches the global optimum, to within ``step``; vectorised over draws.
    """
    t = np.asarray(years, dtype=float)
    grid = kink_grid(t, 1, min_segment, step)
    out = []
    for chunk in np.array_split(np.asarray(draws, float), max(1, len(draws) // 500)):
        prof = kink_profile_rss(t, chunk, grid)
        out.append(grid[np.argmin(prof, axis=0), 0])
    return np.concatenate(out)


def kink_slopes(years: Sequence[float] | np.ndarray, draws: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Slopes before and after each series' own kink (continuous one-kink least squares).

    Parameters
    ----------
    years
        Time axis, ``(n,)``.
    draws
        Series, ``(d, n)``.
    psi
        Kink year of each series, ``(d,)`` (e.g. from :func:`kink_year_draws`).

    Returns
    -------
    numpy.ndarray
        ``(d, 2)``: slope before and after the kink, in the series' unit per year.

    Notes
    -----
    y = a + b t + c (t - psi)+ ; the slope before is b and after is b + c.
    """
    t = np.asarray(years, dtype=float)
    y = np.asarray(draws, dtype=float)
    out = np.empty((len(y), 2))
    for j, (series, k) in enumerate(zip(y, np.asarray(psi, dtype=float))):
        X = np.column_stack([np.ones_like(t), t - k, np.clip(t - k, 0.0, None)])
        coef = np.linalg.lstsq(X, series, rcond=None)[0]
        out[j] = coef[1], coef[1] + coef[2]
    return out

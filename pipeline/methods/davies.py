"""Davies' test for a change in slope, computed exactly as R ``segmented::davies.test`` does.

For the straight line ``y = a + b x + e`` the test asks whether a kink
``y = a + b x + d (x - psi)_+ + e`` with ``d != 0`` exists for some ``psi``. The kink position
``psi`` exists only under the alternative, so the usual tests do not apply (Davies 1987); the
test evaluates a statistic ``S(psi)`` for the slope change ``d`` on a grid of ``psi`` values and
bounds the p-value of ``max S`` using the total variation of the process ``S(psi)``.

R ``segmented`` (1.6-2) has two routes, both reproduced here:

* ``route="lm"`` (R's ``daviesLM``, used for an ``lm`` fit with ``n <= 300``): ``S`` is the
  t statistic of ``d``, the naive p-value is Student's t with ``n - 3`` degrees of freedom and
  the correction is Davies' (2002) bound for a t process, with the total variation taken on the
  angle scale ``asin(sqrt(R^2_psi))``. **R ignores** ``type`` **here**.
* ``route="glm"`` (R's ``daviesGLM`` with the Gaussian family, used for ``glm`` fits and for
  ``lm`` fits with ``n > 300``, where R forces ``type="wald"``): ``S`` is the signed root of
  the deviance reduction (``type="lrt"``) or the Wald z of ``d`` (``type="wald"``), the naive
  p-value is normal and the correction is Davies' (1987) bound on the raw scale. For the
  Gaussian family with estimated dispersion both types give the same numbers (the signed root
  of the F statistic is the t statistic), as R does to rounding.

``route="auto"`` chooses as R does for an ``lm`` fit: ``"lm"`` when ``n <= 300``, else ``"glm"``
with ``type="wald"``.

The grid is R's: ``k`` equally spaced values from the second smallest to the second largest
``x`` (``seq(sort(x)[2], sort(x)[n-1], length = k)``), not quantiles. piecewise-regression's
``davies_test`` differs on three counts (grid from the third to the third-last point, a jump
term ``I(x > psi)`` in the model so it tests a slope change *given* a jump, and a normal
reference with the raw-scale variation), which is why it gives 0.39 on FAOSTAT's China series
where R gives 0.974.

Pure functions: arrays in, dictionaries out.

References
----------
Davies, R.B. (1987) Hypothesis testing when a nuisance parameter is present only under the
alternative. Biometrika 74:33-43.
Davies, R.B. (2002) Hypothesis testing when a nuisance parameter is present only under the
alternative: linear model case. Biometrika 89:484-489.
Muggeo, V.M.R. (2003) Estimating regression models with unknown break-points. Statistics in
Medicine 22:3055-3071.
Muggeo, V.M.R. (2016) Testing with a nuisance parameter present only under the alternative: a
score-based approach with application to segmented modelling. Journal of Statistical
Computation and Simulation 86:3059-3067 (the pseudo-score alternative, R ``pscore.test``; not
implemented here).
R package ``segmented`` 1.6-2, functions ``davies.test`` and its internal ``daviesLM`` /
``daviesGLM`` (printed from R with ``print(segmented::davies.test)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import special, stats

Alternative = Literal["two.sided", "less", "greater"]

_ALTERNATIVES = ("two.sided", "less", "greater")


def davies_grid(x: Sequence[float] | np.ndarray, k: int = 10) -> np.ndarray:
    """The evaluation grid of R ``segmented::davies.test``.

    Parameters
    ----------
    x
        Segmented variable (e.g. years), shape ``(n,)``.
    k
        Number of grid points (R's default 10; R warns below 10 and refuses ``k <= 1``).

    Returns
    -------
    numpy.ndarray
        ``k`` values, equally spaced from the second smallest to the second largest ``x``.

    Notes
    -----
    R: ``values <- seq(sort(Z)[2], sort(Z)[(n - 1)], length = k)``.
    """
    if k <= 1:
        raise ValueError("k > 1 is required (k >= 10 is recommended)")
    z = np.sort(np.asarray(x, dtype=float))
    if z.size < 4:
        raise ValueError("Davies' test needs at least 4 observations")
    return np.linspace(z[1], z[-2], int(k))


def _fits(x: np.ndarray, y: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per grid value: hinge coefficient, its unscaled variance, RSS; and the null RSS.

    The design is ``[(x - psi)_+, 1, x]`` as in R; ``x`` and ``psi`` are centred by ``mean(x)``
    first, which leaves every statistic unchanged (the hinge is shift-invariant and the
    intercept absorbs the shift) and improves the conditioning with calendar years.
    """
    c = x.mean()
    xc, vc = x - c, values - c
    n = x.size
    X0 = np.column_stack([np.ones(n), xc])
    b0 = np.linalg.lstsq(X0, y, rcond=None)[0]
    rss0 = float(((y - X0 @ b0) ** 2).sum())
    bhat = np.full(values.size, np.nan)
    v11 = np.full(values.size, np.nan)
    rss = np.full(values.size, np.nan)
    eps = np.finfo(float).eps
    for i, p in enumerate(vc):
        X1 = np.column_stack([np.maximum(xc - p, 0.0), np.ones(n), xc])
        xtx = X1.T @ X1
        # R's solve() refuses a system whose reciprocal condition number is below eps.
        if not np.all(np.isfinite(xtx)) or 1.0 / np.linalg.cond(xtx, 1) < eps:
            continue
        inv = np.linalg.inv(xtx)
        b = inv @ (X1.T @ y)
        r = y - X1 @ b
        bhat[i], v11[i], rss[i] = b[0], inv[0, 0], float(r @ r)
    return bhat, v11, rss, np.array(rss0)


def davies_test(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    k: int = 10,
    alternative: Alternative = "two.sided",
    type: Literal["lrt", "wald"] = "lrt",  # R's argument name
    values: Sequence[float] | np.ndarray | None = None,
    route: Literal["auto", "lm", "glm"] = "auto",
) -> dict[str, Any]:
    """Davies' test for a change in the slope of ``y ~ 1 + x``, as R ``segmented::davies.test``.

    Parameters
    ----------
    x
        Segmented variable (years), shape ``(n,)``.
    y
        Response, shape ``(n,)``.
    k
        Number of grid points when ``values`` is not given (R's default 10).
    alternative
        ``"two.sided"`` (slope change of either sign), ``"less"`` (slope decreases) or
        ``"greater"`` (slope increases).
    type
        ``"lrt"`` or ``"wald"``: the statistic of the ``glm`` route (ignored by the ``lm``
        route, as in R).
    values
        Explicit grid of kink positions (overrides ``k``), as R's ``values``.
    route
        ``"lm"`` (R's ``daviesLM``), ``"glm"`` (R's ``daviesGLM``, Gaussian family) or
        ``"auto"`` (what R does for an ``lm`` fit: ``"lm"`` if ``n <= 300``, else ``"glm"``
        with ``type="wald"``).

    Returns
    -------
    dict
        ``p_value`` (capped at 1 as R reports it), ``p_value_uncapped``, ``best_at`` (the grid
        value where the statistic is extreme, R's "'best' at"), ``statistic`` (``M``),
        ``p_naive`` (one-sided tail before the correction), ``total_variation`` (``V``),
        ``n_points`` (grid values with a non-singular fit), ``grid`` and ``process`` (the
        statistic at each grid value, R's ``process[, "stat.values"]``), ``df_residual``,
        ``alternative``, ``route``, ``type`` (``None`` for the ``lm`` route).

    Notes
    -----
    For each grid value ``psi_j`` the model ``y = a + b x + d (x - psi_j)_+`` is fitted by OLS;
    ``nu = n - 3``, ``RSS_j`` its residual sum of squares, ``RSS_0`` that of the straight line.

    *lm route* (Davies 2002). ``S_j = d_j / (s_j sqrt(c_j))`` with ``c_j`` the hinge element of
    ``(X'X)^-1`` and ``s_j^2 = RSS_j / nu``; the variation is taken on the angle scale,
    ``V = sum_j |asin(sqrt(u_j)) - asin(sqrt(u_{j-1}))|`` with
    ``u_j = (d_j^2 / c_j) / (d_j^2 / c_j + RSS_j)``. With ``M = max_j |S_j|`` (two-sided),
    ``max_j S_j`` ("greater") or ``min_j S_j`` ("less"), ``u = M^2 / (nu + M^2)``:

    ``p = P(T_nu > |M|) + V (1 - u)^((nu - 1)/2) Gamma((nu + 1)/2) / (2 Gamma(nu/2) sqrt(pi))``

    (for "less", ``P(T_nu < M)``), doubled for the two-sided alternative.

    *glm route* (Davies 1987). ``S_j = sign(d_j) sqrt((RSS_0 - RSS_j) / (RSS_j / nu))``
    (``lrt``) or ``d_j / sqrt(RSS_j / nu * c_j)`` (``wald``), ``V = sum_j |S_j - S_{j-1}|`` and

    ``p = P(Z > |M|) + V exp(-M^2 / 2) / sqrt(8 pi)``,

    doubled for the two-sided alternative. Both are upper bounds; R reports ``min(p, 1)``.

    References
    ----------
    Davies (1987) Biometrika 74:33-43; Davies (2002) Biometrika 89:484-489; Muggeo (2003)
    Stat Med 22:3055-3071; R ``segmented`` 1.6-2 ``davies.test`` (``daviesLM``, ``daviesGLM``).
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.ndim != 1 or xa.shape != ya.shape:
        raise ValueError("x and y must be 1-D arrays of equal length")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ValueError("x and y must be finite")
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}, not {alternative!r}")
    if type not in ("lrt", "wald"):
        raise ValueError(f"type must be 'lrt' or 'wald', not {type!r}")
    n = xa.size
    grid = davies_grid(xa, k) if values is None else np.asarray(values, dtype=float)
    if route == "auto":
        route_used, type_used = ("lm", None) if n <= 300 else ("glm", "wald")
    elif route == "lm":
        route_used, type_used = "lm", None
    elif route == "glm":
        route_used, type_used = "glm", type
    else:
        raise ValueError(f"route must be 'auto', 'lm' or 'glm', not {route!r}")

    bhat, v11, rss, rss0 = _fits(xa, ya, grid)
    ok = np.isfinite(bhat)
    valori, bhat, v11, rss = grid[ok], bhat[ok], v11[ok], rss[ok]
    if valori.size == 0:
        raise ValueError("no grid value gave a non-singular fit")
    df_res = n - 3
    if route_used == "lm":
        stat = bhat / (np.sqrt(rss / df_res) * np.sqrt(v11))
        z2 = bhat**2 / v11
        angle = np.arcsin(np.sqrt(z2 / (z2 + rss)))
        variation = float(np.abs(np.diff(angle)).sum())
    else:
        disp = rss / df_res
        if type_used == "lrt":
            stat = np.sqrt(np.maximum(float(rss0) - rss, 0.0) / disp) * np.sign(bhat)
        else:
            stat = bhat / np.sqrt(disp * v11)
        variation = float(np.abs(np.diff(stat)).sum())

    if alternative == "less":
        j = int(np.argmin(stat))
        m_stat = float(stat[j])
    elif alternative == "greater":
        j = int(np.argmax(stat))
        m_stat = float(stat[j])
    else:
        j = int(np.argmax(np.abs(stat)))
        m_stat = float(abs(stat[j]))
    if route_used == "lm":
        dist = stats.t(df_res)
        p_naive = float(dist.cdf(m_stat) if alternative == "less" else dist.sf(m_stat))
        u = m_stat**2 / (df_res + m_stat**2)
        log_c = special.gammaln(df_res / 2 + 0.5) - special.gammaln(df_res / 2) - math.log(2 * math.sqrt(math.pi))
        correction = variation * (1 - u) ** ((df_res - 1) / 2) * math.exp(log_c)
    else:
        p_naive = float(stats.norm.cdf(m_stat) if alternative == "less" else stats.norm.sf(m_stat))
        correction = variation * math.exp(-(m_stat**2) / 2) / math.sqrt(8 * math.pi)
    p = (p_naive + correction) * (2.0 if alternative == "two.sided" else 1.0)
    return {
        "method": "Davies' test for a change in the slope (as R segmented::davies.test)",
        "p_value": float(min(p, 1.0)),
        "p_value_uncapped": float(p),
        "best_at": float(valori[j]),
        "statistic": m_stat,
        "p_naive": p_naive,
        "total_variation": variation,
        "n_points": int(valori.size),
        "grid": valori.tolist(),
        "process": stat.tolist(),
        "df_residual": int(df_res),
        "alternative": alternative,
        "route": route_used,
        "type": type_used,
    }

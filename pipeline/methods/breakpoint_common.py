"""Breakpoints of an annual series: slope changes (segmented) and mean/coefficient shifts.

Two different questions, two methods:

* **Slope change** (continuous broken line, Muggeo 2003): ``y = a + b t + sum_k d_k (t - psi_k)_+``
  with 0, 1 or 2 kinks, the number chosen by BIC (or AIC). The fit is piecewise-regression's
  implementation of Muggeo's algorithm, started deterministically from the global optimum of an
  exact profile-likelihood grid over the kink position(s), so it never depends on random
  restarts. Existence of a kink: Davies' (1987) test (piecewise-regression) and a finite-sample
  sup-F test whose null distribution is simulated once per design (the statistic is pivotal under
  Gaussian errors, so the p-value is exact up to Monte Carlo error).
* **Mean or coefficient shift** (discontinuous, Bai & Perron 1998/2003): optimal partition by
  dynamic programming over a segment-RSS matrix, the number of breaks by BIC, existence by the
  sup-F test (Andrews 1993) with a simulated finite-sample p-value, and break-date intervals from
  Bai's (1997) asymptotic distribution, computed as R ``strucchange::confint`` does (heterogeneous
  regressors and errors across segments).

Year conventions (stated in every result): a kink ``psi`` is a point on the year axis where the
slope changes; a mean-shift break is reported as the **last year of the old regime**
(strucchange's convention), with the first year of the new regime beside it.

Everything here is pure: arrays in, dictionaries and frames out.

References
----------
Muggeo, V.M.R. (2003) Estimating regression models with unknown break-points. Statistics in
Medicine 22:3055-3071.
Davies, R.B. (1987) Hypothesis testing when a nuisance parameter is present only under the
alternative. Biometrika 74:33-43.
Pilgrim, C. (2021) piecewise-regression (aka segmented regression) in Python. JOSS 6(68):3859.
Bai, J. (1997) Estimation of a change point in multiple regression models. Review of Economics
and Statistics 79:551-563.
Bai, J., Perron, P. (2003) Computation and analysis of multiple structural change models. Journal
of Applied Econometrics 18:1-22.
Andrews, D.W.K. (1993) Tests for parameter instability and structural change with unknown change
point. Econometrica 61:821-856.
Zeileis, A., Kleiber, C., Kraemer, W., Hornik, K. (2003) Testing and dating of structural changes
in practice. Computational Statistics & Data Analysis 44:109-123 (strucchange).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipeline.errors import ModelError

KINK_CONVENTION = (
    "break_year is the point on the year axis where the slope changes (continuous broken line); "
    "the last year of the old regime is floor(break_year), the first year of the new one is "
    "floor(break_year) + 1"
)


SHIFT_CONVENTION = (
    "break_year is the LAST year of the old regime (as R strucchange reports it); "
    "first_year_new_regime = break_year + 1"
)


NO_BREAK_TEXT = "no significant break"


def information_criterion(rss: float, n: int, n_params: int, criterion: str) -> float:
    loglik = -0.5 * n * (math.log(max(rss, 1e-300) / n) + 1 + math.log(2 * math.pi))
    pen = math.log(n) if criterion == "bic" else 2.0
    return -2 * loglik + pen * n_params


def mc_pvalue(stat: float, null_sorted: np.ndarray) -> float:
    exceed = null_sorted.size - np.searchsorted(null_sorted, stat, side="left")
    return float((exceed + 1) / (null_sorted.size + 1))


def clean_series(years: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(years, dtype=float)
    v = np.asarray(y, dtype=float)
    if t.shape != v.shape or t.ndim != 1:
        raise ModelError("years and values must be 1-D of equal length. Fix: pass one value per year")
    if not np.all(np.isfinite(v)) or not np.all(np.isfinite(t)):
        raise ModelError("the series has missing or non-finite values. Fix: drop or fill those years")
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    if np.any(np.diff(t) <= 0):
        raise ModelError("the series has duplicate years. Fix: keep one value per year")
    return t, v

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

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipeline.methods.breakpoint_common import (
    KINK_CONVENTION,
    NO_BREAK_TEXT,
    SHIFT_CONVENTION,
    clean_series,
)
from pipeline.methods.mean_shift import mean_shift_breaks
from pipeline.methods.slope_change import kink_slopes, kink_year_draws, segmented_breaks

# The two algorithms live in their own modules; this one is the entry point that runs both.
__all__ = [
    "KINK_CONVENTION",
    "NO_BREAK_TEXT",
    "SHIFT_CONVENTION",
    "analyse_series",
    "kink_slopes",
    "kink_year_draws",
    "mean_shift_breaks",
    "segmented_breaks",
    "summary_table",
]


def analyse_series(
    years: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    max_breaks: int = 2,
    min_segment: int = 4,
    criterion: Literal["bic", "aic"] = "bic",
    alpha: float = 0.05,
    n_sim: int = 4000,
    seed: int = 0,
    shift_regressors: Literal["mean", "trend"] = "trend",
) -> dict[str, Any]:
    """Both analyses of one annual series: slope changes and mean shifts.

    Parameters are those of :func:`segmented_breaks` and :func:`mean_shift_breaks`;
    ``shift_regressors`` is the segment model of the shift analysis: ``"trend"`` (default,
    ``y ~ 1 + t``: shifts in level or slope of a trending series) or ``"mean"`` (``y ~ 1``, a
    mean shift; only for series without a trend: on a rising series it cuts the trend into level
    steps, e.g. two "significant" breaks on FAOSTAT and EDGAR China, none with the trend in the
    model; docs/validation_breakpoints.md).

    Returns
    -------
    dict
        ``{"n", "first_year", "last_year", "slope_change": ..., "mean_shift": ...}``.
    """
    t, v = clean_series(years, y)
    return {
        "n": int(t.size),
        "first_year": float(t[0]),
        "last_year": float(t[-1]),
        "slope_change": segmented_breaks(t, v, max_breaks, min_segment, criterion, alpha, n_sim, seed),
        "mean_shift": mean_shift_breaks(t, v, shift_regressors, max_breaks, min_segment, criterion, alpha, n_sim, seed),
    }


def summary_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per reported break (or one 'no break' row per method) of :func:`analyse_series`."""
    rows = []
    for key in ("slope_change", "mean_shift"):
        r = result[key]
        p = r["existence_test"]["sup_f"]["p_value"] if key == "slope_change" else r["existence_test"]["p_value"]
        base = {
            "method": key,
            "n_breaks": r["n_breaks"],
            "p_value": p,
            "significant": r["significant"],
            "conclusion": r["conclusion"],
            "year_convention": r["year_convention"],
        }
        if not r["breaks"]:
            rows.append({**base, "break": 0})
        for i, b in enumerate(r["breaks"]):
            row = {
                **base,
                "break": i + 1,
                "break_year": b["break_year"],
                "ci_low": b["ci_low"],
                "ci_high": b["ci_high"],
                "se": b.get("se"),
                "interval_method": b.get("interval_method"),
                "truncated_low": b.get("truncated_low"),
                "truncated_high": b.get("truncated_high"),
            }
            if key == "slope_change":
                row["slope_before_per_year"] = r["slopes"][i]["slope_per_year"]
                row["slope_after_per_year"] = r["slopes"][i + 1]["slope_per_year"]
            rows.append(row)
    cols = [
        "method",
        "break",
        "n_breaks",
        "break_year",
        "ci_low",
        "ci_high",
        "interval_method",
        "truncated_low",
        "truncated_high",
        "se",
        "slope_before_per_year",
        "slope_after_per_year",
        "p_value",
        "significant",
        "conclusion",
        "year_convention",
    ]
    return pd.DataFrame(rows).reindex(columns=cols)

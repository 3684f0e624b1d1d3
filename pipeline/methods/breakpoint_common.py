"""What the two breakpoint methods share: year conventions, information criteria, Monte Carlo
p-values and the cleaning of an annual series (see :mod:`pipeline.methods.breakpoints`)."""

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

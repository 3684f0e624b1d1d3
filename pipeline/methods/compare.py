"""Scope-matched comparison of this inventory with EDGAR and FAOSTAT: totals, trends, maps, bridge.

Everything here is pure (frames and arrays in, frames and dictionaries out); the compare stage
(:mod:`pipeline.stages.compare`) reads the files and writes the tables. Every mass is carried in
**kg N2O-N per year**; reference inventories reported in N2O mass (EDGAR: t or Gg N2O, FAOSTAT:
kt N2O) are converted once, with :mod:`pipeline.units` (N2O-N = N2O x 28/44).

Scope matching
--------------
Each reference series is multiplied by a documented scope share before it is compared, and the
share and both scopes are written on every row (columns ``scope_inventory``, ``scope_reference``,
``reference_scope_share``):

* EDGAR AGS (gridded) and v4.3.2 4D1 (national) contain manure applied to soils and crop residues
  (AGS also pasture deposition, 4D2): ``edgar_synthetic_share`` (config) is the share of the
  sector attributed to synthetic N; ``None`` compares the whole sector and says so.
* FAOSTAT "Synthetic Fertilizers" is Tier 1 direct + indirect N2O of synthetic N; its direct part
  is ``EF1 / (EF1 + FracGASF EF4 + FracLEACH EF5)`` of the total (IPCC 2006 defaults: 0.01 /
  0.01325 = 0.7547), used unless the inventory includes indirect N2O itself.

The bridge
----------
For each year, with F the fitted inventory, T the IPCC Tier 1 run of this inventory on its own
activity data and E the scope-matched EDGAR series (all kg N2O-N)::

    F - E  =  (T - E)            +  (F - T)
    total     different activity    different emission model
              data                  (same activity data)

The identity is exact; :func:`bridge` reports the closure ``|(T-E) + (F-T) - (F-E)| / |F-E|``
(floating point only, < 1e-12 in practice).

References
----------
IPCC (1997) Revised 1996 Guidelines, Vol. 3 Ch. 4 (sectors 4C, 4D). IPCC (2006) Guidelines
Vol. 4 Ch. 11, Tables 11.1 and 11.3 (EF1, EF4, EF5, FracGASF, FracLEACH).
Janssens-Maenhout, G. et al. (2019) EDGAR v4.3.2, Earth Syst. Sci. Data 11:959-1002.
Crippa, M. et al. (2024) ESSD 16:2811-2830 (EDGAR v8.0 / 2024 GHG).
FAO (2022) Methods for estimating greenhouse gas emissions from agriculture (FAOSTAT GT domain).
Shang, Z. et al. (2019) Global Change Biology 25:3706-3719 (the slowdown EDGAR misses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from pipeline import units
from pipeline.errors import ModelError
from pipeline.methods.breakpoints import analyse_series
from pipeline.methods.davies import davies_test
from pipeline.methods.gridding import Grid, Weights, aggregate_to_counties
from pipeline.methods.kink_interval import (
    broken_line_slopes,
    fit_kink,
    profile_kink_interval,
)
from pipeline.methods.options import TrendOptions

#: IPCC 2006 defaults (Vol. 4 Ch. 11 Tables 11.1, 11.3) behind FAOSTAT's synthetic-fertilizer N2O.
IPCC2006_EF1 = 0.01
IPCC2006_EF4 = 0.01
IPCC2006_EF5 = 0.0075
IPCC2006_FRAC_GASF = 0.10
IPCC2006_FRAC_LEACH = 0.30
#: Direct share of FAOSTAT's Tier 1 synthetic-fertilizer N2O: EF1 / (EF1 + FracGASF EF4 + FracLEACH EF5).
FAOSTAT_DIRECT_SHARE = IPCC2006_EF1 / (
    IPCC2006_EF1 + IPCC2006_FRAC_GASF * IPCC2006_EF4 + IPCC2006_FRAC_LEACH * IPCC2006_EF5
)

#: What each reference series contains (written on every table row and figure).
REFERENCE_SCOPES: dict[str, str] = {
    "edgar_grid": (
        "EDGAR AGS gridded (IPCC-1996 4C+4D: synthetic N, manure applied, crop residues, "
        "organic soils, pasture deposition; no indirect)"
    ),
    "edgar_national": (
        "EDGAR v4.3.2 national 4D1 direct soil emissions (synthetic N, manure applied, "
        "crop residues, organic soils; no grazing 4D2, no indirect 4D3)"
    ),
    "faostat": "FAOSTAT Synthetic Fertilizers, IPCC 2006 Tier 1 direct + indirect N2O of synthetic N",
}

#: Relative closure tolerance of the bridge (issue #10).
BRIDGE_TOLERANCE = 1e-9


# ---------------------------------------------------------------------------------------------
# Units and scope
# ---------------------------------------------------------------------------------------------
def reference_to_n2o_n_kg(values: np.ndarray | Sequence[float], unit: str) -> np.ndarray:
    """Reference masses in ``t N2O``, ``kt N2O``/``Gg N2O`` or ``kg N2O-N`` to kg N2O-N.

    Notes
    -----
    N2O-N = N2O x 28/44; t = 1e3 kg, kt = Gg = 1e6 kg (:mod:`pipeline.units`).
    """
    v = np.asarray(values, dtype=np.float64)
    key = unit.replace(" ", "").lower()
    if key in ("tn2o", "tonnesn2o", "mgn2o"):
        return np.asarray(units.n2o_t_to_n2o_n_kg(v), dtype=np.float64)
    if key in ("ktn2o", "ggn2o"):
        return np.asarray(units.n2o_kt_to_n2o_n_kg(v), dtype=np.float64)
    if key in ("kgn2o-n", "kgn2on"):
        return v.copy()
    raise ValueError(f"unknown reference unit {unit!r}; use 't N2O', 'kt N2O', 'Gg N2O' or 'kg N2O-N'")


@dataclass(frozen=True)
class Scope:
    """Scope of one comparison: what each side holds and the share applied to the reference."""

    inventory: str
    reference: str
    reference_share: float
    share_note: str

    def columns(self) -> dict[str, Any]:
        """The scope columns written on every table row."""
        return {
            "scope_inventory": self.inventory,
            "scope_reference": self.reference,
            "reference_scope_share": self.reference_share,
            "scope_note": self.share_note,
        }


def inventory_scope(background_included: bool, indirect_included: bool) -> str:
    """Text of this inventory's scope (the estimate stage's emission columns)."""
    s = "this inventory: direct N2O-N of synthetic N on cropland (fertilizer-induced"
    s += ", background included)" if background_included else ", background separate, not included)"
    return s + (" + indirect N2O-N" if indirect_included else "; indirect not included")


def reference_scope(
    kind: str, inventory_text: str, edgar_synthetic_share: float | None, indirect_included: bool
) -> Scope:
    """The :class:`Scope` of comparing this inventory with reference ``kind``.

    Parameters
    ----------
    kind
        ``"edgar_grid"``, ``"edgar_national"`` or ``"faostat"``.
    inventory_text
        From :func:`inventory_scope`.
    edgar_synthetic_share
        Share of the EDGAR sector attributed to synthetic N (0-1], or ``None``: whole sector.
    indirect_included
        Whether the inventory series includes indirect N2O (then FAOSTAT is compared whole).
    """
    if kind not in REFERENCE_SCOPES:
        raise ValueError(f"unknown reference {kind!r}; use one of {sorted(REFERENCE_SCOPES)}")
    if kind == "faostat":
        if indirect_included:
            return Scope(inventory_text, REFERENCE_SCOPES[kind], 1.0, "FAOSTAT direct + indirect compared whole")
        return Scope(
            inventory_text,
            REFERENCE_SCOPES[kind],
            FAOSTAT_DIRECT_SHARE,
            "FAOSTAT x EF1/(EF1+FracGASF*EF4+FracLEACH*EF5) = direct part only (IPCC 2006 defaults)",
        )
    if edgar_synthetic_share is None:
        return Scope(
            inventory_text,
            REFERENCE_SCOPES[kind],
            1.0,
            "whole EDGAR sector compared: it also holds manure and residue N, so it exceeds a "
            "synthetic-N inventory by scope (set compare.edgar_synthetic_share)",
        )
    share = float(edgar_synthetic_share)
    if not 0.0 < share <= 1.0:
        raise ValueError(f"edgar_synthetic_share must be in (0, 1], got {share}")
    return Scope(
        inventory_text,
        REFERENCE_SCOPES[kind],
        share,
        f"EDGAR x {share:g}: share attributed to synthetic N (compare.edgar_synthetic_share)",
    )


# ---------------------------------------------------------------------------------------------
# Totals
# ---------------------------------------------------------------------------------------------
def compare_totals(
    inventory: pd.DataFrame,
    reference: pd.DataFrame,
    scope: Scope,
    reference_name: str,
    keys: Sequence[str] = (),
    inventory_name: str = "fitted",
    reference_area: str = "",
) -> pd.DataFrame:
    """Inventory vs scope-matched reference per year (and unit): difference and ratio.

    Parameters
    ----------
    inventory
        Columns ``year``, ``*keys``, ``n2o_n_kg`` and optionally ``n2o_n_kg_p2_5`` /
        ``n2o_n_kg_p97_5`` (95 % interval), kg N2O-N per year.
    reference
        Columns ``year``, ``*keys``, ``n2o_n_kg`` (the reference's whole sector, kg N2O-N).
    scope
        The scope; ``reference_n2o_n_kg`` is the reference times ``scope.reference_share``.
    reference_name
        Written in column ``reference``.
    keys
        Unit columns (e.g. ``province_code``).
    inventory_name
        Written in column ``inventory`` (``fitted`` or ``tier1``).
    reference_area
        Geographic coverage of the reference (column ``reference_area``).

    Returns
    -------
    pandas.DataFrame
        ``inventory, reference, year, *keys, inventory_n2o_n_kg[, _p2_5, _p97_5], reference_sector_n2o_n_kg,
        reference_n2o_n_kg, difference_n2o_n_kg`` (inventory - reference), ``ratio``
        (inventory / reference), ``difference_n2o_kg``, scope columns. Only years (units) both
        sides have.

    Notes
    -----
    difference = I - s R, ratio = I / (s R), with s the scope share; N2O mass = N2O-N x 44/28.
    """
    on = ["year", *keys]
    inv_cols = [c for c in ("n2o_n_kg", "n2o_n_kg_p2_5", "n2o_n_kg_p97_5") if c in inventory.columns]
    inv = inventory[on + inv_cols].rename(columns={c: "inventory_" + c for c in inv_cols})
    ref = reference[on + ["n2o_n_kg"]].rename(columns={"n2o_n_kg": "reference_sector_n2o_n_kg"})
    out = inv.merge(ref, on=on, how="inner").sort_values(on).reset_index(drop=True)
    out["reference_n2o_n_kg"] = out["reference_sector_n2o_n_kg"] * scope.reference_share
    out["difference_n2o_n_kg"] = out["inventory_n2o_n_kg"] - out["reference_n2o_n_kg"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ratio"] = np.where(
            out["reference_n2o_n_kg"] != 0, out["inventory_n2o_n_kg"] / out["reference_n2o_n_kg"], np.nan
        )
    out["difference_n2o_kg"] = units.n2o_n_to_n2o(out["difference_n2o_n_kg"].to_numpy())
    out.insert(0, "reference", reference_name)
    out.insert(0, "inventory", inventory_name)
    out["reference_area"] = reference_area
    for k, v in scope.columns().items():
        out[k] = v
    return out


def bridge(fitted: pd.Series, tier1: pd.Series, edgar: pd.Series) -> pd.DataFrame:
    """Split fitted - EDGAR into "different activity data" and "different emission model".

    Parameters
    ----------
    fitted, tier1, edgar
        kg N2O-N per year indexed by year: this inventory (fitted model), the IPCC Tier 1 run of
        this inventory on the same activity data, and scope-matched EDGAR.

    Returns
    -------
    pandas.DataFrame
        ``year, fitted_n2o_n_kg, tier1_n2o_n_kg, edgar_n2o_n_kg, total_difference_n2o_n_kg``
        (F - E), ``activity_data_n2o_n_kg`` (T - E), ``emission_model_n2o_n_kg`` (F - T),
        ``closure_rel`` for the years all three have.

    Raises
    ------
    ModelError
        If a year's terms do not add up to the total within :data:`BRIDGE_TOLERANCE`.

    Notes
    -----
    F - E = (T - E) + (F - T). closure_rel = |(T-E) + (F-T) - (F-E)| / max(|F-E|, |F|, |E|)
    (relative to the largest magnitude, so a near-zero total does not inflate it).
    """
    df = pd.concat(
        {"fitted_n2o_n_kg": fitted, "tier1_n2o_n_kg": tier1, "edgar_n2o_n_kg": edgar}, axis=1, join="inner"
    ).sort_index()
    df.index.name = "year"
    df = df.reset_index()
    f, t, e = (df[c].to_numpy(np.float64) for c in ("fitted_n2o_n_kg", "tier1_n2o_n_kg", "edgar_n2o_n_kg"))
    total = f - e
    activity = t - e
    model = f - t
    scale = np.maximum.reduce([np.abs(total), np.abs(f), np.abs(e), np.full_like(f, 1e-300)])
    closure = np.abs(activity + model - total) / scale
    df["total_difference_n2o_n_kg"] = total
    df["activity_data_n2o_n_kg"] = activity
    df["emission_model_n2o_n_kg"] = model
    df["closure_rel"] = closure
    bad = ~(closure <= BRIDGE_TOLERANCE)  # NaN (a missing value) fails too
    if bad.any():
        y = int(df["year"].iloc[int(np.argmax(bad))])
        raise ModelError(f"bridge terms do not add up in {y} (relative {closure.max():.3g}). Fix: report this as a bug")
    return df


# ---------------------------------------------------------------------------------------------
# Trends and breakpoints
# ---------------------------------------------------------------------------------------------
def series_trend(
    years: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, options: TrendOptions
) -> dict[str, Any]:
    """Breakpoints of one series with the trend stage's tool, plus the one-kink fit.

    Parameters
    ----------
    years, values
        The annual series (any unit; slopes are in that unit per year).
    options
        Breakpoint settings (``max_breaks``, ``criterion``, ``alpha``, ``min_segment_years``,
        ``n_sim``, ``seed``).

    Returns
    -------
    dict
        ``analysis`` (:func:`pipeline.methods.breakpoints.analyse_series`), ``summary`` (see
        :func:`trend_summary`) and ``one_kink``: least-squares kink ``psi``, its 95 % profile-F
        interval, slopes before/after with 95 % intervals (as R ``segmented::slope``) and
        Davies' test (R ``segmented::davies.test``, lm route, k = 10, two-sided).
    """
    t = np.asarray(years, dtype=float)
    v = np.asarray(values, dtype=float)
    criterion: Literal["bic", "aic"] = "aic" if options.criterion == "aic" else "bic"
    analysis = analyse_series(
        list(t),
        list(v),
        max_breaks=options.max_breaks,
        min_segment=options.min_segment_years,
        criterion=criterion,
        alpha=options.alpha,
        n_sim=options.n_sim,
        seed=options.seed,
    )
    fk = fit_kink(t, v)
    interval = profile_kink_interval(t, v, level=1 - options.alpha, method="F")
    slopes = broken_line_slopes(t, v, fk["psi"], level=1 - options.alpha)
    dav = davies_test(t, v, k=10, alternative="two.sided")
    one = {
        "psi": float(fk["psi"]),
        "rss": float(fk["rss"]),
        "psi_ci_low": float(interval["low"]),
        "psi_ci_high": float(interval["high"]),
        "psi_ci_truncated": bool(interval["truncated_low"] or interval["truncated_high"]),
        "slope_before": float(slopes["slope_before"]["estimate"]),
        "slope_before_low": float(slopes["slope_before"]["low"]),
        "slope_before_high": float(slopes["slope_before"]["high"]),
        "slope_after": float(slopes["slope_after"]["estimate"]),
        "slope_after_low": float(slopes["slope_after"]["low"]),
        "slope_after_high": float(slopes["slope_after"]["high"]),
        "davies_p": float(dav["p_value"]),
        "davies_best_at": float(dav["best_at"]),
    }
    return {"analysis": analysis, "summary": trend_summary(analysis), "one_kink": one}


def trend_summary(analysis: dict[str, Any]) -> dict[str, Any]:
    """The facts of an :func:`analyse_series` result that the comparison states.

    Returns
    -------
    dict
        ``n_breaks``, ``significant``, ``p_value`` (sup-F), ``break_years``, ``ci_low``/``ci_high``,
        ``slopes`` (per segment, unit per year), ``slowdown`` (a significant kink after which the
        slope is lower than before), ``conclusion``.
    """
    sc = analysis["slope_change"]
    slopes = [float(s["slope_per_year"]) for s in sc["slopes"]]
    slowdown = bool(sc["significant"] and len(slopes) >= 2 and any(b < a for a, b in zip(slopes[:-1], slopes[1:])))
    return {
        "n_breaks": int(sc["n_breaks"]),
        "significant": bool(sc["significant"]),
        "p_value": float(sc["existence_test"]["sup_f"]["p_value"]),
        "break_years": [float(b["break_year"]) for b in sc["breaks"]],
        "ci_low": [float(b["ci_low"]) for b in sc["breaks"]],
        "ci_high": [float(b["ci_high"]) for b in sc["breaks"]],
        "slopes": slopes,
        "slowdown": slowdown,
        "conclusion": str(sc["conclusion"]),
    }


def trend_table(
    series: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    options: TrendOptions,
    unit: str,
    scopes: Mapping[str, str],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`series_trend` of several series: one row each and the full results.

    Series too short for the breakpoint tool (fewer than ``2 * min_segment_years`` years) get a
    row with ``error`` instead of stopping the comparison.

    Returns
    -------
    table, results
        ``series, scope, unit, first_year, last_year, n, n_breaks, significant, p_value,
        break_years, slope_before, slope_after, slowdown, one_kink_psi, psi_ci_low, psi_ci_high,
        one_kink_slope_before, one_kink_slope_after, davies_p, error`` and ``{name: result}``.
    """
    rows, results = [], {}
    for name, (years, values) in series.items():
        t = np.asarray(years, dtype=float)
        base = {
            "series": name,
            "scope": scopes.get(name, ""),
            "unit": unit,
            "first_year": int(t.min()) if t.size else None,
            "last_year": int(t.max()) if t.size else None,
            "n": int(t.size),
        }
        if t.size < max(2 * options.min_segment_years, 6):
            msg = f"{t.size} years: too short for a breakpoint analysis (needs {2 * options.min_segment_years})"
            rows.append({**base, "error": msg})
            results[name] = {"error": msg}
            continue
        try:
            r = series_trend(t, values, options)
        except ModelError as e:
            rows.append({**base, "error": str(e)})
            results[name] = {"error": str(e)}
            continue
        s, o = r["summary"], r["one_kink"]
        rows.append(
            {
                **base,
                "n_breaks": s["n_breaks"],
                "significant": s["significant"],
                "p_value": s["p_value"],
                "break_years": ";".join(f"{b:.2f}" for b in s["break_years"]),
                "slope_before": s["slopes"][0],
                "slope_after": s["slopes"][-1],
                "slowdown": s["slowdown"],
                "one_kink_psi": o["psi"],
                "psi_ci_low": o["psi_ci_low"],
                "psi_ci_high": o["psi_ci_high"],
                "one_kink_slope_before": o["slope_before"],
                "one_kink_slope_after": o["slope_after"],
                "davies_p": o["davies_p"],
                "error": "",
            }
        )
        results[name] = {"summary": s, "one_kink": o, "analysis": r["analysis"]}
    cols = [
        "series",
        "scope",
        "unit",
        "first_year",
        "last_year",
        "n",
        "n_breaks",
        "significant",
        "p_value",
        "break_years",
        "slope_before",
        "slope_after",
        "slowdown",
        "one_kink_psi",
        "psi_ci_low",
        "psi_ci_high",
        "one_kink_slope_before",
        "one_kink_slope_after",
        "davies_p",
        "error",
    ]
    return pd.DataFrame(rows).reindex(columns=cols), results


def missed_slowdown(results: Mapping[str, Any], inventory: str, reference: str) -> dict[str, Any]:
    """Whether the inventory series shows a slowdown the reference series does not.

    Returns ``{"inventory_slowdown", "reference_slowdown", "reference_misses_slowdown",
    "statement"}``; a series without a result counts as "not analysed" (``None``).
    """

    def flag(name: str) -> bool | None:
        r = results.get(name) or {}
        return None if "summary" not in r else bool(r["summary"]["slowdown"])

    a, b = flag(inventory), flag(reference)
    misses = None if a is None or b is None else bool(a and not b)
    if misses is None:
        text = f"{inventory} vs {reference}: not analysed (series too short or missing)"
    elif misses:
        text = f"{reference} misses the slowdown that {inventory} shows (significant kink, slope falls)"
    else:
        text = f"{inventory} slowdown: {a}; {reference} slowdown: {b}"
    return {
        "inventory": inventory,
        "reference": reference,
        "inventory_slowdown": a,
        "reference_slowdown": b,
        "reference_misses_slowdown": misses,
        "statement": text,
    }


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------
def _cell_index(centres: np.ndarray, resolution_deg: float) -> np.ndarray:
    """Integer index of cells from their centres: round(centre / res - 0.5)."""
    return np.round(np.asarray(centres, dtype=float) / resolution_deg - 0.5).astype(np.int64)


def place_on_grid(lat: np.ndarray, lon: np.ndarray, values: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Put a reference field (cell centres ``lat``/``lon``, ascending) onto ``grid``'s cells.

    Parameters
    ----------
    lat, lon
        Cell centres of the reference, degrees, ascending, same resolution as ``grid``.
    values
        (n_layers, nlat_ref, nlon_ref) masses per cell.
    grid
        Target grid (edges on multiples of its resolution).

    Returns
    -------
    field, covered
        (n_layers, grid.nlat, grid.nlon) with 0 where the reference has no cell, and the
        (grid.nlat, grid.nlon) mask of cells the reference covers.

    Raises
    ------
    ValueError
        When the resolutions differ or the centres are not on the grid's cell lattice.
    """
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    res = grid.resolution_deg
    for name, c in (("lat", lat), ("lon", lon)):
        if c.size > 1 and not np.allclose(np.diff(c), res, atol=1e-6 * res):
            raise ValueError(f"reference {name} step {np.median(np.diff(c)):.6g} deg differs from the grid's {res} deg")
        off = c / res - 0.5 - _cell_index(c, res)
        if c.size and np.max(np.abs(off)) > 1e-4:
            raise ValueError(f"reference {name} centres are not on the {res} deg cell lattice")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 2:
        v = v[None]
    iy = _cell_index(lat, res) - grid.i_south
    ix = _cell_index(lon, res) - grid.i_west
    ky = (iy >= 0) & (iy < grid.nlat)
    kx = (ix >= 0) & (ix < grid.nlon)
    out = np.zeros((v.shape[0], grid.nlat, grid.nlon), dtype=np.float64)
    covered = np.zeros(grid.shape, dtype=bool)
    out[np.ix_(np.arange(v.shape[0]), iy[ky], ix[kx])] = v[
        np.ix_(np.arange(v.shape[0]), np.flatnonzero(ky), np.flatnonzero(kx))
    ]
    covered[np.ix_(iy[ky], ix[kx])] = True
    return out, covered


def unit_cells(weights: Weights) -> np.ndarray:
    """(nlat, nlon) mask of cells touched by any county of ``weights``."""
    m = np.zeros(weights.grid.ncells, dtype=bool)
    m[np.asarray(weights.cell, dtype=np.int64)] = True
    return m.reshape(weights.grid.shape)


def spatial_agreement(inventory: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Cell-by-cell agreement of two fields on one grid, over the cells in ``mask``.

    Parameters
    ----------
    inventory, reference
        (nlat, nlon) masses per cell in one unit (kg N2O-N per cell per year).
    mask
        Cells to compare (e.g. cells touched by the inventory's counties and covered by the
        reference).

    Returns
    -------
    dict
        ``n_cells``, ``pearson_r``, ``spearman_rho``, ``bias_kg_per_cell`` (mean of I - R),
        ``rmse_kg_per_cell``, ``inventory_total_kg``, ``reference_total_kg``.

    Notes
    -----
    r = cov(I, R) / (sd I sd R); Spearman's rho is r of the ranks (average ranks for ties);
    bias = mean(I - R); RMSE = sqrt(mean((I - R)^2)). Correlations are NaN when a field is
    constant over the mask.
    """
    m = np.asarray(mask, dtype=bool)
    a = np.asarray(inventory, dtype=np.float64)[m]
    b = np.asarray(reference, dtype=np.float64)[m]
    d = a - b
    n = int(a.size)
    if n >= 2 and np.std(a) > 0 and np.std(b) > 0:
        r = float(np.corrcoef(a, b)[0, 1])
        rho = float(stats.spearmanr(a, b).statistic)
    else:
        r = rho = float("nan")
    return {
        "n_cells": n,
        "pearson_r": r,
        "spearman_rho": rho,
        "bias_kg_per_cell": float(d.mean()) if n else float("nan"),
        "rmse_kg_per_cell": float(np.sqrt(np.mean(d * d))) if n else float("nan"),
        "inventory_total_kg": float(a.sum()),
        "reference_total_kg": float(b.sum()),
    }


def aggregate_layers(weights: Weights, layers: np.ndarray) -> np.ndarray:
    """Sum (n_layers, nlat, nlon) fields to the counties of ``weights``: (n_counties, n_layers).

    Notes
    -----
    One sparse product ``Z @ X`` with ``Z`` the grid stage's coverage-share matrix
    (:func:`pipeline.methods.gridding.zonal_matrix`, ``Z_ck = f_ck / sum_d f_dk``) and ``X`` the
    (cells x layers) matrix of the fields. A cell shared by counties is split by coverage; cells
    no county touches are not attributed.
    """
    return np.asarray(aggregate_to_counties(weights, np.asarray(layers, dtype=np.float64)))


def zonal_sums_sparse(weights: Weights) -> sp.csr_matrix:
    """Plain coverage-weighted sums ``sum_k f_ck x_k`` as a matrix (what exactextract's ``sum`` is)."""
    return sp.csr_matrix(
        (np.asarray(weights.coverage, float), (weights.county_idx, weights.cell)),
        shape=(len(weights.county_codes), weights.grid.ncells),
    )


def unit_table(county_codes: np.ndarray, years: Sequence[int], county_by_year: np.ndarray) -> pd.DataFrame:
    """Long frame ``county_code, province_code, year, n2o_n_kg`` from (n_counties, n_years)."""
    codes = np.asarray(county_codes, dtype=np.int64)
    yrs = np.asarray(years, dtype=np.int64)
    vals = np.asarray(county_by_year, dtype=np.float64)
    return pd.DataFrame(
        {
            "county_code": np.repeat(codes, len(yrs)),
            "province_code": np.repeat(codes // 10_000, len(yrs)),
            "year": np.tile(yrs, len(codes)),
            "n2o_n_kg": vals.ravel(),
        }
    )

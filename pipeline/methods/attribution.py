"""Trend computations: national, crop and provincial series, break-year summaries over the Monte
Carlo draws, slopes around the national break per unit, LMDI attribution of the change and
counterfactuals (N rate, area or irrigation held at the break year). Used by the trend stage
(:mod:`pipeline.stages.trend`); the breakpoint methods are :mod:`pipeline.methods.breakpoints`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from pipeline.methods import breakpoints as bp
from pipeline.methods.lmdi import EFFECTS, decompose_emissions
from pipeline.methods.options import TrendOptions

log = logging.getLogger(__name__)

EmissionsFn = Callable[[pd.DataFrame], np.ndarray]
KEY = ["county_code", "crop"]


# ---------------------------------------------------------------------------------------------
# Series and breaks
# ---------------------------------------------------------------------------------------------
def build_series(national: pd.DataFrame, province: pd.DataFrame | None, model: str) -> pd.DataFrame:
    """Long table of annual totals: scope (national/crop/province), unit, year and intervals.

    Units: ``n2o_n_kg_*`` in kg N2O-N per year, ``area_ha`` in ha. ``n2o_n_kg_central`` (the
    plug-in central estimate) is carried when the estimate tables have it; the breakpoint
    analysis of the series uses it (:func:`analyse`), the intervals are over the draws.
    """
    cols = [
        "year",
        *(["n2o_n_kg_central"] if "n2o_n_kg_central" in national.columns else []),
        "n2o_n_kg_mean",
        "n2o_n_kg_p2_5",
        "n2o_n_kg_p97_5",
        "area_ha",
    ]
    parts = []
    nat = national[national["crop"] == "all"]
    parts.append(nat[cols].assign(scope="national", unit="all"))
    crops = national[national["crop"] != "all"]
    parts.append(crops[cols].assign(scope="crop", unit=crops["crop"].astype(str)))
    if province is not None:
        p = province[province["crop"] == "all"] if "crop" in province.columns else province
        parts.append(p[cols].assign(scope="province", unit=p["province_code"].astype(int).astype(str)))
    out = pd.concat(parts, ignore_index=True).assign(model=model)
    return out[["model", "scope", "unit", *cols]].sort_values(["model", "scope", "unit", "year"]).reset_index(drop=True)


def draw_matrix(draws: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """National all-crop totals per Monte Carlo draw as a ``(draws, years)`` matrix."""
    d = draws[draws["crop"] == "all"] if "crop" in draws.columns else draws
    wide = d.pivot_table(index="draw", columns="year", values="n2o_n_kg", aggfunc="sum").sort_index()
    return wide.columns.to_numpy(float), wide.to_numpy(float)


def break_draws_summary(years: np.ndarray, draws: np.ndarray, tcfg: TrendOptions) -> tuple[dict[str, Any], np.ndarray]:
    """Distribution of the one-kink break year over the Monte Carlo draws.

    Returns
    -------
    summary, per_draw
        Percentiles (2.5, 50, 97.5), mean and SD of the break year (yr), and the per-draw values.
    """
    per_draw = bp.kink_year_draws(years, draws, tcfg.min_segment_years)
    q = [100 * tcfg.alpha / 2, 50, 100 * (1 - tcfg.alpha / 2)]
    lo, med, hi = np.percentile(per_draw, q)
    # Slopes of each draw around its own kink: their spread carries the inventory's parameter
    # and activity uncertainty, which the single-series slope interval does not.
    slopes = bp.kink_slopes(years, draws, per_draw)
    slope_summary = {}
    for j, name in enumerate(("slope_before", "slope_after")):
        s_lo, s_med, s_hi = np.percentile(slopes[:, j], q)
        slope_summary[name] = {"median": float(s_med), "ci_low": float(s_lo), "ci_high": float(s_hi)}
    return (
        {
            "n_draws": int(per_draw.size),
            "median": float(med),
            "ci_low": float(lo),
            "ci_high": float(hi),
            "mean": float(per_draw.mean()),
            "sd": float(per_draw.std(ddof=1)) if per_draw.size > 1 else 0.0,
            "method": "least-squares one-kink break of each draw's national series (profile grid, 0.1 yr)",
            "slopes_per_year": slope_summary,
            "year_convention": bp.KINK_CONVENTION,
        },
        per_draw,
    )


def central_column(series: pd.DataFrame) -> str:
    """The central-estimate column of a series: ``n2o_n_kg_central`` (plug-in, unbiased) when
    present and complete, else ``n2o_n_kg_mean`` (tables of earlier runs)."""
    if "n2o_n_kg_central" in series.columns and series["n2o_n_kg_central"].notna().all():
        return "n2o_n_kg_central"
    return "n2o_n_kg_mean"


def forms_contributed(draws: pd.DataFrame) -> dict[str, Any] | None:
    """Share of Monte Carlo draws per N-response form, per crop (model-average runs), from the
    ``form`` column of the national draws table; None when the run had no model average."""
    if "form" not in draws.columns:
        return None
    d = draws[(draws["crop"] != "all") & draws["form"].fillna("").astype(str).ne("")]
    if d.empty:
        return None
    first = d[d["year"] == d["year"].min()]
    return {
        str(crop): {str(k): float(v) for k, v in g["form"].value_counts(normalize=True).sort_index().items()}
        for crop, g in first.groupby("crop")
    }


def analyse(series: pd.DataFrame, tcfg: TrendOptions, value: str | None = None) -> dict[str, Any]:
    """:func:`pipeline.breakpoints.analyse_series` with the stage's settings, on ``value``
    (default: :func:`central_column`)."""
    value = value or central_column(series)
    s = series.sort_values("year")
    return bp.analyse_series(
        s["year"].to_numpy(float),
        s[value].to_numpy(float),
        tcfg.max_breaks,
        tcfg.min_segment_years,
        tcfg.criterion,
        tcfg.alpha,
        tcfg.n_sim,
        tcfg.seed,
    )


def national_kink(result: dict[str, Any]) -> float | None:
    """The main kink of a national analysis (largest absolute slope change), or None.

    None when no significant kink was found. With two kinks the one where the slope changes
    most is the break the spatial pattern, periods and counterfactuals are built around.
    """
    sc = result["slope_change"]
    if sc["n_breaks"] < 1:
        return None
    change = [
        abs(sc["slopes"][i + 1]["slope_per_year"] - sc["slopes"][i]["slope_per_year"]) for i in range(sc["n_breaks"])
    ]
    return float(sc["breaks"][int(np.argmax(change))]["break_year"])


# ---------------------------------------------------------------------------------------------
# Spatial pattern
# ---------------------------------------------------------------------------------------------
def slopes_around(frame: pd.DataFrame, unit: str, psi: float) -> pd.DataFrame:
    """Slope before and after a fixed kink ``psi`` for every unit with a complete series.

    Parameters
    ----------
    frame
        Columns ``unit``, ``year``, ``n2o_n_kg_central`` (else ``n2o_n_kg_mean``; kg N2O-N) and
        ``area_ha`` (ha).
    unit
        Name of the unit column (``province_code``, ``county_code``).
    psi
        Kink position (year), e.g. the national break.

    Returns
    -------
    pandas.DataFrame
        ``unit, slope_before_kg_yr2, slope_after_kg_yr2, slope_change_kg_yr2, slowed,
        mean_area_ha`` (slopes in kg N2O-N per year, per year).

    Notes
    -----
    OLS of ``y = a + b t + d (t - psi)_+`` with the same design for every unit (one solve):
    before = ``b``, after = ``b + d``; growth slowed when ``d < 0``.
    """
    y = frame.pivot_table(index=unit, columns="year", values=central_column(frame), aggfunc="sum")
    area = frame.groupby(unit)["area_ha"].mean()
    y = y.dropna()
    t = y.columns.to_numpy(float)
    X = np.column_stack([np.ones_like(t), t - t.mean(), np.maximum(t - psi, 0.0)])
    beta = np.linalg.lstsq(X, y.to_numpy(float).T, rcond=None)[0]
    out = pd.DataFrame(
        {
            unit: y.index,
            "slope_before_kg_yr2": beta[1],
            "slope_after_kg_yr2": beta[1] + beta[2],
            "slope_change_kg_yr2": beta[2],
        }
    )
    out["slowed"] = out["slope_change_kg_yr2"] < 0
    out["mean_area_ha"] = area.reindex(y.index).to_numpy()
    return out.sort_values(unit).reset_index(drop=True)


def slowed_area_share(slopes: pd.DataFrame) -> float:
    """Share of (mean) sown area in units whose emission growth slowed after the break."""
    a = slopes["mean_area_ha"].to_numpy(float)
    return float(a[slopes["slowed"].to_numpy()].sum() / a.sum()) if a.sum() > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# Attribution and counterfactuals
# ---------------------------------------------------------------------------------------------
def _pair_rows(act0: pd.DataFrame, act1: pd.DataFrame, emissions: EmissionsFn) -> pd.DataFrame:
    a0 = act0.set_index(KEY)
    a1 = act1.set_index(KEY)
    keys = a0.index.union(a1.index).sort_values()
    both = a0.index.intersection(a1.index).sort_values()
    rows = pd.DataFrame(index=keys)
    rows["area_ha_0"] = a0["area_ha"].reindex(keys).fillna(0.0)
    rows["area_ha_1"] = a1["area_ha"].reindex(keys).fillna(0.0)
    rows["n2o_n_kg_0"] = a0["_e"].reindex(keys).fillna(0.0)
    rows["n2o_n_kg_1"] = a1["_e"].reindex(keys).fillna(0.0)
    rows["n_rate_kg_ha_0"] = a0["n_rate_kg_ha"].reindex(keys).fillna(0.0)
    rows["n_rate_kg_ha_1"] = a1["n_rate_kg_ha"].reindex(keys).fillna(0.0)
    rows["intensity_n1_env0_kg_ha"] = np.nan
    rows["intensity_n0_env1_kg_ha"] = np.nan
    if len(both):
        x0 = a0.loc[both].drop(columns="_e").copy()
        x1 = a1.loc[both].drop(columns="_e").copy()
        n0, n1 = x0["n_rate_kg_ha"].to_numpy(float), x1["n_rate_kg_ha"].to_numpy(float)
        x0["n_rate_kg_ha"], x1["n_rate_kg_ha"] = n1, n0
        with np.errstate(divide="ignore", invalid="ignore"):
            rows.loc[both, "intensity_n1_env0_kg_ha"] = emissions(x0.reset_index()) / x0["area_ha"].to_numpy(float)
            rows.loc[both, "intensity_n0_env1_kg_ha"] = emissions(x1.reset_index()) / x1["area_ha"].to_numpy(float)
    return rows.reset_index()


def yearly_attribution(activity: pd.DataFrame, emissions: EmissionsFn) -> pd.DataFrame:
    """LMDI of each year-to-year change of national emissions (kg N2O-N).

    Parameters
    ----------
    activity
        The activity table (contract ``ACTIVITY``): county x crop x year rows.
    emissions
        Point-estimate function, kg N2O-N per activity row (the estimate stage's
        ``expected_emissions`` bound to the fitted model).

    Returns
    -------
    pandas.DataFrame
        One row per ``year_from -> year_to`` with the effects of :func:`pipeline.lmdi.decompose_emissions`.

    Notes
    -----
    Yearly pairs are independent and computed with Dask under the caller's scheduler.
    """
    import dask

    act = activity.assign(_e=emissions(activity))
    years = sorted(int(y) for y in act["year"].unique())
    by_year = {y: g.drop(columns="year") for y, g in act.groupby("year")}

    def one(y0: int, y1: int) -> dict[str, Any]:
        return {"year_from": y0, "year_to": y1, **decompose_emissions(_pair_rows(by_year[y0], by_year[y1], emissions))}

    tasks = [dask.delayed(one)(y0, y1) for y0, y1 in zip(years[:-1], years[1:])]
    rows = list(dask.compute(*tasks))
    return pd.DataFrame(rows).sort_values("year_from").reset_index(drop=True)


def period_attribution(yearly: pd.DataFrame, break_year: int) -> pd.DataFrame:
    """Chained sums of the yearly LMDI effects before and after ``break_year`` (kg N2O-N).

    Chaining keeps exactness: each period's effects sum to its total change.
    """
    cols = [*EFFECTS, "n_rate_proportional", "n_rate_ef_response", "total", "sum_of_effects", "residual"]
    out = []
    first, last = int(yearly["year_from"].min()), int(yearly["year_to"].max())
    for name, sel in (("before", yearly["year_to"] <= break_year), ("after", yearly["year_from"] >= break_year)):
        part = yearly[sel]
        if len(part) == 0:
            continue
        row = {"period": name, "year_from": int(part["year_from"].min()), "year_to": int(part["year_to"].max())}
        row.update({c: float(part[c].sum()) for c in cols})
        out.append(row)
    whole = {"period": "all", "year_from": first, "year_to": last, **{c: float(yearly[c].sum()) for c in cols}}
    out.append(whole)
    return pd.DataFrame(out)


def counterfactual_activity(activity: pd.DataFrame, break_year: int, scenario: str) -> pd.DataFrame:
    """Activity with one driver held at its break-year level for the years after it.

    ``scenario`` is ``n_rate_held`` (``n_rate_kg_ha``), ``area_held`` (``area_ha``) or
    ``irrigation_held`` (``irrigated_fraction`` and ``irrigation_mm``; ``water_input_mm`` is
    recomputed as ``precip_mm + irrigated_fraction x irrigation_mm``). County-crop rows without a
    break-year value keep their own values.
    """
    cols = {
        "n_rate_held": ["n_rate_kg_ha"],
        "area_held": ["area_ha"],
        "irrigation_held": ["irrigated_fraction", "irrigation_mm"],
    }[scenario]
    base = activity[activity["year"] == break_year].set_index(KEY)[cols]
    out = activity.copy()
    after = out["year"] > break_year
    idx = pd.MultiIndex.from_frame(out.loc[after, KEY])
    for c in cols:
        held = base[c].reindex(idx).to_numpy(float)
        cur = out.loc[after, c].to_numpy(float)
        out.loc[after, c] = np.where(np.isnan(held), cur, held)
    if scenario == "irrigation_held":
        out["water_input_mm"] = out["precip_mm"] + out["irrigated_fraction"] * out["irrigation_mm"]
    return out


def counterfactuals(activity: pd.DataFrame, emissions: EmissionsFn, break_year: int) -> pd.DataFrame:
    """National point-estimate totals (kg N2O-N) by year: actual and three held-driver runs."""
    frames = []
    for scenario in ("actual", "n_rate_held", "area_held", "irrigation_held"):
        act = activity if scenario == "actual" else counterfactual_activity(activity, break_year, scenario)
        e = emissions(act)
        tot = pd.Series(e, index=act.index).groupby(act["year"]).sum()
        frames.append(pd.DataFrame({"scenario": scenario, "year": tot.index.astype(int), "n2o_n_kg": tot.to_numpy()}))
    return pd.concat(frames, ignore_index=True)

"""The TREND stage: breakpoints, their uncertainty, spatial pattern and attribution.

Reads the estimate stage's tables (``estimate/`` and, when present, ``estimate_tier1/``), the
activity table and the fitted model, and writes under ``data_processed/trend/``:

* ``series.csv`` - national, per-crop and provincial annual totals with Monte Carlo intervals,
  for the fitted model and for IPCC Tier 1;
* ``breaks.json`` / ``breaks.csv`` - slope-change and mean-shift analyses
  (:mod:`pipeline.breakpoints`) of the national series (both models) and of each crop, with the
  break year's distribution across the Monte Carlo draws beside the single-series interval;
* ``spatial_province.csv`` / ``spatial_county.csv`` - slope before and after the national break
  per unit, and (in ``breaks.json``) the share of sown area where growth slowed;
* ``attribution_yearly.csv`` / ``attribution_periods.csv`` - LMDI (:mod:`pipeline.lmdi`) of
  the year-to-year change and its sums before and after the break;
* ``counterfactuals.csv`` - national totals with N rate, area or irrigation held at their
  break-year level, through the estimate stage's point-estimate function;
* figures ``national_trend.png``, ``attribution.png``, ``province_slope_change.png``.

The integer break year used for periods and counterfactuals is the **last year of the old
regime**, ``floor(psi)`` of the national kink ``psi``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import breakpoints as bp
from pipeline import io
from pipeline.config import Config, TrendConfig
from pipeline.errors import InputError, ModelError, StageOrderError
from pipeline.lmdi import EFFECTS, decompose_emissions

log = logging.getLogger(__name__)

EmissionsFn = Callable[[pd.DataFrame], np.ndarray]
KEY = ["county_code", "crop"]


# ---------------------------------------------------------------------------------------------
# Series and breaks
# ---------------------------------------------------------------------------------------------
def build_series(national: pd.DataFrame, province: pd.DataFrame | None, model: str) -> pd.DataFrame:
    """Long table of annual totals: scope (national/crop/province), unit, year and intervals.

    Units: ``n2o_n_kg_*`` in kg N2O-N per year, ``area_ha`` in ha.
    """
    cols = ["year", "n2o_n_kg_mean", "n2o_n_kg_p2_5", "n2o_n_kg_p97_5", "area_ha"]
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


def break_draws_summary(years: np.ndarray, draws: np.ndarray, tcfg: TrendConfig) -> tuple[dict[str, Any], np.ndarray]:
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
    return ({"n_draws": int(per_draw.size), "median": float(med), "ci_low": float(lo), "ci_high": float(hi),
             "mean": float(per_draw.mean()), "sd": float(per_draw.std(ddof=1)) if per_draw.size > 1 else 0.0,
             "method": "least-squares one-kink break of each draw's national series (profile grid, 0.1 yr)",
             "slopes_per_year": slope_summary,
             "year_convention": bp.KINK_CONVENTION}, per_draw)


def analyse(series: pd.DataFrame, tcfg: TrendConfig, value: str = "n2o_n_kg_mean") -> dict[str, Any]:
    """:func:`pipeline.breakpoints.analyse_series` with the stage's settings."""
    s = series.sort_values("year")
    return bp.analyse_series(s["year"].to_numpy(float), s[value].to_numpy(float), tcfg.max_breaks,
                             tcfg.min_segment_years, tcfg.criterion, tcfg.alpha, tcfg.n_sim, tcfg.seed)


def national_kink(result: dict[str, Any]) -> float | None:
    """The main kink of a national analysis (largest absolute slope change), or None.

    None when no significant kink was found. With two kinks the one where the slope changes
    most is the break the spatial pattern, periods and counterfactuals are built around.
    """
    sc = result["slope_change"]
    if sc["n_breaks"] < 1:
        return None
    change = [abs(sc["slopes"][i + 1]["slope_per_year"] - sc["slopes"][i]["slope_per_year"])
              for i in range(sc["n_breaks"])]
    return float(sc["breaks"][int(np.argmax(change))]["break_year"])


# ---------------------------------------------------------------------------------------------
# Spatial pattern
# ---------------------------------------------------------------------------------------------
def slopes_around(frame: pd.DataFrame, unit: str, psi: float) -> pd.DataFrame:
    """Slope before and after a fixed kink ``psi`` for every unit with a complete series.

    Parameters
    ----------
    frame
        Columns ``unit``, ``year``, ``n2o_n_kg_mean`` (kg N2O-N) and ``area_ha`` (ha).
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
    y = frame.pivot_table(index=unit, columns="year", values="n2o_n_kg_mean", aggfunc="sum")
    area = frame.groupby(unit)["area_ha"].mean()
    y = y.dropna()
    t = y.columns.to_numpy(float)
    X = np.column_stack([np.ones_like(t), t - t.mean(), np.maximum(t - psi, 0.0)])
    beta = np.linalg.lstsq(X, y.to_numpy(float).T, rcond=None)[0]
    out = pd.DataFrame({unit: y.index, "slope_before_kg_yr2": beta[1], "slope_after_kg_yr2": beta[1] + beta[2],
                        "slope_change_kg_yr2": beta[2]})
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
    cols = {"n_rate_held": ["n_rate_kg_ha"], "area_held": ["area_ha"],
            "irrigation_held": ["irrigated_fraction", "irrigation_mm"]}[scenario]
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


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib Agg, no date in the metadata so bytes are reproducible)
# ---------------------------------------------------------------------------------------------
def figure_national(series: pd.DataFrame, result: dict[str, Any], draws_summary: dict[str, Any] | None,
                    target: Path, label: str = "") -> Path:
    """National trend with MC interval, fitted segments and the break-year intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = series.sort_values("year")
    t = s["year"].to_numpy(float)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.fill_between(t, s["n2o_n_kg_p2_5"] / 1e6, s["n2o_n_kg_p97_5"] / 1e6, alpha=0.25, label="95 % MC interval")
    ax.plot(t, s["n2o_n_kg_mean"] / 1e6, "o", ms=3, label="inventory (mean)")
    sc = result["slope_change"]
    ax.plot(t, np.asarray(sc["fitted"]) / 1e6, "-", label=f"segmented fit ({sc['n_breaks']} break(s))")
    for b in sc["breaks"]:
        ax.axvline(b["break_year"], color="k", lw=0.8)
        if b.get("ci_low") is not None:
            ax.axvspan(b["ci_low"], b["ci_high"], color="k", alpha=0.08, label="break 95 % CI (series)")
    if draws_summary is not None and sc["n_breaks"] >= 1:
        y0 = ax.get_ylim()[0]
        ax.errorbar([draws_summary["median"]], [y0], xerr=[[draws_summary["median"] - draws_summary["ci_low"]],
                    [draws_summary["ci_high"] - draws_summary["median"]]], fmt="v", color="C3",
                    label="break 95 % range over MC draws")
    ax.set_xlabel("year")
    ax.set_ylabel("direct N2O emission (Gg N2O-N / yr)")
    ax.set_title(sc["conclusion"][:90], fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return io.write_png(fig, target, label)


def figure_attribution(periods: pd.DataFrame, target: Path, label: str = "") -> Path:
    """Bars of the LMDI effects per period (Gg N2O-N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [*EFFECTS, "total"]
    width = 0.8 / max(len(periods), 1)
    for i, (_, row) in enumerate(periods.iterrows()):
        x = np.arange(len(labels)) + i * width
        ax.bar(x, [row[c] / 1e6 for c in labels], width, label=f"{row['period']} ({row['year_from']}-{row['year_to']})")
    ax.set_xticks(np.arange(len(labels)) + width * (len(periods) - 1) / 2, labels, rotation=20, fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("contribution to the change (Gg N2O-N / yr)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return io.write_png(fig, target, label)


def figure_province_map(boundaries: Any, slopes: pd.DataFrame, target: Path, label: str = "") -> Path:
    """Province map of the slope change after the national break (Mg N2O-N / yr^2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prov = boundaries[["province_code", "geometry"]].dissolve(by="province_code", as_index=False)
    prov = prov.merge(slopes, on="province_code", how="left")
    prov["change_mg"] = prov["slope_change_kg_yr2"] / 1e3
    fig, ax = plt.subplots(figsize=(7, 5))
    lim = float(np.nanmax(np.abs(prov["change_mg"]))) if prov["change_mg"].notna().any() else 1.0
    prov.plot(column="change_mg", ax=ax, cmap="RdBu_r", vmin=-lim, vmax=lim, legend=True,
              missing_kwds={"color": "lightgrey"}, edgecolor="white", linewidth=0.3,
              legend_kwds={"label": "slope after - before (Mg N2O-N / yr²)"})
    ax.set_axis_off()
    fig.tight_layout()
    return io.write_png(fig, target, label)


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------
def _read_estimate(folder: Path, required: bool) -> dict[str, pd.DataFrame] | None:
    """Tables of a completed estimate run (one whose manifest exists), or None."""
    if not (folder / "manifest.json").exists():
        if required:
            raise StageOrderError(f"{folder / 'manifest.json'}: no completed estimate run. "
                                  "Fix: run `cropn2o estimate` first")
        return None
    out: dict[str, pd.DataFrame | None] = {"national": io.read_parquet(folder / "national.parquet")}
    for name, file in (("province", "province.parquet"), ("county", "county.parquet"),
                       ("national_draws", "national_draws.parquet")):
        path = folder / file
        out[name] = io.read_parquet(path) if path.exists() else None
    return out  # type: ignore[return-value]


def _emissions_fn(cfg: Config) -> EmissionsFn:
    from pipeline.estimate import expected_emissions, load_model

    model = load_model(cfg, "fitted")
    return lambda act: expected_emissions(act, model, cfg.estimate.background)


def run(cfg: Config) -> list[Path]:
    """Run the trend stage; return the files written (see the module docstring)."""
    from pipeline.boundaries import read_boundaries
    from pipeline.parallel import dask_context

    tcfg = cfg.trend
    out = cfg.processed / "trend"
    io.invalidate(out / "manifest.json")
    fitted = _read_estimate(cfg.processed / "estimate", required=True)
    tier1 = (_read_estimate(cfg.processed / "estimate_tier1", required=False)
             if "tier1" in cfg.estimate.runs else None)
    written: list[Path] = []

    series = [build_series(fitted["national"], fitted["province"], "fitted")]
    if tier1 is not None:
        series.append(build_series(tier1["national"], tier1["province"], "tier1"))
    series_df = pd.concat(series, ignore_index=True)
    written.append(io.write_csv(series_df, out / "series.csv"))

    results: dict[str, Any] = {"units": "series in kg N2O-N/yr; slopes in kg N2O-N/yr per year",
                               "settings": tcfg.model_dump()}
    tables = []
    nat = series_df[(series_df["model"] == "fitted") & (series_df["scope"] == "national")]
    national = analyse(nat, tcfg)
    draws_summary = None
    if fitted["national_draws"] is not None:
        years, mat = draw_matrix(fitted["national_draws"])
        draws_summary, per_draw = break_draws_summary(years, mat, tcfg)
        national["break_year_over_draws"] = draws_summary
        written.append(io.write_csv(pd.DataFrame({"draw": np.arange(per_draw.size), "break_year": per_draw}),
                                    out / "break_draws.csv"))
    results["national"] = national
    tables.append(bp.summary_table(national).assign(model="fitted", scope="national", unit="all"))
    if tier1 is not None:
        t1 = series_df[(series_df["model"] == "tier1") & (series_df["scope"] == "national")]
        results["national_tier1"] = analyse(t1, tcfg)
        tables.append(bp.summary_table(results["national_tier1"]).assign(model="tier1", scope="national", unit="all"))
    results["crops"] = {}
    for crop, g in series_df[(series_df["model"] == "fitted") & (series_df["scope"] == "crop")].groupby("unit"):
        try:
            results["crops"][crop] = analyse(g, tcfg)
        except ModelError as e:  # a crop with too few years is reported, not fatal
            results["crops"][crop] = {"error": str(e)}
            continue
        tables.append(bp.summary_table(results["crops"][crop]).assign(model="fitted", scope="crop", unit=crop))

    psi = national_kink(national)
    if psi is None:
        # No significant national kink: the spatial split and periods need a year, so use the
        # profile optimum of the one-kink fit and say so.
        models1 = [m for m in national["slope_change"]["models"] if m["n_breaks"] == 1]
        psi = float(models1[0]["break_years"][0])
        results["break_used"] = {"psi": psi, "note": "no significant national break; the one-kink optimum is used "
                                 "for the spatial pattern, periods and counterfactuals"}
    else:
        results["break_used"] = {"psi": psi, "note": "significant national kink with the largest slope change"}
    break_year = int(math.floor(psi))
    results["break_used"]["break_year_last_of_old_regime"] = break_year

    spatial: dict[str, Any] = {}
    prov_slopes = None
    if fitted["province"] is not None:
        p = fitted["province"]
        p = p[p["crop"] == "all"] if "crop" in p.columns else p
        prov_slopes = slopes_around(p, "province_code", psi)
        spatial["province_share_of_area_slowed"] = slowed_area_share(prov_slopes)
        written.append(io.write_csv(prov_slopes, out / "spatial_province.csv"))
    if fitted["county"] is not None:
        c = fitted["county"].groupby(["county_code", "year"], as_index=False)[["n2o_n_kg_mean", "area_ha"]].sum()
        county_slopes = slopes_around(c, "county_code", psi)
        spatial["county_share_of_area_slowed"] = slowed_area_share(county_slopes)
        written.append(io.write_csv(county_slopes, out / "spatial_county.csv"))
    spatial["definition"] = ("share of mean sown area in units whose fitted slope after the national break is "
                             "lower than before (kink fixed at the national psi)")
    results["spatial"] = spatial

    act_path = cfg.processed / "ingest" / "activity.parquet"
    if not act_path.exists():
        raise StageOrderError(f"{act_path}: no activity table. Fix: run `cropn2o ingest` first")
    activity = io.read_parquet(act_path)
    emissions = _emissions_fn(cfg)
    with dask_context(cfg.dask):
        yearly = yearly_attribution(activity, emissions)
    periods = period_attribution(yearly, break_year)
    cf = counterfactuals(activity, emissions, break_year)
    results["attribution"] = {
        "method": "LMDI-I, E = A (A_k/A) (a_i/A_k) I_i, ln I split into N rate and environment by the "
                  "two-factor Shapley rule with the fitted model; the N-rate effect on the emission factor "
                  "is assigned to the N rate (see docs/trend.md)",
        "emissions": "point estimate of the fitted model (estimate.expected_emissions), kg N2O-N",
        "periods": periods.to_dict(orient="records"),
    }
    written += [io.write_csv(yearly, out / "attribution_yearly.csv"),
                io.write_csv(periods, out / "attribution_periods.csv"),
                io.write_csv(cf, out / "counterfactuals.csv")]
    written.append(io.write_csv(pd.concat(tables, ignore_index=True), out / "breaks.csv"))
    written.append(io.write_json(results, out / "breaks.json"))

    label = cfg.inputs.label
    written.append(figure_national(nat, national, draws_summary, out / "national_trend.png", label))
    written.append(figure_attribution(periods[periods["period"] != "all"], out / "attribution.png", label))
    if prov_slopes is not None:
        boundaries = read_boundaries(cfg.path(cfg.inputs.boundaries.path))
        written.append(figure_province_map(boundaries, prov_slopes, out / "province_slope_change.png", label))
    est = cfg.processed / "estimate"
    manifest = {
        "stage": "trend", "label": cfg.inputs.label,
        "outputs": {p.name: io.file_sha256(p) for p in written},
        "inputs": {f"{d.name}/{name}": io.file_sha256(d / name)
                   for d in (est, cfg.processed / "estimate_tier1", cfg.processed / "ingest", cfg.processed / "fit")
                   for name in ("national.parquet", "national_draws.parquet", "province.parquet", "county.parquet",
                                "activity.parquet", "model.json")
                   if (d / name).exists()},
        "config": cfg.model_dump(mode="json", include={"trend"}),
    }
    written.append(io.write_json(manifest, out / "manifest.json"))
    return written


# ---------------------------------------------------------------------------------------------
# `cropn2o breaks SERIES.csv`
# ---------------------------------------------------------------------------------------------
def read_series(path: str | Path, value_column: str = "value") -> pd.DataFrame:
    """Read an annual series (columns ``year`` and ``value_column``) with errors naming the cell."""
    df = io.read_tables(path)
    for col in ("year", value_column):
        if col not in df.columns:
            raise InputError(path, f"no column '{col}'", f"name the columns year and {value_column} "
                             "(or pass --value-column)", column=col)
    out = pd.DataFrame({"year": pd.to_numeric(df["year"], errors="coerce"),
                        "value": pd.to_numeric(df[value_column], errors="coerce")})
    for col, src in (("year", "year"), ("value", value_column)):
        bad = out[col].isna() | ~np.isfinite(out[col].to_numpy(float))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(path, f"'{df[src].iloc[i]}' is not a number", "supply one numeric value per year",
                             row=int(df["_row"].iloc[i]), column=src)
    dup = out["year"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(path, f"year {int(out['year'].iloc[i])} appears twice", "keep one row per year",
                         row=int(df["_row"].iloc[i]), column="year")
    return out.sort_values("year").reset_index(drop=True)


def breaks_command(series_csv: str, value_column: str = "value", out: str | None = None,
                   tcfg: TrendConfig | None = None) -> int:
    """``cropn2o breaks``: analyse one series; JSON to ``out`` (or stdout), table to stdout.

    With ``out`` set, the table is also written beside it as ``<out stem>.csv``.
    """
    import json
    import sys

    tcfg = tcfg or TrendConfig()
    s = read_series(series_csv, value_column)
    result = analyse(s.rename(columns={"value": "n2o_n_kg_mean"}), tcfg)
    result["source"] = {"file": Path(series_csv).name, "value_column": value_column}
    table = bp.summary_table(result)
    if out is None:
        print(json.dumps(result, indent=2, sort_keys=True, default=float))
    else:
        io.write_json(result, out)
        io.write_csv(table, Path(out).with_suffix(".csv"))
    print(table.drop(columns=["year_convention"]).to_string(index=False), file=sys.stdout if out else sys.stderr)
    for key in ("slope_change", "mean_shift"):
        print(f"{key}: {result[key]['conclusion']} [{result[key]['year_convention']}]",
              file=sys.stdout if out else sys.stderr)
    return 0

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

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import io
from pipeline.config import Config, TrendConfig
from pipeline.errors import InputError, ModelError
from pipeline.methods import breakpoints as bp
from pipeline.methods.attribution import (
    EmissionsFn,
    analyse,
    break_draws_summary,
    build_series,
    central_column,
    counterfactuals,
    draw_matrix,
    forms_contributed,
    national_kink,
    period_attribution,
    slopes_around,
    slowed_area_share,
    yearly_attribution,
)
from pipeline.methods.montecarlo import expected_emissions
from pipeline.parallel import dask_context
from pipeline.plots.trend import (
    figure_attribution,
    figure_national,
    figure_province_map,
)
from pipeline.readers.boundaries import read_boundaries
from pipeline.readers.tables import read_tables
from pipeline.stages.context import StageRun, inventory_model


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------
def _read_estimate(stage: StageRun, run_kind: str, required: bool) -> dict[str, pd.DataFrame] | None:
    """Tables of a completed estimate run (``fitted`` or ``tier1``), or None when not required."""
    national = stage.upstream(f"estimate.{run_kind}_national", required)
    if national is None:
        return None
    out: dict[str, pd.DataFrame | None] = {"national": io.read_parquet(national)}
    for name in ("province", "county", "national_draws", "national_total", "province_total", "national_total_draws"):
        path = stage.upstream(f"estimate.{run_kind}_{name}", required=False)
        out[name] = io.read_parquet(path) if path is not None else None
    # The estimate stage writes per-crop and all-crop tables separately (a plain sum of either
    # is right); the analysis below wants both in one frame, the totals as crop "all".
    for name, total in (
        ("national", "national_total"),
        ("province", "province_total"),
        ("national_draws", "national_total_draws"),
    ):
        t = out.pop(total)
        if t is not None and out[name] is not None and "crop" not in t.columns:
            out[name] = pd.concat([t.assign(crop="all"), out[name]], ignore_index=True)
    return out  # type: ignore[return-value]


def _emissions_fn(stage: StageRun) -> EmissionsFn:
    """Point-estimate emissions (kg N2O-N per activity row) of the fitted model."""
    model = inventory_model(stage, "fitted")
    background = stage.cfg.estimate.background
    return lambda act: expected_emissions(act, model, background)


def run(cfg: Config) -> list[Path]:
    """Run the trend stage; return the files written (see the module docstring)."""
    tcfg = cfg.trend
    stage = StageRun(cfg, "trend")
    out = stage.folder
    fitted = _read_estimate(stage, "fitted", required=True)
    assert fitted is not None  # required=True: a missing run raised StageOrderError
    tier1 = _read_estimate(stage, "tier1", required=False) if "tier1" in cfg.estimate.runs else None
    written: list[Path] = []

    series = [build_series(fitted["national"], fitted["province"], "fitted")]
    if tier1 is not None:
        series.append(build_series(tier1["national"], tier1["province"], "tier1"))
    series_df = pd.concat(series, ignore_index=True)
    written.append(io.write_csv(series_df, out / "series.csv"))

    results: dict[str, Any] = {
        "units": "series in kg N2O-N/yr; slopes in kg N2O-N/yr per year",
        "settings": tcfg.model_dump(),
    }
    tables = []
    nat = series_df[(series_df["model"] == "fitted") & (series_df["scope"] == "national")]
    national = analyse(nat, tcfg)
    draws_summary = None
    if fitted["national_draws"] is not None:
        years, mat = draw_matrix(fitted["national_draws"])
        draws_summary, per_draw = break_draws_summary(years, mat, tcfg)
        national["break_year_over_draws"] = draws_summary
        written.append(
            io.write_csv(
                pd.DataFrame({"draw": np.arange(per_draw.size), "break_year": per_draw}), out / "break_draws.csv"
            )
        )
    results["national"] = national
    results["series_value"] = central_column(nat)
    if fitted["national_draws"] is not None:
        contributed = forms_contributed(fitted["national_draws"])
        if contributed is not None:
            # model average: every draw took one N-response form, so the slope intervals over
            # draws (break_year_over_draws.slopes_per_year) carry the form's uncertainty
            results["forms_contributed"] = {
                "share_of_draws": contributed,
                "note": "share of Monte Carlo draws per N-response form and crop",
            }
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
        results["break_used"] = {
            "psi": psi,
            "note": "no significant national break; the one-kink optimum is used "
            "for the spatial pattern, periods and counterfactuals",
        }
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
        value = central_column(fitted["county"])
        c = fitted["county"].groupby(["county_code", "year"], as_index=False)[[value, "area_ha"]].sum()
        county_slopes = slopes_around(c, "county_code", psi)
        spatial["county_share_of_area_slowed"] = slowed_area_share(county_slopes)
        written.append(io.write_csv(county_slopes, out / "spatial_county.csv"))
    spatial["definition"] = (
        "share of mean sown area in units whose fitted slope after the national break is "
        "lower than before (kink fixed at the national psi)"
    )
    results["spatial"] = spatial

    activity = io.read_parquet(stage.upstream("ingest.activity"))
    emissions = _emissions_fn(stage)

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
    written += [
        io.write_csv(yearly, out / "attribution_yearly.csv"),
        io.write_csv(periods, out / "attribution_periods.csv"),
        io.write_csv(cf, out / "counterfactuals.csv"),
    ]
    written.append(io.write_csv(pd.concat(tables, ignore_index=True), out / "breaks.csv"))
    written.append(io.write_json(results, out / "breaks.json"))

    label = cfg.inputs.label
    written.append(io.write_png(figure_national(nat, national, draws_summary), out / "national_trend.png", label))
    written.append(
        io.write_png(figure_attribution(periods[periods["period"] != "all"]), out / "attribution.png", label)
    )
    if prov_slopes is not None:
        boundaries_path = cfg.path(cfg.inputs.boundaries.path)
        stage.record_inputs([boundaries_path])
        boundaries = read_boundaries(boundaries_path)
        written.append(
            io.write_png(figure_province_map(boundaries, prov_slopes), out / "province_slope_change.png", label)
        )
    return stage.finish(written)


# ---------------------------------------------------------------------------------------------
# `cropn2o breaks SERIES.csv`
# ---------------------------------------------------------------------------------------------
def read_series(path: str | Path, value_column: str = "value") -> pd.DataFrame:
    """Read an annual series (columns ``year`` and ``value_column``) with errors naming the cell."""
    df = read_tables(path)
    for col in ("year", value_column):
        if col not in df.columns:
            raise InputError(
                path,
                f"no column '{col}'",
                f"name the columns year and {value_column} (or pass --value-column)",
                column=col,
            )
    out = pd.DataFrame(
        {"year": pd.to_numeric(df["year"], errors="coerce"), "value": pd.to_numeric(df[value_column], errors="coerce")}
    )
    for col, src in (("year", "year"), ("value", value_column)):
        bad = out[col].isna() | ~np.isfinite(out[col].to_numpy(float))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                path,
                f"'{df[src].iloc[i]}' is not a number",
                "supply one numeric value per year",
                row=int(df["_row"].iloc[i]),
                column=src,
            )
    dup = out["year"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(
            path,
            f"year {int(out['year'].iloc[i])} appears twice",
            "keep one row per year",
            row=int(df["_row"].iloc[i]),
            column="year",
        )
    return out.sort_values("year").reset_index(drop=True)


def breaks_command(
    series_csv: str, value_column: str = "value", out: str | None = None, tcfg: TrendConfig | None = None
) -> int:
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
        print(
            f"{key}: {result[key]['conclusion']} [{result[key]['year_convention']}]",
            file=sys.stdout if out else sys.stderr,
        )
    return 0

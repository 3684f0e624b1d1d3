"""The COMPARE stage: this inventory against EDGAR and FAOSTAT, scope-matched (docs/compare.md).

Reads the estimate stage's national and provincial tables (fitted and Tier 1), the grid stage's
0.1° grid and cached allocation weights, and the reference inventories configured under
``inputs.edgar`` (gridded, any EDGAR flavour), ``inputs.edgar_national`` and ``inputs.faostat``
(each optional). Writes under ``data_processed/compare/``: ``national.csv``, ``province.csv``,
``county.parquet`` (totals, difference, ratio, scope columns), ``bridge.csv``, ``trends.csv``,
``spatial.csv`` (per-year cell agreement), ``difference_map.nc``, ``summary.json`` and the
figures ``totals``, ``bridge``, ``difference_map`` (PNG + SVG). All masses kg N2O-N per year
unless a column says otherwise. The computation is in :mod:`pipeline.methods.compare`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from pipeline import io
from pipeline.config import Config
from pipeline.errors import InputError, StageOrderError
from pipeline.methods import compare as cmp
from pipeline.methods.gridding import Grid, Weights, weights_from_arrays
from pipeline.plots.compare import figure_bridge, figure_difference_map, figure_totals
from pipeline.plots.style import save_figure
from pipeline.readers.boundaries import read_boundaries
from pipeline.readers.edgar import (
    national_series,
    read_edgar_grids,
    read_edgar_national,
)
from pipeline.readers.faostat import read_synthetic_fertilizer_n2o
from pipeline.stages.context import StageRun

log = logging.getLogger(__name__)

GG = 1e6  # kg per Gg
EXACT = "%.17g"  # round-trip float format: the bridge adds up from the CSV too
AREA_GRID = "the inventory's counties (EDGAR cells aggregated with the grid stage's coverage weights)"
AREA_COUNTRY = (
    "the whole country as the reference reports it: equal to the inventory's area only when the "
    "inventory covers every province"
)


def _all_crops(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["crop"] == "all"] if "crop" in df.columns else df


def _inventory(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    d = _all_crops(df)
    cols = {"n2o_n_kg_mean": "n2o_n_kg", "n2o_n_kg_p2_5": "n2o_n_kg_p2_5", "n2o_n_kg_p97_5": "n2o_n_kg_p97_5"}
    return d[["year", *keys, *[c for c in cols if c in d.columns]]].rename(columns=cols)


def _weights(stage: StageRun, grid_name: str) -> Weights:
    index_path = stage.upstream("grid.weights_index")
    assert index_path is not None
    index = io.read_json(index_path)
    if grid_name not in index:
        raise StageOrderError(
            f"{index_path}: no grid '{grid_name}' (grids: {', '.join(sorted(index))}). "
            "Fix: set compare.grid to one of them, or add it to grid.grids and run `cropn2o grid`"
        )
    path = index_path.parent / index[grid_name]["file"]
    if not path.exists() or io.file_sha256(path) != index[grid_name]["sha256"]:
        raise StageOrderError(
            f"{path}: the cached weights are missing or changed since the grid stage ran. Fix: run `cropn2o grid`"
        )
    stage.record_inputs([path])
    arrays = io.read_npz(path)
    gi = [int(v) for v in arrays["grid"]]
    grid = Grid(grid_name, float(arrays["resolution_deg"][0]), gi[0], gi[1], gi[2], gi[3])
    return weights_from_arrays(arrays, grid)


def _inventory_grid(stage: StageRun, grid_name: str, years: list[int]) -> np.ndarray:
    """(years, nlat, nlon) kg N2O-N per cell of the grid stage's NetCDF, crops summed."""
    stage.upstream("grid.mass_check")
    manifest = stage.upstream_manifest("grid.mass_check")
    path = stage.cfg.processed / "grid" / f"{grid_name}.nc"
    recorded = manifest.get("outputs", {}).get(f"{grid_name}.nc")
    if not path.exists() or recorded != io.file_sha256(path):
        raise StageOrderError(f"{path}: missing or changed since the grid stage ran. Fix: run `cropn2o grid`")
    stage.record_inputs([path])
    with xr.open_dataset(path) as ds:
        # kg N2O-N per cell per year: the crop total variable, or the crop layers summed
        da = (ds["n2o_n_total"] if "n2o_n_total" in ds else ds["n2o_n"].sum("crop")).astype("float64")
        tname = next(d for d in da.dims if d not in ("lat", "lon", "crop"))
        vals = da.transpose(tname, "lat", "lon")
        file_years = [
            int(pd.Timestamp(t).year) if not np.issubdtype(np.asarray(t).dtype, np.integer) else int(t)
            for t in ds[tname].values
        ]
        pos = [file_years.index(y) for y in years]
        return np.asarray(vals.values[pos], dtype=np.float64)


def run(cfg: Config) -> list[Path]:
    """Run the comparison; return the files written (see the module docstring)."""
    cc = cfg.compare
    stage = StageRun(cfg, "compare")
    out = stage.folder
    est_manifest = stage.upstream_manifest("estimate.fitted_national")
    # all-crop tables (the per-crop ones are estimate.fitted_national / _province)
    nat_path = stage.upstream("estimate.fitted_national_total")
    prov_path = stage.upstream("estimate.fitted_province_total")
    assert nat_path is not None and prov_path is not None
    fitted_nat = _inventory(io.read_parquet(nat_path), [])
    fitted_prov = _inventory(io.read_parquet(prov_path), ["province_code"])
    tier1_path = stage.upstream("estimate.tier1_national_total", required=False)
    tier1_nat = _inventory(io.read_parquet(tier1_path), []) if tier1_path is not None else None
    background_included = est_manifest.get("background") == "included"
    indirect_included = "indirect" in str(est_manifest.get("emission_columns", "")).replace("indirect not", "")
    inv_scope = cmp.inventory_scope(background_included, indirect_included)
    years_all = sorted(int(y) for y in fitted_nat["year"])
    lo = max(years_all[0], cc.first_year or years_all[0])
    hi = min(years_all[-1], cc.last_year or years_all[-1])
    years = [y for y in years_all if lo <= y <= hi]
    label = cfg.inputs.label or "cropn2o"

    written: list[Path] = []
    national_parts, province_parts = [], []
    summary: dict[str, Any] = {
        "units": "kg N2O-N per year (tables); trends in Gg N2O-N/yr and Gg N2O-N/yr per year",
        "inventory_scope": inv_scope,
        "years": [lo, hi],
        "references": {},
    }
    trend_series: dict[str, tuple[Any, Any]] = {
        "fitted": (years, fitted_nat.set_index("year").loc[years, "n2o_n_kg"].to_numpy() / GG)
    }
    trend_scopes = {"fitted": inv_scope}
    if tier1_nat is not None:
        trend_series["tier1"] = (years, tier1_nat.set_index("year").loc[years, "n2o_n_kg"].to_numpy() / GG)
        trend_scopes["tier1"] = "IPCC Tier 1 on this inventory's activity data, same scope as fitted"
    edgar_nat_grid = None
    spatial_rows = []

    # --- EDGAR gridded -----------------------------------------------------------------------
    if cfg.inputs.edgar is not None:
        scope = cmp.reference_scope("edgar_grid", inv_scope, cc.edgar_synthetic_share, indirect_included)
        w = _weights(stage, cc.grid)
        g = w.grid
        west, south, east, north = g.bounds
        bbox = (max(west, -180.0), max(south, -90.0), min(east, 180.0), min(north, 90.0))
        edgar_path = cfg.path(cfg.inputs.edgar.path)
        ds = read_edgar_grids(edgar_path, first_year=lo, last_year=hi, bbox=bbox)
        stage.record_inputs(sorted({p for p in io.expand_paths(edgar_path, (".zip", ".nc", ".txt"))}))
        if ds.attrs.get("sector") and ds.attrs["sector"] != cc.edgar_sector:
            raise InputError(
                edgar_path,
                f"EDGAR sector {ds.attrs['sector']}, but compare.edgar_sector is {cc.edgar_sector}",
                "point inputs.edgar at the files of the configured sector, or change compare.edgar_sector",
            )
        gyears = [int(y) for y in ds["year"].values]
        kg = cmp.reference_to_n2o_n_kg(ds["n2o_t"].values, "t N2O")
        sector_field, covered = cmp.place_on_grid(ds["lat"].values, ds["lon"].values, kg, g)
        county = cmp.aggregate_layers(w, sector_field)  # (counties, years), whole sector
        units_df = cmp.unit_table(w.county_codes, gyears, county)
        nat_ref = units_df.groupby("year", as_index=False)["n2o_n_kg"].sum()
        prov_ref = units_df.groupby(["province_code", "year"], as_index=False)["n2o_n_kg"].sum()
        area = AREA_GRID
        national_parts.append(cmp.compare_totals(fitted_nat, nat_ref, scope, "edgar_grid", reference_area=area))
        if tier1_nat is not None:
            national_parts.append(
                cmp.compare_totals(tier1_nat, nat_ref, scope, "edgar_grid", inventory_name="tier1", reference_area=area)
            )
        province_parts.append(
            cmp.compare_totals(fitted_prov, prov_ref, scope, "edgar_grid", keys=["province_code"], reference_area=area)
        )
        county_inv = None
        cpath = stage.upstream("estimate.fitted_county", required=False)
        if cpath is not None:
            c = io.read_parquet(cpath)
            county_inv = (
                c.groupby(["county_code", "year"], as_index=False)["n2o_n_kg_mean"]
                .sum()
                .rename(columns={"n2o_n_kg_mean": "n2o_n_kg"})
            )
            written.append(
                io.write_parquet(
                    cmp.compare_totals(
                        county_inv, units_df, scope, "edgar_grid", keys=["county_code"], reference_area=area
                    ),
                    stage.output("county"),
                )
            )
        edgar_nat_grid = nat_ref.set_index("year")["n2o_n_kg"] * scope.reference_share
        trend_series["edgar_grid"] = (list(edgar_nat_grid.index), edgar_nat_grid.to_numpy() / GG)
        trend_scopes["edgar_grid"] = f"{scope.reference} x {scope.reference_share:g}, over this inventory's counties"

        inv_grid = _inventory_grid(stage, cc.grid, gyears)
        mask = cmp.unit_cells(w) & covered
        diff = np.where(mask[None], inv_grid - sector_field * scope.reference_share, np.nan)
        for i, y in enumerate(gyears):
            m = cmp.spatial_agreement(inv_grid[i], sector_field[i] * scope.reference_share, mask)
            spatial_rows.append({"reference": "edgar_grid", "grid": g.name, "year": y, **m, **scope.columns()})
        diff_ds = xr.Dataset(
            {
                "difference_n2o_n": (
                    ("year", "lat", "lon"),
                    diff.astype(np.float32),
                    {
                        "units": "kg year-1",
                        "long_name": "inventory minus scope-matched EDGAR, N2O-N per cell",
                        "comment": f"{inv_scope} minus {scope.reference} x {scope.reference_share:g}; "
                        "NaN outside the inventory's counties or the EDGAR window",
                    },
                )
            },
            coords={"year": np.asarray(gyears, dtype=np.int32), "lat": g.lat, "lon": g.lon},
            attrs={
                "title": f"{label}: cropn2o compare, difference map",
                "Conventions": "CF-1.8",
                "source_edgar": ds.attrs.get("source_files", ""),
                "synthetic_input_label": label,
            },
        )
        written.append(io.write_with(stage.output("difference_map"), lambda p: diff_ds.to_netcdf(p, engine="netcdf4")))
        summary["references"]["edgar_grid"] = {
            **scope.columns(),
            "files": ds.attrs.get("source_files", ""),
            "flavour": ds.attrs.get("flavour", ""),
            "edgar_window_total_n2o_n_kg": {str(y): float(v) for y, v in zip(gyears, kg.sum(axis=(1, 2)))},
            "cells_compared": int(mask.sum()),
        }
        boundaries_path = cfg.path(cfg.inputs.boundaries.path)
        stage.record_inputs([boundaries_path])
        gdf = read_boundaries(boundaries_path)
        provinces = gdf.dissolve(by="province_code").geometry
        fig = figure_difference_map(diff[-1], g, provinces, gyears[-1], label, scope.columns())
        written += save_figure(fig, out / "difference_map")

    # --- EDGAR national table ----------------------------------------------------------------
    if cfg.inputs.edgar_national is not None:
        scope = cmp.reference_scope("edgar_national", inv_scope, cc.edgar_synthetic_share, indirect_included)
        path = cfg.path(cfg.inputs.edgar_national.path)
        table = read_edgar_national(path)
        stage.record_inputs([path])
        try:
            s = national_series(table, cc.edgar_national_country, cc.edgar_national_sectors)
        except KeyError as e:
            raise InputError(path, str(e).strip("'\""), "check compare.edgar_national_country and _sectors") from None
        s = s[s["year"].between(lo, hi)]
        ref = pd.DataFrame(
            {"year": s["year"].astype(int), "n2o_n_kg": cmp.reference_to_n2o_n_kg(s["n2o_gg"], "Gg N2O")}
        )
        national_parts.append(cmp.compare_totals(fitted_nat, ref, scope, "edgar_national", reference_area=AREA_COUNTRY))
        trend_series["edgar_national"] = (ref["year"].tolist(), ref["n2o_n_kg"].to_numpy() * scope.reference_share / GG)
        trend_scopes["edgar_national"] = f"{scope.reference} x {scope.reference_share:g}, whole country"
        summary["references"]["edgar_national"] = {
            **scope.columns(),
            "file": path.name,
            "sectors": list(cc.edgar_national_sectors),
        }

    # --- FAOSTAT -------------------------------------------------------------------------------
    if cfg.inputs.faostat is not None:
        scope = cmp.reference_scope("faostat", inv_scope, cc.edgar_synthetic_share, indirect_included)
        path = cfg.path(cfg.inputs.faostat.path)
        f = read_synthetic_fertilizer_n2o(path, area_code=cc.faostat_area_code)
        stage.record_inputs([path])
        f = f[f["year"].between(lo, hi)]
        ref = pd.DataFrame(
            {"year": f["year"].astype(int), "n2o_n_kg": cmp.reference_to_n2o_n_kg(f["n2o_kt"], "kt N2O")}
        )
        national_parts.append(cmp.compare_totals(fitted_nat, ref, scope, "faostat", reference_area=AREA_COUNTRY))
        trend_series["faostat"] = (ref["year"].tolist(), ref["n2o_n_kg"].to_numpy() * scope.reference_share / GG)
        trend_scopes["faostat"] = f"{scope.reference} x {scope.reference_share:.4f}, whole country"
        summary["references"]["faostat"] = {**scope.columns(), "file": path.name, "area_code": cc.faostat_area_code}

    if not national_parts:
        raise InputError(
            "config",
            "no reference inventory configured",
            "set inputs.edgar, inputs.edgar_national or inputs.faostat (see docs/compare.md)",
        )

    national = pd.concat(national_parts, ignore_index=True)
    written.append(io.write_csv(national, stage.output("national"), float_format=EXACT))
    province = (
        pd.concat(province_parts, ignore_index=True)
        if province_parts
        else pd.DataFrame(columns=["reference", "year", "province_code"])
    )
    written.append(io.write_csv(province, stage.output("province"), float_format=EXACT))
    spatial = pd.DataFrame(spatial_rows) if spatial_rows else pd.DataFrame(columns=["reference", "grid", "year"])
    written.append(io.write_csv(spatial, stage.output("spatial")))

    br = pd.DataFrame(columns=["year"])
    if edgar_nat_grid is not None and tier1_nat is not None:
        br = cmp.bridge(
            fitted_nat.set_index("year")["n2o_n_kg"], tier1_nat.set_index("year")["n2o_n_kg"], edgar_nat_grid
        )
        br["scope"] = f"fitted and Tier 1: {inv_scope}; EDGAR: {trend_scopes['edgar_grid']}"
        summary["bridge_max_closure_rel"] = float(br["closure_rel"].max())
    written.append(io.write_csv(br, stage.output("bridge"), float_format=EXACT))

    trends, results = cmp.trend_table(trend_series, cc.breakpoints, "Gg N2O-N/yr", trend_scopes)
    written.append(io.write_csv(trends, stage.output("trends")))
    summary["trends"] = {k: {kk: vv for kk, vv in v.items() if kk != "analysis"} for k, v in results.items()}
    summary["slowdown"] = [
        cmp.missed_slowdown(results, "fitted", ref) for ref in trend_series if ref not in ("fitted",)
    ]
    written.append(io.write_json(summary, stage.output("summary")))

    written += save_figure(figure_totals(national, fitted_nat, label, inv_scope), out / "totals")
    if len(br):
        written += save_figure(figure_bridge(br, label, br["scope"].iloc[0]), out / "bridge")
    return stage.finish(written, {"references": sorted(summary["references"]), "years": [lo, hi]})

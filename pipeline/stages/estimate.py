"""The ESTIMATE stage: unit x crop x year emissions with Monte Carlo intervals.

Reads ``ingest.activity`` and ``fit.model``; the Monte Carlo design (IPCC Approach 2) is in
:mod:`pipeline.methods.montecarlo` and docs/estimate.md. Writes ``estimate/`` (fitted model) and
``estimate_tier1/`` (IPCC Tier 1 on the same activity data), each with its manifest. On a
``dask.distributed`` cluster the tasks read their rows from temporary Parquet files in
``estimate/`` (:func:`pipeline.parallel.task_rows_on_workers`; the workers must share the
processed folder), removed when the run ends.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import io
from pipeline.config import Config
from pipeline.methods.montecarlo import add_derived, estimate, order_table
from pipeline.parallel import dask_context, task_rows_on_workers
from pipeline.readers.boundaries import read_boundaries
from pipeline.stages.context import StageRun, inventory_model

log = logging.getLogger(__name__)


def run(cfg: Config) -> list[Path]:
    """Estimate with the fitted model (``estimate/``) and with IPCC Tier 1 (``estimate_tier1/``)."""
    folders = {"fitted": "estimate", "tier1": "estimate_tier1"}
    # Every run's manifest goes at the end, the fitted one (the Makefile's target) last: a run
    # that fails leaves no manifest that could pass stale tables of another run as current.
    stage = StageRun(cfg, "estimate", folders=[folders[k] for k in cfg.estimate.runs])
    activity_path = stage.upstream("ingest.activity")
    activity = io.read_parquet(activity_path)
    boundaries = None  # the unit results joined to the polygons (GeoPackage, GeoParquet)
    boundaries_path = cfg.path(cfg.inputs.boundaries.path)
    if boundaries_path.exists():
        boundaries = read_boundaries(boundaries_path)
        stage.record_inputs([boundaries_path])
    else:
        log.warning(
            "estimate: no boundary file %s: county.gpkg and county_geo.parquet are not written", boundaries_path
        )
    written: list[Path] = []
    manifests: dict[str, tuple[list[Path], dict]] = {}
    for kind in cfg.estimate.runs:
        model = inventory_model(stage, kind)
        # on a cluster the workers read their tasks' rows from files under the stage's folder
        with dask_context(cfg.dask) as client, task_rows_on_workers(client, stage.folder) as task_rows:
            tables = estimate(activity, model, cfg.estimate, cfg.ipcc.edition, task_rows=task_rows)
        county = add_derived(tables["county"], cfg.estimate.gwp)
        province = order_table(add_derived(tables["province"], cfg.estimate.gwp), ["province_code"])
        national = order_table(add_derived(tables["national"], cfg.estimate.gwp), [])
        out = stage.output
        meta = _table_metadata(cfg, stage, kind)
        province_by_crop, province_total = split_total(province)
        national_by_crop, national_total = split_total(national)
        draws_by_crop, draws_total = split_total(tables["national_draws"])
        pq = functools.partial(io.write_parquet, column_units=column_units)
        files = [
            pq(county, out(f"{kind}_county"), {**meta, "cropn2o_table": "unit x crop x year"}),
            pq(province_by_crop, out(f"{kind}_province"), {**meta, "cropn2o_table": "province x crop x year"}),
            pq(province_total, out(f"{kind}_province_total"), {**meta, "cropn2o_table": "province x year, all crops"}),
            io.write_csv(province_by_crop, out(f"{kind}_province_csv")),
            io.write_csv(province_total, out(f"{kind}_province_total_csv")),
            io.write_csv(national_by_crop, out(f"{kind}_national_csv")),
            io.write_csv(national_total, out(f"{kind}_national_total_csv")),
            pq(national_by_crop, out(f"{kind}_national"), {**meta, "cropn2o_table": "crop x year, national"}),
            pq(national_total, out(f"{kind}_national_total"), {**meta, "cropn2o_table": "year, national, all crops"}),
            pq(draws_by_crop, out(f"{kind}_national_draws"), {**meta, "cropn2o_table": "draw x year x crop, national"}),
            pq(
                draws_total,
                out(f"{kind}_national_total_draws"),
                {**meta, "cropn2o_table": "draw x year, national, all crops"},
            ),
            pq(
                tables["province_draws"],
                out(f"{kind}_province_draws"),
                {
                    **meta,
                    "cropn2o_table": "draw x year x province, all crops: the interval of any group of "
                    "provinces is the quantiles of its per-draw sums",
                },
            ),
        ]
        if boundaries is not None:
            geo = unit_results_wide(county, boundaries)
            layer_meta = {
                **meta,
                "cropn2o_columns": "n2o_n_kg_<stat>[_<crop>]_<year>: kg N2O-N per year; "
                "<stat> mean (all crops and per crop), p2_5 and p97_5 (per crop: the 95 % interval "
                "of a unit's all-crop total is not in the county table)",
            }
            files += [
                io.write_gpkg(geo, out(f"{kind}_county_gpkg"), layer="county_results", layer_metadata=layer_meta),
                io.write_geoparquet(geo, out(f"{kind}_county_geoparquet"), layer_meta),
            ]
        manifests[kind] = (
            files,
            {
                "model": kind,
                "units": "kg N2O-N per year (n2o_n_kg_*); kg N2O; kg CO2e",
                "background": cfg.estimate.background,
                "emission_columns": (
                    "fertilizer-induced direct N2O-N (background in background_n2o_n_kg_mean)"
                    if cfg.estimate.background == "separate"
                    else "direct N2O-N including background"
                )
                + (" + indirect N2O-N" if cfg.estimate.indirect else ""),
                "model_provenance": model.provenance,
            },
        )
        written += files
        nat = national_total
        log.info(
            "%s: national %d %.1f Gg N2O-N (95%% %.1f-%.1f), %d %.1f Gg",
            kind,
            nat["year"].iloc[0],
            nat["n2o_n_kg_mean"].iloc[0] / 1e6,
            nat["n2o_n_kg_p2_5"].iloc[0] / 1e6,
            nat["n2o_n_kg_p97_5"].iloc[0] / 1e6,
            nat["year"].iloc[-1],
            nat["n2o_n_kg_mean"].iloc[-1] / 1e6,
        )
    inputs = list(stage.inputs)
    for done in sorted(manifests, key=lambda k: k == "fitted"):
        files, extra = manifests[done]
        # the Tier 1 run does not read the fitted model: its manifest lists only what it read
        stage.inputs = inputs if done == "fitted" else [activity_path]
        written.append(stage.finish(files, extra, folder=folders[done])[-1])
    return written


# ---------------------------------------------------------------------------------------------
# Output tables
# ---------------------------------------------------------------------------------------------
#: Units of the columns (Parquet field metadata ``units``; udunits strings).
column_units = {
    **{f"n2o_n_kg_{k}": "kg year-1" for k in ("mean", "central", "median", "p2_5", "p97_5")},
    "background_n2o_n_kg_mean": "kg year-1",
    "background_n2o_n_kg_central": "kg year-1",
    "n2o_kg_mean": "kg year-1",
    "co2e_kg_mean": "kg year-1",
    "n2o_n_kg": "kg year-1",
    "area_ha": "ha",
    "n_applied_kg": "kg year-1",
    "n_rate_kg_ha": "kg ha-1 year-1",
    "water_input_mm": "mm",
}


def split_total(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table with per-crop rows and ``crop == "all"`` rows into (by crop, total).

    The total table has no ``crop`` column, so no table mixes the two and a plain sum over
    either never counts an emission twice.
    """
    is_total = (table["crop"] == "all").to_numpy()
    return (table[~is_total].reset_index(drop=True), table[is_total].drop(columns="crop").reset_index(drop=True))


def _table_metadata(cfg: Config, stage: StageRun, kind: str) -> dict[str, str]:
    """Parquet / GeoPackage metadata: units, scope, label, model and the provenance of the run."""
    scope = (
        "fertilizer-induced direct N2O-N (zero-N background in background_n2o_n_kg_mean)"
        if cfg.estimate.background == "separate"
        else "direct N2O-N including the zero-N background"
    )
    scope += " + indirect N2O-N" if cfg.estimate.indirect else ", indirect emissions not included"
    return {
        **stage.provenance(),
        "cropn2o_units": json.dumps({k: column_units[k] for k in sorted(column_units)}, sort_keys=True),
        "cropn2o_scope": scope,
        "cropn2o_label": cfg.inputs.label or "",
        "cropn2o_model": kind,
        "cropn2o_interval": "95 % Monte Carlo interval (2.5th-97.5th percentiles over "
        f"{cfg.estimate.draws} draws, seed {cfg.estimate.seed})",
    }


def unit_results_wide(county: pd.DataFrame, boundaries: Any) -> Any:
    """One feature per unit polygon with its names and, per year, mean and interval columns.

    Columns ``n2o_n_kg_mean_<year>`` (all crops), ``n2o_n_kg_mean_<crop>_<year>``,
    ``n2o_n_kg_p2_5_<crop>_<year>`` and ``n2o_n_kg_p97_5_<crop>_<year>`` (kg N2O-N per year).
    One feature per unit (not per unit x year) keeps each polygon once in the file. Units
    without emissions get 0; every county of the table must have a polygon (the grid stage
    checks the same).
    """
    stats = ["n2o_n_kg_mean", "n2o_n_kg_p2_5", "n2o_n_kg_p97_5"]
    wide = county.pivot_table(index="county_code", columns=["year", "crop"], values=stats, aggfunc="sum", observed=True)
    cols: dict[str, pd.Series] = {}
    years = sorted(int(y) for y in county["year"].unique())
    crops = [c for c in pd.unique(county["crop"].astype(str))]
    for y in years:
        cols[f"n2o_n_kg_mean_{y}"] = county[county["year"] == y].groupby("county_code")["n2o_n_kg_mean"].sum()
        for c in crops:
            for st in stats:
                key = (st, y, c)
                if key in wide.columns:
                    cols[f"{st}_{c}_{y}"] = wide[key]
    values = pd.DataFrame(cols)
    names = [
        c
        for c in ("county_code", "name", "prefecture_code", "prefecture_name", "province_code", "province_name")
        if c in boundaries.columns
    ]
    geo = boundaries[[*names, "geometry"]].sort_values("county_code").reset_index(drop=True)
    out = geo.merge(values, left_on="county_code", right_index=True, how="left")
    num = list(values.columns)
    out[num] = out[num].fillna(0.0).astype(np.float64)
    return out

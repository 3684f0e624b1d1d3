"""Estimate stage: draws per second, scaling exponents in draws and counties, peak memory.

Synthetic activity (county count and draws varied) with a fitted-form exponential model; the
exponents come from a log-log fit of time against draws and against counties measured in the
same run. Memory must stay flat in draws because tasks are sized as draws x rows <= budget.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from memory import measure
from pipeline.config import EstimateConfig
from pipeline.estimate import estimate
from pipeline.models import CropModel, InventoryModel

CROPS = ("rice", "wheat", "maize", "vegetables", "other_upland")


def _activity(n_counties: int, n_years: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = n_counties * n_years * len(CROPS)
    codes = 110000 + np.arange(n_counties) * 3
    return pd.DataFrame({
        "county_code": np.repeat(codes, n_years * len(CROPS)),
        "province_code": np.repeat(codes // 10_000, n_years * len(CROPS)),
        "year": np.tile(np.repeat(np.arange(2000, 2000 + n_years), len(CROPS)), n_counties),
        "crop": np.tile(CROPS, n_counties * n_years),
        "area_ha": rng.uniform(1e3, 3e4, n), "n_rate_kg_ha": rng.uniform(50, 400, n),
        "water_input_mm": rng.uniform(200, 1600, n), "mean_temp_c": rng.uniform(0, 22, n),
        "irrigated_fraction": 0.5, "climate": "wet",
    })


def _model() -> InventoryModel:
    names = ["intercept", "n_rate_kg_ha", "water_input_mm", "mean_temp_c"]
    cov = np.diag([0.01, 1e-8, 1e-9, 1e-5])
    return InventoryModel(kind="fitted", models={
        c: CropModel(crop=c, family="glm_gamma", terms=names[1:], coef_names=names,
                     coef=np.array([-0.5, 0.005, 0.0004, 0.02]), cov=cov,
                     center={"water_input_mm": 800.0, "mean_temp_c": 12.0}) for c in CROPS})


def run_benchmarks(quick: bool = False) -> list[dict]:
    rows = []
    model = _model()
    years = 1 if quick else 2
    draw_set = [250, 1000] if quick else [250, 1000, 5000]
    county_set = [500, 1000] if quick else [500, 1000, 2870]
    t_draws = []
    for d in draw_set:
        act = _activity(1000, years)
        _, sec, peak = measure(lambda: estimate(act, model, EstimateConfig(draws=d, seed=1)))
        t_draws.append(sec)
        rows.append({"stage": "estimate", "case": f"1000 counties x 5 crops x {years} yr, {d} draws",
                     "seconds": sec, "peak_mb": peak, "note": f"{d * len(act) / sec:,.0f} draw-rows/s"})
    t_counties = []
    for n in county_set:
        act = _activity(n, years)
        _, sec, peak = measure(lambda: estimate(act, model, EstimateConfig(draws=1000, seed=1)))
        t_counties.append(sec)
        rows.append({"stage": "estimate", "case": f"{n} counties, 1000 draws", "seconds": sec, "peak_mb": peak})
    exp_d = np.polyfit(np.log(draw_set), np.log(t_draws), 1)[0]
    exp_c = np.polyfit(np.log(county_set), np.log(t_counties), 1)[0]
    rows.append({"stage": "estimate", "case": "time ~ draws^a", "ratio": float(exp_d), "note": "a near 1 = linear"})
    rows.append({"stage": "estimate", "case": "time ~ counties^b", "ratio": float(exp_c), "note": "b near 1 = linear"})
    peaks = [r["peak_mb"] for r in rows[: len(draw_set)]]
    rows.append({"stage": "estimate", "case": f"peak memory {draw_set[-1]} vs {draw_set[1]} draws", "ratio": peaks[-1] / peaks[1],
                 "note": "near 1 = flat in draws"})
    return rows

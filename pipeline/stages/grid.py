"""The GRID stage: unit emissions onto regular latitude-longitude grids, mass-conserving.

Reads ``estimate.fitted_county``, the boundaries and (optionally) the proxy raster; the
allocation (exact coverage x cell area x proxy weights, cached) is in
:mod:`pipeline.methods.gridding` and docs/grid.md. Writes ``grid/<grid>.nc``,
``grid/geotiff/<grid>_<year>.tif``, the mass and zonal checks and ``grid/manifest.json`` (last).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from pipeline import io
from pipeline.config import Config, GridConfig
from pipeline.contract import CROPS
from pipeline.errors import ModelError
from pipeline.methods.gridding import (
    Grid,
    Weights,
    allocation_weights,
    cell_area_m2,
    county_matrix,
    coverage_fractions,
    grid_domain,
    iter_year_stacks,
    make_grid,
    mass_check,
    province_zonal_check,
    resample_proxy,
    weights_from_arrays,
    weights_key,
    weights_to_arrays,
    zonal_check,
)
from pipeline.parallel import dask_context
from pipeline.readers.boundaries import read_boundaries
from pipeline.stages.context import StageRun, package_version

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------------------------
def _weights_for(cfg: Config, gdf, grid: Grid, proxy_on_grid: np.ndarray | None) -> Weights:
    key = weights_key(gdf.geometry.values, gdf["county_code"].to_numpy(), grid, proxy_on_grid)
    cache = cfg.processed / "grid" / "weights" / f"{key}.npz"
    if cache.exists():
        try:
            w = weights_from_arrays(io.read_npz(cache), grid)
            log.info("grid %s: weights from cache %s", grid.name, cache.name)
            return w
        except (ValueError, KeyError, OSError) as e:
            log.warning("grid %s: ignoring unreadable weights cache %s (%s)", grid.name, cache.name, e)
    cov = coverage_fractions(gdf.geometry.values, gdf["county_code"].to_numpy(), grid)
    w = allocation_weights(cov, grid, proxy_on_grid)
    w = Weights(w.grid, w.county_codes, w.county_idx, w.cell, w.coverage, w.weight, w.fallback_codes, key)
    io.write_npz(weights_to_arrays(w), cache)
    return w


def run(cfg: Config) -> list[Path]:
    """Grid the county emissions of the estimate stage; write NetCDF, GeoTIFF, checks, manifest.

    Reads ``<processed>/estimate/county.parquet``, the boundaries and (optionally) the proxy
    raster; writes ``<processed>/grid/<grid>.nc``, ``grid/geotiff/<grid>_<year>.tif``,
    ``grid/mass_check.csv``, ``grid/zonal_check_county.csv``, ``grid/zonal_check_province.csv``
    and ``grid/manifest.json`` (last).
    """
    gc: GridConfig = cfg.grid
    stage = StageRun(cfg, "grid")
    out_dir = stage.folder
    table_path = stage.upstream("estimate.fitted_county")
    assert table_path is not None
    table = io.read_parquet(table_path)
    boundaries_path = cfg.path(cfg.inputs.boundaries.path)
    gdf = read_boundaries(boundaries_path)
    crops = [c for c in CROPS if c in set(table["crop"].astype(str))] or list(CROPS)
    codes = gdf["county_code"].to_numpy(np.int64)
    years, values = county_matrix(table, codes, crops, source=str(table_path))
    proxy_raster = None
    proxy_path = None
    if gc.use_proxy and cfg.inputs.proxy is not None:
        proxy_path = cfg.path(cfg.inputs.proxy.path)
        proxy_raster = io.read_raster(proxy_path)
    inputs_hash = {"county.parquet": io.file_sha256(table_path), boundaries_path.name: io.file_sha256(boundaries_path)}
    if proxy_path is not None:
        inputs_hash[proxy_path.name] = io.file_sha256(proxy_path)

    stage.record_inputs([boundaries_path, *([proxy_path] if proxy_path is not None else [])])
    scope = (
        stage.upstream_manifest("estimate.fitted_county").get("emission_columns")
        or "the n2o_n_kg_mean column of estimate/county.parquet"
    )
    bounds_values = None
    if any(spec.intervals for spec in gc.grids):
        bounds_values = np.concatenate(
            [
                county_matrix(table, codes, crops, value=col, source=str(table_path))[1]
                for col in ("n2o_n_kg_p2_5", "n2o_n_kg_p97_5")
            ],
            axis=2,
        )

    written: list[Path] = []
    mass_rows, zonal_rows = [], []
    grids_meta = {}
    bb = tuple(float(v) for v in gdf.total_bounds)
    with dask_context(cfg.dask) as client:
        for spec in gc.grids:
            grid = make_grid(spec, bb)
            proxy_on_grid = None
            if proxy_raster is not None:
                pv, (pw, pn, pxr, pyr), nodata = proxy_raster
                proxy_on_grid = resample_proxy(pv, pw, pn, pxr, pyr, grid, nodata)
            w = _weights_for(cfg, gdf, grid, proxy_on_grid)
            layers = values if not spec.intervals else np.concatenate([values, bounds_values], axis=2)
            variables = grid_variables(crops, scope, spec.intervals)
            domain = grid_domain(w)
            files, totals, last_total = write_grid(
                w,
                layers,
                years,
                crops,
                variables,
                nc=out_dir / f"{grid.name}.nc",
                tif_dir=out_dir / "geotiff" if gc.geotiff else None,
                gc=gc,
                client=client,
                global_attrs={**stage.provenance(), **_provenance(cfg, grid, w, inputs_hash, crops)},
                label=cfg.inputs.label or "",
                overviews=spec.overviews,
            )
            written += files
            mc = mass_check(years, crops, values, totals)
            mc.insert(0, "grid", grid.name)
            mass_rows.append(mc)
            zonal_rows.append(zonal_check(w, values[-1].sum(axis=1), last_total))
            grids_meta[grid.name] = {
                "shape": [grid.nlat, grid.nlon],
                "bounds": list(grid.bounds),
                "resolution_deg": grid.resolution_deg,
                "weights_key": w.key,
                "area_fallback_counties": list(w.fallback_codes),
                "max_mass_rel_diff": float(mc["rel_diff"].max()),
                "variables": [v.name for v in variables],
                "domain_cells": int(domain.sum()),
            }
    mass = pd.concat(mass_rows, ignore_index=True)
    bad = mass[mass["rel_diff"] > 1e-9]
    if len(bad):
        raise ModelError(
            f"grid mass check failed: {len(bad)} year x crop layers differ by > 1e-9 "
            f"(worst {bad['rel_diff'].max():.3g}). Fix: report this as a bug"
        )
    zonal = pd.concat(zonal_rows, ignore_index=True)
    written.append(io.write_csv(mass, out_dir / "mass_check.csv"))
    written.append(io.write_csv(zonal, out_dir / "zonal_check_county.csv"))
    written.append(io.write_csv(province_zonal_check(zonal), out_dir / "zonal_check_province.csv"))
    # Which cached weights file belongs to which grid (read by the compare stage, issue #10).
    written.append(
        io.write_json(
            {
                name: {
                    "file": f"weights/{meta['weights_key']}.npz",
                    "sha256": io.file_sha256(out_dir / "weights" / f"{meta['weights_key']}.npz"),
                }
                for name, meta in grids_meta.items()
            },
            out_dir / "weights_index.json",
        )
    )
    return stage.finish(written, {"grids": grids_meta, "years": [int(y) for y in years], "crops": list(crops)})


def write_grid(
    w: Weights,
    layers: np.ndarray,
    years: np.ndarray,
    crops: list[str],
    variables: list[io.GridVariable],
    *,
    nc: Path,
    tif_dir: Path | None,
    gc: GridConfig,
    client: object | None,
    global_attrs: dict[str, str],
    label: str,
    overviews: Literal["none", "nearest", "average"] = "average",
) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Allocate every year of ``layers`` onto ``w``'s grid and write the NetCDF and the COGs.

    ``layers`` is (years, units, crops + extra) kg N2O-N per year (crops first). Each year's
    grid total is checked against the unit totals before anything of it is written. Returns
    the files written, the (years, crops) grid totals (kg, float64 sums before the cast to
    float32) and the last year's all-crop field (kg per cell, 0 outside the domain) for the
    zonal check.
    """
    n_crops = len(crops)
    county_totals = layers[:, :, :n_crops].sum(axis=1)  # (years, crops): what each year must add up to
    domain = grid_domain(w)
    totals = np.zeros((len(years), n_crops))
    last_total: list[np.ndarray] = []
    pool = _StackPool((len(variables), w.grid.nlat, w.grid.nlon)) if client is None else None

    def stacks() -> Iterator[tuple[int, np.ndarray]]:
        for i, stack, sums in iter_year_stacks(
            w,
            layers,
            n_crops,
            years,
            io.GRID_FILL_F4,
            gc.years_in_flight,
            client,
            pool.take if pool is not None else None,
        ):
            totals[i] = sums[:n_crops]
            rel = np.abs(totals[i] - county_totals[i]) / np.maximum(np.abs(county_totals[i]), 1e-300)
            if np.any(rel > 1e-9):
                raise ModelError(
                    f"grid {w.grid.name}, {int(years[i])}: the grid does not add up to the "
                    f"county totals (relative difference {rel.max():.3g}). Fix: report this as a bug"
                )
            if i == len(years) - 1:  # the zonal check's field (the stored float32 total)
                last_total.append(np.where(domain, stack[0].astype(np.float64), 0.0))
            yield i, stack

    files = _write_grid_files(
        nc,
        tif_dir,
        stacks(),
        grid=w.grid,
        years=years,
        crops=crops,
        variables=variables,
        domain=domain,
        overviews=overviews,
        global_attrs=global_attrs,
        chunk=gc.chunk_cells,
        nc_codec=io.NetcdfCodec(
            gc.netcdf_compression, gc.compression_level, gc.netcdf_shuffle, gc.deflate_engine, gc.write_threads
        ),
        tif_codec=io.GeotiffCodec(gc.geotiff_compression, gc.geotiff_level, gc.geotiff_predictor, gc.write_threads),
        label=label,
        release=pool.give_back if pool is not None else None,
    )
    return files, totals, last_total[0]


def _provenance(cfg: Config, grid: Grid, w: Weights, inputs_hash: dict[str, str], crops: list[str]) -> dict[str, str]:
    """Global NetCDF attributes: CF conventions and provenance, without wall-clock times."""
    pkg = package_version()
    return {
        "Conventions": "CF-1.8",
        "title": (f"{cfg.inputs.label}: " if cfg.inputs.label else "")
        + f"Direct cropland N2O-N emissions on the {grid.name} grid",
        "comment": cfg.inputs.label or "built from the inputs identified in input_sha256",
        "institution": "cropn2o open-source pipeline",
        "source": f"cropn2o {pkg}: county x crop x year estimates allocated with exact coverage weights",
        "history": f"cropn2o {pkg} grid stage (inputs identified by SHA-256 in input_sha256)",
        "references": "Shang et al. (2019) Global Change Biology 25:3706-3719, doi:10.1111/gcb.14741",
        "grid_resolution_deg": repr(grid.resolution_deg),
        "weights_sha256": w.key,
        "input_sha256": json.dumps(inputs_hash, sort_keys=True),
        "config_grid": json.dumps(cfg.grid.model_dump(mode="json"), sort_keys=True),
        "area_fallback_counties": ",".join(map(str, w.fallback_codes)),
        "crops": ",".join(crops),
    }


# ---------------------------------------------------------------------------------------------
# Output layout and concurrent writing
# ---------------------------------------------------------------------------------------------
#: CF standard name of the flux-density variable (CF standard-name table v93, canonical units
#: kg m-2 s-1).
FLUX_STANDARD_NAME = (
    "surface_upward_mass_flux_of_nitrous_oxide_expressed_as_nitrogen_out_of_vegetation_and_litter_and_soil"
)
#: udunits string of the per-cell mass layers.
MASS_UNITS = "kg year-1"


def grid_variables(crops: list[str], scope: str, intervals: bool) -> list[io.GridVariable]:
    """The NetCDF variables in the order of :func:`~pipeline.methods.gridding.year_stack`.

    ``n2o_n_total``, ``n2o_n_<crop>`` (kg N2O-N per cell per year), ``n2o_n_flux`` (kg m-2 s-1,
    all crops) and, with ``intervals``, ``n2o_n_<crop>_p2_5`` then ``n2o_n_<crop>_p97_5``.
    """
    mass = {"units": MASS_UNITS, "cell_methods": "area: sum time: mean", "cell_measures": "area: cell_area"}
    out = [
        io.GridVariable(
            "n2o_n_total",
            {
                **mass,
                "long_name": f"N2O-N emission per grid cell, all crops ({scope})",
                "comment": "mass of N2O-N emitted in the cell over the calendar year, summed over the crops; "
                "N2O mass = N2O-N x 44/28",
            },
        )
    ]
    for c in crops:
        attrs = {
            **mass,
            "long_name": f"N2O-N emission per grid cell, {c} ({scope})",
            "comment": f"mass of N2O-N emitted by {c} in the cell over the calendar year",
        }
        if intervals:
            attrs["ancillary_variables"] = f"n2o_n_{c}_p2_5 n2o_n_{c}_p97_5"
        out.append(io.GridVariable(f"n2o_n_{c}", attrs))
    out.append(
        io.GridVariable(
            "n2o_n_flux",
            {
                "standard_name": FLUX_STANDARD_NAME,
                "units": "kg m-2 s-1",
                "cell_methods": "area: mean time: mean",
                "cell_measures": "area: cell_area",
                "long_name": f"N2O-N emission flux density, all crops ({scope})",
                "comment": "n2o_n_total / (cell_area x seconds of the calendar year, 365 or 366 days); "
                "the mean over the whole cell, not over its cropland",
            },
        )
    )
    if intervals:
        for tag, what in (("p2_5", "2.5th"), ("p97_5", "97.5th")):
            for c in crops:
                out.append(
                    io.GridVariable(
                        f"n2o_n_{c}_{tag}",
                        {
                            "units": MASS_UNITS,
                            "cell_measures": "area: cell_area",
                            "long_name": f"N2O-N emission per grid cell, {c}, {what} percentile of the unit's Monte Carlo draws",
                            "comment": "cell share of the unit x the unit's bound (n2o_n_kg_"
                            + tag
                            + " of estimate/county"
                            ".parquet): the allocation within a unit is treated as certain; bounds of "
                            "different cells, units or crops must not be added (a sum of percentiles is "
                            "not a percentile: use estimate/province_draws.parquet for regions)",
                        },
                    )
                )
    return out


class _StackPool:
    """Recycles the float32 year stacks once the writers are done with them.

    A 0.01 deg stack is most of a gigabyte; allocating a new one per year makes the kernel
    fault in and zero a fresh gigabyte of pages every year (a third of the stage's CPU time
    before this pool). The writers' own back-pressure bounds how many stacks are alive at once
    (one being built per year in flight, one queued and one being written per writer), so
    :meth:`take` never waits: it hands out a free stack or makes a new one.

    A stack is a south-up view (``buf[:, ::-1]``) of a north-up buffer: the NetCDF writer reads
    its chunks south-up from the view, and the GeoTIFF writer takes the north-up buffer as it is
    (flipping a contiguous copy per year cost more than the compression).
    """

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = shape
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()
        self.created = 0

    def take(self) -> np.ndarray:
        """A stack to write the next year into."""
        with self._lock:
            if self._free:
                return self._free.pop()
            self.created += 1
        return np.empty(self.shape, dtype=np.float32)[:, ::-1]

    def give_back(self, stack: np.ndarray) -> None:
        """Every writer is done with ``stack``: it may be handed out again."""
        if stack.shape == self.shape and stack.dtype == np.float32:
            with self._lock:
                self._free.append(stack)


class _Readers:
    """Counts the writers still reading each stack; calls ``release`` after the last one."""

    def __init__(self, release: Callable[[np.ndarray], None] | None) -> None:
        self.release = release
        self._left: dict[int, tuple[np.ndarray, int]] = {}
        self._lock = threading.Lock()

    def start(self, stack: np.ndarray, readers: int) -> None:
        with self._lock:
            self._left[id(stack)] = (stack, readers)

    def done(self, stack: np.ndarray) -> None:
        with self._lock:
            s, left = self._left.pop(id(stack))
            if left > 1:
                self._left[id(stack)] = (s, left - 1)
                return
        if self.release is not None:
            self.release(s)


def _put(q: queue.Queue, item: object, writer: Future) -> None:
    """Put ``item`` on the writer's queue, raising the writer's error if it has stopped."""
    while True:
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            if writer.done():
                writer.result()  # raises the writer's exception
                raise RuntimeError("the NetCDF writer stopped early") from None


def _write_grid_files(
    nc: Path,
    tif_dir: Path | None,
    stacks: Iterator[tuple[int, np.ndarray]],
    *,
    grid: Grid,
    years: np.ndarray,
    crops: list[str],
    variables: list[io.GridVariable],
    domain: np.ndarray,
    global_attrs: dict[str, str],
    chunk: int,
    nc_codec: io.NetcdfCodec,
    tif_codec: io.GeotiffCodec,
    label: str,
    overviews: Literal["none", "nearest", "average"] = "average",
    release: Callable[[np.ndarray], None] | None = None,
) -> list[Path]:
    """Write the NetCDF (one thread) and the yearly COGs (another) while the caller's ``stacks``
    iterator allocates the next years; returns the files written (NetCDF last).

    Each file is written by one thread in a fixed order, so the bytes do not depend on timing.
    Few yearly stacks exist at once: the ones being built, one queued for the NetCDF writer and
    one being written by each writer; ``release(stack)`` is called once both writers are done
    with a stack, so the caller can build a later year in it.
    """
    end = object()
    q: queue.Queue = queue.Queue(maxsize=1)
    readers = _Readers(release)

    def from_queue() -> Iterator[tuple[int, np.ndarray]]:
        previous = None
        while True:
            if previous is not None:  # the NetCDF writer asks for a year once the last is written
                readers.done(previous)
                previous = None
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise RuntimeError("grid writing stopped") from item
            previous = item[1]
            yield item

    band_names = ["total", *crops]
    cog: list[io.CogWriter] = []  # made, used and closed on the GeoTIFF thread (GDAL handles)

    def write_tif(i: int, stack: np.ndarray) -> Path:
        if not cog:
            cog.append(
                io.CogWriter(
                    (1 + len(crops), grid.nlat, grid.nlon),
                    grid.bounds,
                    codec=tif_codec,
                    tile=chunk,
                    overviews=overviews,
                )
            )
        year = int(years[i])
        assert tif_dir is not None
        path = cog[0].write(
            stack[: 1 + len(crops)],
            tif_dir / f"{grid.name}_{year}.tif",
            band_names=band_names,
            band_units=MASS_UNITS,
            tags={
                "year": str(year),
                "quantity": "N2O-N emitted per grid cell over the calendar year",
                "units": MASS_UNITS,
                "bands": ",".join(band_names),
                "source": global_attrs.get("source", ""),
                "label": label,
            },
        )
        readers.done(stack)
        return path

    def close_tif() -> None:
        while cog:
            cog.pop().close()

    written: list[Path] = []
    with (
        ThreadPoolExecutor(1, thread_name_prefix="netcdf") as nc_pool,
        ThreadPoolExecutor(1, thread_name_prefix="geotiff") as tif_pool,
    ):
        nc_future = nc_pool.submit(
            io.write_netcdf_grid,
            nc,
            from_queue(),
            lat=grid.lat,
            lon=grid.lon,
            lat_edges=grid.lat_edges,
            lon_edges=grid.lon_edges,
            cell_area_m2=cell_area_m2(grid),
            years=years,
            variables=variables,
            global_attrs=global_attrs,
            domain=domain,
            chunk=chunk,
            codec=nc_codec,
        )
        tif_future: Future | None = None
        try:
            for i, stack in stacks:
                readers.start(stack, 2 if tif_dir is not None else 1)
                _put(q, (i, stack), nc_future)
                if tif_dir is not None:
                    if tif_future is not None:
                        written.append(tif_future.result())
                    tif_future = tif_pool.submit(write_tif, i, stack)
            _put(q, end, nc_future)
        except BaseException as e:
            if not nc_future.done():  # stop the writer: it removes its temporary file
                with contextlib.suppress(BaseException):
                    _put(q, e, nc_future)
            for f in (nc_future, tif_future):
                if f is not None:
                    with contextlib.suppress(BaseException):
                        f.result()
            raise
        finally:
            tif_pool.submit(close_tif).result()
        if tif_future is not None:
            written.append(tif_future.result())
        written.append(nc_future.result())
    return written

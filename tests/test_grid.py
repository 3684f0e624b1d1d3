"""Tests of the grid stage: grid layout, cell areas, proxy resampling, exact weights, mass
conservation, the shapely reference, zonal aggregation, caching, Dask schedulers and run()."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Polygon, box

from pipeline import io
from pipeline.config import Config, DaskConfig, GridConfig, GridSpec, Inputs, InputSpec
from pipeline.errors import ConfigError, InputError
from pipeline.methods import gridding as G
from pipeline.stages import grid as grid_stage


def _grid(res: float, w: float, s: float, e: float, n: float, name: str = "t") -> grid_stage.Grid:
    return grid_stage.make_grid(GridSpec(name=name, resolution_deg=res, west=w, south=s, east=e, north=n))


def _weights(polys, codes, grid, proxy=None) -> grid_stage.Weights:
    cov = grid_stage.coverage_fractions(polys, codes, grid)
    return grid_stage.allocation_weights(cov, grid, proxy)


@pytest.fixture(scope="module")
def synthetic():
    """Six counties on a 0.1 deg grid: two large, two sub-cell (no cell centre), one sliver, one
    multipolygon. None is aligned to cell edges."""
    polys = [
        Polygon([(100.03, 30.02), (100.71, 30.05), (100.66, 30.58), (100.12, 30.49)]),
        Polygon([(100.71, 30.05), (101.37, 30.11), (101.29, 30.77), (100.66, 30.58)]),
        box(100.412, 30.612, 100.437, 30.638),  # 0.025 deg square: inside one cell, off-centre
        box(101.001, 30.801, 101.009, 30.809),  # sits on nothing but a cell corner region
        Polygon([(100.2, 30.7), (101.1, 30.705), (101.1, 30.708), (100.2, 30.703)]),  # sliver
        shapely.MultiPolygon([box(100.05, 30.85, 100.15, 30.95), box(100.31, 30.91, 100.33, 30.96)]),
    ]
    codes = [510101, 510102, 510103, 510104, 510105, 510106]
    grid = _grid(0.1, 100.0, 30.0, 101.4, 31.0)
    return polys, np.array(codes), grid


# --------------------------------------------------------------------------------------------
# Grid layout and areas
# --------------------------------------------------------------------------------------------
def test_grid_edges_align_to_edgar_and_snap_outward():
    g = _grid(0.1, 73.46, 17.02, 135.04, 53.58)
    assert g.bounds == (73.4, 17.0, 135.1, 53.6)
    np.testing.assert_allclose(g.lon[:3], [73.45, 73.55, 73.65])
    # EDGAR's 0.1 deg centres are -179.95 + 0.1 k: every centre must be one of them.
    k = (g.lon + 179.95) / 0.1
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    assert g.shape == (366, 617)
    fine = _grid(0.01, 73.0, 17.0, 136.0, 54.0)
    assert fine.shape == (3700, 6300)


def test_grid_extent_from_boundaries_and_errors():
    g = grid_stage.make_grid(GridSpec(name="a", resolution_deg=0.1), (73.502, 3.837, 135.0957, 53.5636))
    assert g.bounds == (73.5, 3.8, 135.1, 53.6)
    with pytest.raises(ConfigError, match="extent not set"):
        grid_stage.make_grid(GridSpec(name="a", resolution_deg=0.1))
    with pytest.raises(ConfigError, match="empty extent"):
        # the config refuses west >= east at load; make_grid checks it too (option objects)
        grid_stage.make_grid(GridSpec.model_construct(name="a", resolution_deg=0.1, west=80, east=79, south=0, north=1))


def test_cell_area_sums_to_sphere_and_matches_equatorial_cell():
    world = _grid(1.0, -180, -90, 180, 90)
    total = grid_stage.cell_area_m2(world).sum() * world.nlon
    assert total == pytest.approx(4 * math.pi * G.EARTH_AUTHALIC_RADIUS_M**2, rel=1e-12)
    eq = _grid(0.1, 0.0, 0.0, 0.1, 0.1)
    side = G.EARTH_AUTHALIC_RADIUS_M * math.radians(0.1)
    # A 0.1 deg cell at the equator is a near-square of side R * 0.1 deg (~11.1 km).
    assert grid_stage.cell_area_m2(eq)[0] == pytest.approx(side * side, rel=1e-5)


# --------------------------------------------------------------------------------------------
# Proxy resampling
# --------------------------------------------------------------------------------------------
def test_resample_proxy_area_weighted_mean_and_conservation():
    rng = np.random.default_rng(3)
    src = rng.random((40, 60))  # 0.05 deg, north-up, 100-103 E x 30-32 N
    src[5, 7] = np.nan
    target = _grid(0.1, 100.0, 30.0, 103.0, 32.0)
    out = grid_stage.resample_proxy(src, 100.0, 32.0, 0.05, 0.05, target)
    assert out.shape == target.shape
    # Independent check of one cell: 2 x 2 source pixels weighted by their spherical areas.
    i, j = 7, 11  # target row from the south, column
    rows_north = [40 - 1 - (2 * i), 40 - 1 - (2 * i + 1)]
    lat_s = [30.0 + 0.05 * (2 * i), 30.0 + 0.05 * (2 * i + 1)]
    wts = [math.sin(math.radians(a + 0.05)) - math.sin(math.radians(a)) for a in lat_s]
    vals = [np.mean(src[r, 2 * j : 2 * j + 2]) for r in rows_north]
    assert out[i, j] == pytest.approx(np.dot(wts, vals) / sum(wts), rel=1e-12)
    # Proxy "mass" (value x area) is conserved by area-weighted averaging; NaN counts as 0.
    src_rows_area = np.diff(np.sin(np.deg2rad(30.0 + 0.05 * np.arange(41))))[::-1]
    src_mass = (np.nan_to_num(src) * src_rows_area[:, None]).sum() * 0.05
    tgt_mass = (out * np.diff(np.sin(np.deg2rad(target.lat_edges)))[:, None]).sum() * 0.1
    assert tgt_mass == pytest.approx(src_mass, rel=1e-12)
    # A target cell outside the raster is proxy 0; a partly covered one is diluted.
    wide = _grid(0.1, 99.9, 30.0, 100.2, 30.1)
    o2 = grid_stage.resample_proxy(np.ones((40, 60)), 100.0, 32.0, 0.05, 0.05, wide)
    np.testing.assert_allclose(o2[0], [0.0, 1.0, 1.0])


# --------------------------------------------------------------------------------------------
# Coverage, weights, mass conservation
# --------------------------------------------------------------------------------------------
def _shapely_coverage(poly, grid: grid_stage.Grid) -> dict[int, float]:
    """Reference: polygon-cell intersection areas with shapely, cell by cell."""
    out = {}
    w, s, e, n = poly.bounds
    res = grid.resolution_deg
    c0 = max(int(math.floor((w - grid.lon_edges[0]) / res)) - 1, 0)
    c1 = min(int(math.ceil((e - grid.lon_edges[0]) / res)) + 1, grid.nlon)
    r0 = max(int(math.floor((s - grid.lat_edges[0]) / res)) - 1, 0)
    r1 = min(int(math.ceil((n - grid.lat_edges[0]) / res)) + 1, grid.nlat)
    le, la = grid.lon_edges, grid.lat_edges
    for r in range(r0, r1):
        for c in range(c0, c1):
            cell = box(le[c], la[r], le[c + 1], la[r + 1])
            a = poly.intersection(cell).area / cell.area
            if a > 0:
                out[r * grid.nlon + c] = a
    return out


def test_weights_sum_to_one_and_tiny_counties_keep_mass(synthetic):
    polys, codes, grid = synthetic
    w = _weights(polys, codes, grid)
    sums = np.bincount(w.county_idx, weights=w.weight, minlength=len(codes))
    np.testing.assert_allclose(sums, 1.0, rtol=0, atol=1e-12)
    # The sub-cell county owns no cell centre yet all its mass lands in its one cell.
    centres = shapely.points(*np.meshgrid(grid.lon, grid.lat))
    assert not shapely.contains(polys[2], centres).any()
    v = np.zeros((len(codes), 2))
    v[:, 0] = [5.0, 7.0, 1e-3, 2.5, 11.0, 3.0]
    v[:, 1] = np.arange(1, 7) * 1e6
    out = G.allocate(w, v)
    for j in range(2):
        assert out[j].sum() == pytest.approx(v[:, j].sum(), rel=1e-12)
    only_tiny = G.allocate(w, np.eye(len(codes))[2])
    row, col = divmod(int(np.flatnonzero(only_tiny)[0]), grid.nlon)
    assert np.count_nonzero(only_tiny) == 1 and only_tiny.sum() == pytest.approx(1.0, rel=1e-15)
    assert grid.lon_edges[col] < 100.42 < grid.lon_edges[col + 1]
    assert grid.lat_edges[row] < 30.62 < grid.lat_edges[row + 1]
    # The gather plan reproduces the plain sparse product W^T v.
    np.testing.assert_allclose(out.reshape(2, -1), (w.matrix.T @ v).T, rtol=1e-13, atol=0)


def test_coverage_agrees_with_shapely_reference(synthetic):
    polys, codes, grid = synthetic
    w = _weights(polys, codes, grid)
    area = grid_stage.cell_area_m2(grid)
    for k, poly in enumerate(polys):
        ref = _shapely_coverage(poly, grid)
        sel = w.county_idx == k
        fast = dict(zip(w.cell[sel].tolist(), w.coverage[sel].tolist()))
        assert set(fast) == set(ref), f"county {codes[k]}: different cells"
        cells = np.array(sorted(ref))
        np.testing.assert_allclose([fast[c] for c in cells], [ref[c] for c in cells], rtol=1e-5, atol=1e-7)
        # Reference weights: shapely coverage x spherical area, normalised.
        raw = np.array([ref[c] for c in cells]) * area[cells // grid.nlon]
        got = dict(zip(w.cell[sel].tolist(), w.weight[sel].tolist()))
        np.testing.assert_allclose([got[c] for c in cells], raw / raw.sum(), rtol=1e-5, atol=1e-9)


def test_proxy_weighting_and_zero_proxy_fallback(synthetic, caplog):
    polys, codes, grid = synthetic
    proxy = np.zeros(grid.shape)
    proxy[:, :6] = 0.8  # west of 100.6 E cropped, east of it not
    proxy[2, 1] = 0.1
    with caplog.at_level(logging.INFO, logger="pipeline.methods.gridding"):
        w = _weights(polys, codes, grid, proxy)
    # Counties 510102 and 510104 lie east of 100.6 E (zero proxy): area fallback, logged.
    assert w.fallback_codes == (510102, 510104) and "510102, 510104" in caplog.text
    sums = np.bincount(w.county_idx, weights=w.weight, minlength=len(codes))
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)
    base = _weights(polys, codes, grid)
    sel = w.county_idx == 1
    np.testing.assert_allclose(w.weight[sel], base.weight[sel], rtol=1e-12)
    # County 510101 (west): weights proportional to coverage x area x proxy.
    sel0 = w.county_idx == 0
    raw = w.coverage[sel0] * grid_stage.cell_area_m2(grid)[w.cell[sel0] // grid.nlon] * proxy.ravel()[w.cell[sel0]]
    np.testing.assert_allclose(w.weight[sel0], raw / raw.sum(), rtol=1e-12)


def test_county_outside_grid_is_an_error(synthetic):
    polys, codes, _ = synthetic
    small = _grid(0.1, 100.0, 30.0, 100.5, 30.5)
    cov = grid_stage.coverage_fractions(polys, codes, small)
    with pytest.raises(ConfigError, match="outside the grid extent"):
        grid_stage.allocation_weights(cov, small)


def test_zonal_round_trip_exact_on_cell_aligned_polygons():
    grid = _grid(0.1, 110.0, 20.0, 111.0, 21.0)
    # Polygons made of whole cells, including an L-shape and a one-cell county.
    polys = [
        box(110.0, 20.0, 110.5, 21.0),
        shapely.union(box(110.5, 20.0, 111.0, 20.3), box(110.5, 20.3, 110.7, 20.8)),
        box(110.7, 20.3, 111.0, 20.8),
        box(110.5, 20.8, 111.0, 20.9),
        box(110.9, 20.9, 111.0, 21.0),
    ]
    codes = np.array([440101, 440102, 440103, 440104, 440105])
    w = _weights(polys, codes, grid)
    totals = np.array([3.0, 1e-6, 123.456, 7.0, 0.5])
    back = G.aggregate_to_counties(w, G.allocate(w, totals))
    np.testing.assert_allclose(back, totals, rtol=1e-9, atol=0)
    prov = G.aggregate_to_provinces(codes, back)
    assert prov["value"].iloc[0] == pytest.approx(totals.sum(), rel=1e-12)


def test_county_matrix_zero_fill_and_unknown_codes():
    codes = np.array([110101, 110102, 110105])
    t = pd.DataFrame(
        {
            "county_code": [110102, 110102, 110105],
            "year": [2000, 2001, 2000],
            "crop": ["rice", "maize", "rice"],
            "n2o_n_kg_mean": [1.0, 2.0, 3.0],
        }
    )
    years, v = grid_stage.county_matrix(t, codes, ["rice", "maize"])
    assert years.tolist() == [2000, 2001]
    assert v[:, 0].sum() == 0 and v[0, 1, 0] == 1.0 and v[1, 1, 1] == 2.0 and v[0, 2, 0] == 3.0
    bad = pd.concat(
        [t, pd.DataFrame({"county_code": [999999], "year": [2000], "crop": ["rice"], "n2o_n_kg_mean": [1.0]})],
        ignore_index=True,
    )
    with pytest.raises(InputError, match=r"county\.parquet, row 4, column 'county_code'.*999999"):
        grid_stage.county_matrix(bad, codes, ["rice", "maize"])


# --------------------------------------------------------------------------------------------
# Cache key
# --------------------------------------------------------------------------------------------
def test_weights_key_follows_content(synthetic):
    polys, codes, grid = synthetic
    k = grid_stage.weights_key(polys, codes, grid, None)
    assert grid_stage.weights_key(list(reversed(polys)), codes[::-1], grid, None) == k  # order-free
    moved = list(polys)
    moved[0] = Polygon([(100.03, 30.02), (100.71, 30.05), (100.66, 30.58), (100.12, 30.4900001)])
    assert grid_stage.weights_key(moved, codes, grid, None) != k
    assert grid_stage.weights_key(polys, codes, _grid(0.05, 100.0, 30.0, 101.4, 31.0), None) != k
    p = np.ones(grid.shape)
    kp = grid_stage.weights_key(polys, codes, grid, p)
    p2 = p.copy()
    p2[3, 3] = 0.5
    assert kp != k and grid_stage.weights_key(polys, codes, grid, p2) != kp


# --------------------------------------------------------------------------------------------
# Real boundaries
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ningxia():
    from pipeline.readers.boundaries import load_cnmaps_counties

    return load_cnmaps_counties(provinces=[64])  # 22 county-level units, ~0.5 s


def _real_check(gdf, res: float):
    grid = grid_stage.make_grid(GridSpec(name="r", resolution_deg=res), gdf.total_bounds)
    w = _weights(gdf.geometry.values, gdf["county_code"].to_numpy(), grid)
    rng = np.random.default_rng(11)
    v = rng.lognormal(12, 1.0, size=(3, len(w.county_codes), 5))  # 3 years x counties x crops
    for y in range(3):
        out = G.allocate(w, v[y])
        np.testing.assert_allclose(out.reshape(5, -1).sum(axis=1), v[y].sum(axis=0), rtol=1e-9, atol=0)
    np.testing.assert_allclose(np.bincount(w.county_idx, weights=w.weight), 1.0, atol=1e-12)
    tot = v[0].sum(axis=1)
    check = grid_stage.zonal_check(w, tot, G.allocate(w, tot))
    return w, check


def test_real_boundaries_mass_and_zonal_shrinks_with_resolution(ningxia):
    _, c1 = _real_check(ningxia, 0.1)
    w2, c2 = _real_check(ningxia, 0.01)
    p1, p2 = grid_stage.province_zonal_check(c1), grid_stage.province_zonal_check(c2)
    m1, m2 = c1["rel_diff"].abs().median(), c2["rel_diff"].abs().median()
    assert m2 < m1 / 3, (m1, m2)  # finer cells move less mass across county borders
    # The province is closed: its total only leaks through its outer border.
    assert abs(p2["rel_diff"].iloc[0]) < abs(p1["rel_diff"].iloc[0]) + 1e-12
    # Shapely reference on a few real counties, cell by cell.
    area = grid_stage.cell_area_m2(w2.grid)
    for k in (0, 5, 11):
        ref = _shapely_coverage(ningxia.geometry.iloc[k], w2.grid)
        sel = w2.county_idx == k
        got = dict(zip(w2.cell[sel].tolist(), w2.weight[sel].tolist()))
        cells = np.array(sorted(ref))
        assert set(got) == set(ref)
        raw = np.array([ref[c] for c in cells]) * area[cells // w2.grid.nlon]
        np.testing.assert_allclose([got[c] for c in cells], raw / raw.sum(), rtol=1e-4, atol=1e-10)


@pytest.mark.slow
def test_all_china_at_0p1deg():
    """Same checks as the Ningxia test, on all 2,875 counties (~25 s)."""
    from pipeline.readers.boundaries import load_cnmaps_counties

    gdf = load_cnmaps_counties()
    _, c = _real_check(gdf, 0.1)
    assert len(c) == len(gdf)


# --------------------------------------------------------------------------------------------
# Dask: threads and a distributed LocalCluster give the same arrays
# --------------------------------------------------------------------------------------------
def _reference_layers(w, v_year, n_crops, seconds):
    """The layers of year_layers built the plain way: full float64 slabs, then the stack."""
    slab = G.allocate(w, v_year)
    area = G.cell_area_m2(w.grid)
    total = slab[:n_crops].sum(axis=0)
    ref = np.concatenate(
        [total[None], slab[:n_crops], (total / (area[:, None] * seconds))[None], slab[n_crops:]]
    ).astype(np.float32)
    ref[:, ~G.grid_domain(w)] = np.float32(io.GRID_FILL_F4)
    return ref, slab.reshape(len(slab), -1).sum(axis=1)


def test_year_layers_equal_the_plain_computation_bit_for_bit(synthetic, monkeypatch):
    """Blockwise allocation + stack = allocate() then total, flux, cast and fill, to the bit; the
    mass sums agree to rounding; a flipped output view and other block sizes give the same."""
    polys, codes, grid = synthetic
    w = _weights(polys, codes, grid)
    rng = np.random.default_rng(3)
    v = rng.lognormal(8, 1, (len(codes), 5))  # 3 crops + 2 extra layers (interval bounds)
    v[2, 0] = 0.0
    domain = G.grid_domain(w)
    ref, ref_sums = _reference_layers(w, v, 3, 3.1536e7)
    area = G.cell_area_m2(grid)
    for block_rows in (64, 3, 1):  # 10 rows: one block, a partial last block, one row a block
        monkeypatch.setattr(G, "BLOCK_ROWS", block_rows)
        stack, sums = G.year_layers(w, v, 3, area, 3.1536e7, domain, io.GRID_FILL_F4)
        assert stack.dtype == np.float32 and stack.shape == (7, *grid.shape)
        assert np.array_equal(stack, ref), block_rows
        np.testing.assert_allclose(sums, ref_sums, rtol=1e-13)
        np.testing.assert_allclose(sums, v.sum(axis=0), rtol=1e-12)  # every unit's mass is on the grid
        north_up = np.full((7, *grid.shape), np.nan, dtype=np.float32)
        G.year_layers(w, v, 3, area, 3.1536e7, domain, io.GRID_FILL_F4, out=north_up[:, ::-1])
        assert np.array_equal(north_up[:, ::-1], ref)
    with pytest.raises(ValueError, match="float32"):
        G.year_layers(w, v, 3, area, 3.1536e7, domain, io.GRID_FILL_F4, out=np.empty((7, *grid.shape)))
    with pytest.raises(ValueError, match="county values"):
        G.year_layers(w, v[:-1], 3, area, 3.1536e7, domain, io.GRID_FILL_F4)


def test_threads_and_local_cluster_identical(synthetic):
    """Same stacks and mass sums, to the bit, on threads (recycled buffers) and on a client."""
    import dask
    from distributed import Client, LocalCluster

    polys, codes, grid = synthetic
    w = _weights(polys, codes, grid)
    v = np.random.default_rng(5).random((5, len(codes), 4)) * 1e4
    years = list(range(2000, 2005))
    pool = grid_stage._StackPool((6, *grid.shape))

    def collect(it, give_back=None):
        out = []
        for i, s, m in it:
            out.append((i, s.copy(), m.copy()))
            if give_back is not None:
                give_back(s)
        return out

    with dask.config.set(scheduler="threads"):
        threaded = collect(G.iter_year_stacks(w, v, 3, years, io.GRID_FILL_F4, 2))
        recycled = collect(G.iter_year_stacks(w, v, 3, years, io.GRID_FILL_F4, 2, buffer=pool.take), pool.give_back)
    assert pool.created == 2  # the second batch of years reused the first batch's buffers
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl,
        Client(cl) as client,
    ):
        dist = collect(G.iter_year_stacks(w, v, 3, years, io.GRID_FILL_F4, 2, client=client))
    assert [i for i, _, _ in threaded] == list(range(5))
    for (i, s, m), (_, s2, m2), (_, s3, m3) in zip(threaded, recycled, dist):
        assert s.shape == (6, *grid.shape)
        assert np.array_equal(s, s2) and np.array_equal(s, s3), i
        assert m.tobytes() == m2.tobytes() == m3.tobytes(), i
        np.testing.assert_allclose(m[:3], v[i, :, :3].sum(axis=0), rtol=1e-12)


def test_peak_memory_does_not_grow_with_years(synthetic):
    import tracemalloc

    import dask

    polys, codes, _ = synthetic
    grid = _grid(0.01, 100.0, 30.0, 101.4, 31.0)  # 100 x 140 cells, 7 layers: 392 kB a stack
    w = _weights(polys, codes, grid)
    w.gather_plan()
    peaks = []
    for n_years in (4, 16):  # from 4 years on, a batch being computed and one being consumed
        v = np.ones((n_years, len(codes), 5))
        tracemalloc.start()
        with dask.config.set(scheduler="threads"):
            for _ in G.iter_year_stacks(w, v, 5, list(range(2000, 2000 + n_years)), io.GRID_FILL_F4, 2):
                pass
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    stack = 7 * grid.ncells * 4
    assert peaks[1] < peaks[0] + stack, peaks  # 4x the years, less than one extra stack


def test_writers_give_back_every_stack_once_and_few_exist(tmp_path, synthetic):
    """Both writers read a stack before it is recycled; stacks alive at once stay bounded."""
    polys, codes, grid = synthetic
    w = _weights(polys, codes, grid)
    crops = ["rice", "wheat"]
    n_years = 12
    v = np.random.default_rng(1).random((n_years, len(codes), 2)) * 1e4
    years = np.arange(2000, 2000 + n_years)
    (tmp_path / "tif").mkdir()
    pool = grid_stage._StackPool((4, *grid.shape))
    released: list[int] = []

    def release(stack):
        released.append(id(stack))
        pool.give_back(stack)

    stacks = ((i, s) for i, s, _ in G.iter_year_stacks(w, v, 2, years, io.GRID_FILL_F4, 2, buffer=pool.take))
    grid_stage._write_grid_files(
        tmp_path / "g.nc",
        tmp_path / "tif",
        stacks,
        grid=grid,
        years=years,
        crops=crops,
        variables=grid_stage.grid_variables(crops, "test", False),
        domain=G.grid_domain(w),
        global_attrs={},
        chunk=16,
        nc_codec=io.NetcdfCodec(),
        tif_codec=io.GeotiffCodec(),
        label="",
        overviews="none",
        release=release,
    )
    assert len(released) == n_years
    assert pool.created <= 2 + 3  # years in flight + one queued and one being written per writer
    import netCDF4
    import rasterio

    with netCDF4.Dataset(tmp_path / "g.nc") as ds:
        ds.set_auto_mask(False)
        for i in (0, n_years - 1):
            ref, _ = _reference_layers(w, v[i], 2, G.year_seconds([int(years[i])])[0])
            assert np.array_equal(ds["n2o_n_wheat"][i], ref[2])  # recycled buffers never overwritten early
            with rasterio.open(tmp_path / "tif" / f"t_{int(years[i])}.tif") as t:
                assert np.array_equal(t.read(1)[::-1], ref[0])


def _world(tmp_path, synthetic, proxy: bool = True, extra_code: int | None = None):
    import geopandas as gpd

    polys, codes, _ = synthetic
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    gpd.GeoDataFrame({"county_code": codes}, geometry=polys, crs="EPSG:4326").to_file(raw / "b.gpkg")
    rows = []
    rng = np.random.default_rng(1)
    for y in (2000, 2001, 2002):
        for c in codes[:-1]:  # the last county has no emissions
            for crop in ("rice", "maize"):
                rows.append(
                    {
                        "county_code": int(c),
                        "province_code": int(c) // 10_000,
                        "year": y,
                        "crop": crop,
                        "area_ha": 1e3,
                        "n_rate_kg_ha": 200.0,
                        "n2o_n_kg_mean": (m := float(rng.random() * 1e4)),
                        "n2o_n_kg_p2_5": m * rng.uniform(0.3, 0.7),
                        "n2o_n_kg_p97_5": m * rng.uniform(1.5, 2.5),
                    }
                )
    if extra_code:
        rows.append({**rows[0], "county_code": extra_code})
    (tmp_path / "proc" / "estimate").mkdir(parents=True, exist_ok=True)
    county = tmp_path / "proc" / "estimate" / "county.parquet"
    pd.DataFrame(rows).to_parquet(county)
    # the estimate stage's manifest vouches for its table (the grid stage refuses it otherwise)
    io.write_json({"outputs": {"county.parquet": io.file_sha256(county)}}, county.parent / "manifest.json")
    px = np.random.default_rng(2).random((24, 34))  # 0.05 deg, 99.9-101.6 E, 29.9-31.1 N (south-up)
    px[:, 21:] = 0.0  # no cropland east of 100.95 E: county 510104 falls back to area weights
    io.write_geotiff(px, (99.9, 29.9, 101.6, 31.1), raw / "proxy.tif")
    d = InputSpec(path="raw/none.csv")
    inputs = Inputs(
        observations=d,
        n_rate=d,
        sown_area=d,
        irrigation=d,
        covariates=d,
        crosswalk=d,
        boundaries=InputSpec(path="raw/b.gpkg"),
        proxy=InputSpec(path="raw/proxy.tif") if proxy else None,
    )
    grid_cfg = GridConfig(
        grids=[
            GridSpec(name="g10", resolution_deg=0.1),
            GridSpec(name="g05", resolution_deg=0.05, west=99.5, east=102.0, south=29.5, north=31.5, intervals=False),
        ],
        chunk_cells=16,
    )
    return Config(inputs=inputs, grid=grid_cfg, processed_dir="proc", root=tmp_path, dask=DaskConfig())


def test_run_writes_cf_netcdf_geotiff_and_is_deterministic(tmp_path, synthetic, monkeypatch):
    import rasterio
    import xarray as xr
    from rio_cogeo.cogeo import cog_validate

    cfg = _world(tmp_path, synthetic)
    out = grid_stage.run(cfg)
    assert out[-1].name == "manifest.json"
    gdir = tmp_path / "proc" / "grid"
    table = pd.read_parquet(tmp_path / "proc" / "estimate" / "county.parquet")
    by_year = table.groupby(["year", "crop"])[["n2o_n_kg_mean", "n2o_n_kg_p2_5", "n2o_n_kg_p97_5"]].sum()
    crops = ["rice", "maize"]
    with xr.open_dataset(gdir / "g10.nc", decode_times=False) as ds:
        assert ds.attrs["Conventions"] == "CF-1.8"
        assert not [k for k, v in ds.variables.items() if v.dtype.kind in "OSU"]  # no string variable
        names = [
            "n2o_n_total",
            *[f"n2o_n_{c}" for c in crops],
            "n2o_n_flux",
            *[f"n2o_n_{c}_{q}" for q in ("p2_5", "p97_5") for c in crops],
        ]
        for name in names:
            v = ds[name]
            assert v.dims == ("time", "lat", "lon") and v.dtype == np.float32, name
            assert v.attrs["grid_mapping"] == "crs" and v.encoding["_FillValue"] == np.float32(io.GRID_FILL_F4)
        assert ds["crs"].attrs["grid_mapping_name"] == "latitude_longitude" and "WGS 84" in ds["crs"].attrs["crs_wkt"]
        assert "year" in ds.coords and ds["year"].values.tolist() == [2000, 2001, 2002]
        total = ds["n2o_n_total"]
        assert total.attrs["units"] == "kg year-1" and total.attrs["cell_measures"] == "area: cell_area"
        assert "N2O-N" in total.attrs["long_name"] and "area: sum" in total.attrs["cell_methods"]
        assert ds["cell_area"].attrs["units"] == "m2" and ds["lat"].attrs["bounds"] == "lat_bnds"
        assert np.all(np.diff(ds["lat"].values) > 0)
        np.testing.assert_allclose(ds["lon"].values[:2], [100.05, 100.15])
        # Outside every polygon: _FillValue (NaN here); inside: finite, zero where nothing is emitted.
        t0 = total.values[0]
        assert np.isnan(t0).any() and np.isfinite(t0).any()
        for j, y in enumerate((2000, 2001, 2002)):
            ref = by_year.loc[y]
            assert np.nansum(total.values[j], dtype=np.float64) == pytest.approx(ref["n2o_n_kg_mean"].sum(), rel=1e-6)
            for c in crops:
                for name, col in (
                    (f"n2o_n_{c}", "n2o_n_kg_mean"),
                    (f"n2o_n_{c}_p2_5", "n2o_n_kg_p2_5"),
                    (f"n2o_n_{c}_p97_5", "n2o_n_kg_p97_5"),
                ):
                    assert np.nansum(ds[name].values[j], dtype=np.float64) == pytest.approx(ref.loc[c, col], rel=1e-6)
        # Flux density x area x seconds of the year = mass per cell (2000 is a leap year).
        mass = ds["n2o_n_flux"].values[0].astype(np.float64) * ds["cell_area"].values * 366 * 86400
        np.testing.assert_allclose(mass, total.values[0], rtol=1e-5)
        assert ds["n2o_n_flux"].attrs["units"] == "kg m-2 s-1"
        stamp = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}:\d{2}:\d{2}")
        assert not any(stamp.search(str(a)) for a in ds.attrs.values())  # no wall-clock time
    mass_csv = pd.read_csv(gdir / "mass_check.csv")
    assert (mass_csv["rel_diff"] <= 1e-9).all() and set(mass_csv["grid"]) == {"g10", "g05"}
    tif_path = gdir / "geotiff" / "g10_2001.tif"
    assert cog_validate(str(tif_path))[0]
    with rasterio.open(tif_path) as tif:
        assert tif.profile["tiled"] and tif.count == 3 and tif.descriptions == ("total", "rice", "maize")
        assert tif.units == ("kg year-1",) * 3 and tif.nodata == pytest.approx(io.GRID_FILL_F4)
        assert tif.crs.to_epsg() == 4326 and tif.transform.e < 0
        bands = tif.read(masked=True).astype(np.float64)
    assert bands[0].sum() == pytest.approx(by_year.loc[2001, "n2o_n_kg_mean"].sum(), rel=1e-6)
    assert bands[2].sum() == pytest.approx(by_year.loc[(2001, "maize"), "n2o_n_kg_mean"], rel=1e-6)
    with xr.open_dataset(gdir / "g05.nc", decode_times=False) as ds:  # a grid without interval layers
        assert "n2o_n_rice" in ds and "n2o_n_rice_p2_5" not in ds
    assert (gdir / "zonal_check_province.csv").exists()
    manifest = io.read_json(gdir / "manifest.json")
    assert manifest["grids"]["g10"]["area_fallback_counties"] == [510104]
    assert manifest["grids"]["g05"]["area_fallback_counties"] == [510104]

    # Second run: weights come from the cache, outputs are byte-identical.
    # (The manifest records the stage's wall time, so it is left out.)
    before = {p.name: io.file_sha256(p) for p in out if p.name != "manifest.json"}
    monkeypatch.setattr(G, "coverage_fractions", lambda *a, **k: pytest.fail("cache not used"))
    out2 = grid_stage.run(cfg)
    assert {p.name: io.file_sha256(p) for p in out2 if p.name != "manifest.json"} == before


def test_run_rejects_emissions_without_polygon(tmp_path, synthetic):
    cfg = _world(tmp_path, synthetic, proxy=False, extra_code=650101)
    with pytest.raises(InputError, match="650101"):
        grid_stage.run(cfg)

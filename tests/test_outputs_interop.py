"""Outputs other tools read without help (issue #13 item 3): the CF checker, GDAL, stock
``ncdump``, rio-cogeo and geopandas on the grid stage's and the estimate stage's files.

The grid outputs come from the grid stage on the synthetic six-county world of test_grid.py.
Checks that need a Debian tool (``ncdump`` of netcdf-bin 4.9, ``gdalinfo`` of gdal-bin 3.6, the
"stock" readers of issue #14 item 6) are skipped when the tool is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from shapely.geometry import box

from pipeline import io
from pipeline.config import EstimateConfig
from pipeline.methods.montecarlo import estimate
from pipeline.stages import estimate as estimate_stage
from pipeline.stages import grid as grid_stage
from tests.test_estimate import _activity, _model
from tests.test_grid import _world, synthetic  # noqa: F401  (fixture)

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, synthetic):  # noqa: F811
    root = tmp_path_factory.mktemp("interop")
    cfg = _world(root, synthetic)
    grid_stage.run(cfg)
    return root / "proc" / "grid"


# --------------------------------------------------------------------------------------------
# NetCDF
# --------------------------------------------------------------------------------------------
def test_netcdf_passes_the_cf_checker(grid_run: Path) -> None:
    """IOOS compliance-checker, CF 1.8, standard-name table shipped in the package (offline)."""
    pytest.importorskip("compliance_checker")
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    for name in ("g10.nc", "g05.nc"):  # with and without interval layers
        report = grid_run / f"{name}.json"
        ok, errors = ComplianceChecker.run_checker(
            str(grid_run / name),
            ["cf:1.8"],
            verbose=0,
            criteria="strict",
            output_filename=str(report),
            output_format="json",
        )
        res = json.loads(report.read_text())["cf:1.8"]
        failed = [
            (r["name"], r["msgs"])
            for pri in ("high_priorities", "medium_priorities", "low_priorities")
            for r in res[pri]
            if r["value"][0] < r["value"][1]
        ]
        assert not errors and ok and not failed, (name, failed)


def test_gdal_reads_the_netcdf_crs_grid_and_fill(grid_run: Path) -> None:
    import rasterio
    import xarray as xr

    path = grid_run / "g10.nc"
    with rasterio.open(f'netcdf:"{path}":n2o_n_total') as ds:
        assert ds.crs is not None and ds.crs.to_epsg() == 4326
        assert ds.transform.a == pytest.approx(0.1) and ds.transform.e == pytest.approx(-0.1)
        assert ds.nodata == pytest.approx(io.GRID_FILL_F4) and ds.count == 3  # one band per year
        band = ds.read(1, masked=True)
    with xr.open_dataset(path, decode_times=False) as x:
        ref = x["n2o_n_total"].values[0][::-1]  # GDAL is north-up
    np.testing.assert_array_equal(band.mask, np.isnan(ref))
    np.testing.assert_allclose(band.filled(np.nan), ref, equal_nan=True)


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdal-bin not installed")
def test_stock_gdal_reads_the_netcdf_crs_and_the_geotiffs(grid_run: Path) -> None:
    info = json.loads(
        subprocess.run(
            ["gdalinfo", "-json", f'NETCDF:"{grid_run / "g10.nc"}":n2o_n_total'],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert "4326" in json.dumps(info["coordinateSystem"])
    tif = grid_run / "geotiff" / "g10_2001.tif"
    r = subprocess.run(["gdalinfo", "-stats", "-json", str(tif)], capture_output=True, text=True, check=True)
    bands = json.loads(r.stdout)["bands"]
    assert [b["description"] for b in bands] == ["total", "rice", "maize"]
    assert all(b.get("unit") == "kg year-1" for b in bands) and "ERROR" not in r.stderr


@pytest.mark.skipif(shutil.which("ncdump") is None, reason="netcdf-bin not installed")
def test_stock_ncdump_reads_the_default_codec(grid_run: Path) -> None:
    import xarray as xr

    out = subprocess.run(
        ["ncdump", "-v", "n2o_n_total", str(grid_run / "g10.nc")], capture_output=True, text=True, check=True
    ).stdout
    data = out.split("n2o_n_total =", 1)[1].split(";")[0].replace("\n", " ")
    values = [v.strip() for v in data.split(",")]
    with xr.open_dataset(grid_run / "g10.nc", decode_times=False) as x:
        ref = x["n2o_n_total"].values.ravel()
    assert len(values) == ref.size
    assert sum(v == "_" for v in values) == int(np.isnan(ref).sum())  # _FillValue outside the domain
    got = np.array([float(v) if v != "_" else np.nan for v in values])
    np.testing.assert_allclose(got, ref, rtol=1e-5, equal_nan=True)


def _stack(nlat: int = 40, nlon: int = 70, n: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    domain = np.zeros((nlat, nlon), bool)
    domain[5:30, 3:41] = True  # chunks of 16 x 16 entirely outside exist (columns 48-69)
    stack = rng.lognormal(0, 1, (n, nlat, nlon)).astype(np.float32)
    stack[:, ~domain] = io.GRID_FILL_F4
    return stack, domain


@pytest.mark.parametrize("engine", ["zlib-ng", "zlib"])
def test_direct_chunk_writer_round_trips_and_skips_fill_chunks(tmp_path: Path, engine: str) -> None:
    """Shuffle + DEFLATE done by us, stored with direct chunk writes: netCDF-C reads the same
    values; chunks without a domain cell are not stored and read back as _FillValue."""
    import h5py
    import netCDF4

    stack, domain = _stack()
    lat = 30 + 0.05 + 0.1 * np.arange(40)
    lon = 100 + 0.05 + 0.1 * np.arange(70)
    edges = (30 + 0.1 * np.arange(41), 100 + 0.1 * np.arange(71))
    variables = [io.GridVariable(f"v{j}", {"units": "kg year-1"}) for j in range(3)]
    years = [2000, 2001]
    path = io.write_netcdf_grid(
        tmp_path / "d.nc",
        iter([(0, stack), (1, stack[::-1].copy())]),
        lat=lat,
        lon=lon,
        lat_edges=edges[0],
        lon_edges=edges[1],
        cell_area_m2=np.ones(40),
        years=years,
        variables=variables,
        global_attrs={"Conventions": "CF-1.8"},
        domain=domain,
        chunk=16,
        codec=io.NetcdfCodec("zlib", 1, True, engine, 2),
    )
    with netCDF4.Dataset(path) as ds:
        for j in range(3):
            v = ds[f"v{j}"]
            assert v.filters()["zlib"] and v.filters()["shuffle"]
            got = v[:].filled(np.nan)
            for i, s in enumerate((stack, stack[::-1])):
                np.testing.assert_array_equal(np.isnan(got[i]), ~domain)
                np.testing.assert_array_equal(got[i][domain], s[j][domain])
    with h5py.File(path) as f:
        n_stored = f["v0"].id.get_num_chunks()
    n_total = 2 * 3 * 5  # years x chunk rows x chunk columns (40 x 70 in 16 x 16)
    assert n_stored == 2 * 2 * 3 < n_total  # only chunks holding domain cells (rows 0-31, cols 0-47)


@pytest.mark.parametrize("engine", ["zlib-ng", "zlib"])
def test_deflate_engine_gives_the_same_bytes_under_threads(engine: str) -> None:
    """Every chunk compressed on 4 threads, 6 times over, is the stream one thread writes. ISA-L,
    the engine before, failed this on real 0.01 deg chunks (about 1 in 1,000 recompressions
    came out different), so two runs wrote NetCDF files that differed in a few bytes."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    field = rng.lognormal(0, 2, (512, 512)).astype(np.float32)
    field[rng.random(field.shape) < 0.4] = 0.0  # runs of zeros and repeats, as in the grids
    field[:, :100] = io.GRID_FILL_F4
    chunks = [io.shuffle_bytes(field[r : r + 64, c : c + 64]) for r in range(0, 512, 64) for c in range(0, 512, 64)]
    deflate = io._deflate_function(io.NetcdfCodec("zlib", 1, True, engine, 4))
    serial = [deflate(c) for c in chunks]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(6):
            assert list(pool.map(deflate, chunks)) == serial


def test_zstd_codec_is_a_setting(tmp_path: Path) -> None:
    import netCDF4

    if not getattr(netCDF4, "__has_zstandard_support__", False):
        pytest.skip("netCDF4 built without zstd")
    stack, domain = _stack(n=1)
    path = io.write_netcdf_grid(
        tmp_path / "z.nc",
        iter([(0, stack)]),
        lat=np.arange(40.0),
        lon=np.arange(70.0),
        lat_edges=np.arange(41.0) - 0.5,
        lon_edges=np.arange(71.0) - 0.5,
        cell_area_m2=np.ones(40),
        years=[2000],
        variables=[io.GridVariable("v", {"units": "kg year-1"})],
        global_attrs={},
        domain=domain,
        chunk=16,
        codec=io.NetcdfCodec("zstd", 1, True),
    )
    with netCDF4.Dataset(path) as ds:
        assert ds["v"].filters()["zstd"]
        np.testing.assert_array_equal(ds["v"][0].filled(np.nan)[domain], stack[0][domain])


def test_shuffle_bytes_is_the_hdf5_shuffle() -> None:
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    b = a.view(np.uint8).reshape(3, 4)
    assert io.shuffle_bytes(a) == bytes(b[:, 0]) + bytes(b[:, 1]) + bytes(b[:, 2]) + bytes(b[:, 3])


# --------------------------------------------------------------------------------------------
# GeoTIFF
# --------------------------------------------------------------------------------------------
def test_rio_cogeo_validates_every_geotiff(grid_run: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    tifs = sorted((grid_run / "geotiff").glob("*.tif"))
    assert len(tifs) == 6  # 2 grids x 3 years
    for t in tifs:  # the function behind `rio cogeo validate`
        valid, errors, _ = cog_validate(str(t))
        assert valid and not errors, (t.name, errors)
    rio = BIN / "rio"
    if rio.exists():  # and the command itself once (it takes seconds to start)
        r = subprocess.run([str(rio), "cogeo", "validate", str(tifs[0])], capture_output=True, text=True)
        assert r.returncode == 0 and "is a valid cloud optimized GeoTIFF" in r.stdout, (r.stdout, r.stderr)


@pytest.mark.parametrize("overviews", ["average", "none"])
def test_cog_overviews_bands_and_nodata(tmp_path: Path, overviews: str) -> None:
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    stack, domain = _stack(nlat=600, nlon=700, n=2)
    path = io.write_cog(
        stack,
        (100.0, 30.0, 107.0, 36.0),
        tmp_path / "c.tif",
        band_names=["total", "rice"],
        band_units="kg year-1",
        codec=io.GeotiffCodec("deflate", 1),
        overviews=overviews,
    )
    valid, errors, warnings = cog_validate(str(path))
    assert valid and not errors
    with rasterio.open(path) as ds:
        assert ds.descriptions == ("total", "rice") and ds.units == ("kg year-1", "kg year-1")
        assert ds.overviews(1) == ([2, 4] if overviews == "average" else [])
        np.testing.assert_array_equal(ds.read(2, masked=True).mask, ~domain[::-1])
        np.testing.assert_array_equal(ds.read(2)[domain[::-1]], stack[1][::-1][domain[::-1]])


# --------------------------------------------------------------------------------------------
# Estimate tables: split totals, metadata, province draws, unit results joined to polygons
# --------------------------------------------------------------------------------------------
def test_split_total_leaves_no_mixed_table() -> None:
    t = pd.DataFrame({"year": [2000] * 3, "crop": ["all", "rice", "wheat"], "n2o_n_kg_mean": [3.0, 1.0, 2.0]})
    by_crop, total = estimate_stage.split_total(t)
    assert "all" not in set(by_crop["crop"]) and "crop" not in total.columns
    assert by_crop["n2o_n_kg_mean"].sum() == total["n2o_n_kg_mean"].sum() == 3.0


def test_parquet_schema_metadata_and_column_units(tmp_path: Path) -> None:
    df = pd.DataFrame({"year": [2000], "n2o_n_kg_mean": [1.5]})
    p = io.write_parquet(
        df,
        tmp_path / "t.parquet",
        {"cropn2o_scope": "direct", "cropn2o_label": "SYNTHETIC"},
        column_units={"n2o_n_kg_mean": "kg year-1"},
    )
    schema = pq.read_schema(p)
    assert schema.metadata[b"cropn2o_scope"] == b"direct" and schema.metadata[b"cropn2o_label"] == b"SYNTHETIC"
    assert schema.field("n2o_n_kg_mean").metadata[b"units"] == b"kg year-1"
    pd.testing.assert_frame_equal(pd.read_parquet(p), df)
    p2 = io.write_parquet(
        df,
        tmp_path / "t2.parquet",
        {"cropn2o_scope": "direct", "cropn2o_label": "SYNTHETIC"},
        column_units={"n2o_n_kg_mean": "kg year-1"},
    )
    assert io.file_sha256(p) == io.file_sha256(p2)


def test_province_draws_give_any_region_its_interval() -> None:
    act = _activity(12, years=range(2000, 2002))
    out = estimate(act, _model(), EstimateConfig(draws=300, seed=4))
    pd_ = out["province_draws"]
    assert set(pd_.columns) == {"draw", "year", "province_code", "n2o_n_kg"}
    # all provinces together are the national total, draw by draw
    nat = out["national_draws"].query("crop == 'all'").set_index(["draw", "year"])["n2o_n_kg"]
    summed = pd_.groupby(["draw", "year"])["n2o_n_kg"].sum()
    np.testing.assert_allclose(summed.loc[nat.index].to_numpy(), nat.to_numpy(), rtol=1e-12)
    # one province alone reproduces its own interval of the province table
    prov = out["province"].query("crop == 'all'")
    code = int(prov["province_code"].iloc[0])
    one = pd_[(pd_["province_code"] == code) & (pd_["year"] == 2000)]["n2o_n_kg"]
    row = prov[(prov["province_code"] == code) & (prov["year"] == 2000)].iloc[0]
    assert np.quantile(one, 0.025) == pytest.approx(row["n2o_n_kg_p2_5"], rel=1e-9)
    assert np.quantile(one, 0.975) == pytest.approx(row["n2o_n_kg_p97_5"], rel=1e-9)


def test_unit_results_geopackage_and_geoparquet_totals(tmp_path: Path) -> None:
    import geopandas as gpd
    import pyogrio

    codes = [410101, 410102, 430101]
    bounds = gpd.GeoDataFrame(
        {"county_code": codes, "name": ["A", "B", "C"], "province_code": [41, 41, 43]},
        geometry=[box(113, 34, 114, 35), box(114, 34, 116, 35), box(112, 28, 113, 29)],
        crs="EPSG:4326",
    )
    rng = np.random.default_rng(7)
    rows = [
        {
            "county_code": c,
            "year": y,
            "crop": crop,
            "n2o_n_kg_mean": (m := float(rng.uniform(1, 100))),
            "n2o_n_kg_p2_5": 0.5 * m,
            "n2o_n_kg_p97_5": 2.0 * m,
        }
        for c in codes[:2]
        for y in (2000, 2001)
        for crop in ("rice", "wheat")
    ]  # C emits nothing
    county = pd.DataFrame(rows)
    geo = estimate_stage.unit_results_wide(county, bounds)
    meta = {"cropn2o_units": "kg year-1", "cropn2o_scope": "direct"}
    g = io.write_gpkg(geo, tmp_path / "county.gpkg", layer="county_results", layer_metadata=meta)
    gp = io.write_geoparquet(geo, tmp_path / "county_geo.parquet", meta)
    for back in (gpd.read_file(g, layer="county_results"), gpd.read_parquet(gp)):
        assert len(back) == 3 and back.crs.to_epsg() == 4326 and list(back["name"]) == ["A", "B", "C"]
        for y in (2000, 2001):
            assert back[f"n2o_n_kg_mean_{y}"].sum() == pytest.approx(
                county.query("year == @y")["n2o_n_kg_mean"].sum(), rel=1e-12
            )
            for crop in ("rice", "wheat"):
                sub = county.query("year == @y and crop == @crop")
                for st in ("mean", "p2_5", "p97_5"):
                    assert back[f"n2o_n_kg_{st}_{crop}_{y}"].sum() == pytest.approx(
                        sub[f"n2o_n_kg_{st}"].sum(), rel=1e-12
                    )
        assert (back.loc[back["county_code"] == 430101, "n2o_n_kg_mean_2000"] == 0).all()
    assert pyogrio.read_info(g, layer="county_results")["layer_metadata"]["cropn2o_units"] == "kg year-1"
    assert pq.read_schema(gp).metadata[b"cropn2o_scope"] == b"direct" and b"geo" in pq.read_schema(gp).metadata

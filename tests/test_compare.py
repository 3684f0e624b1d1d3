"""Compare stage: scope matching, units, the bridge, spatial metrics, aggregation through the grid
weights, breakpoints of the real national series (against R), the demo end to end, fetch-edgar."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import netCDF4
import numpy as np
import pandas as pd
import pytest
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource
from shapely.geometry import Polygon

from pipeline.cli import main
from pipeline.config import GridConfig, GridSpec, IngestConfig
from pipeline.errors import InputError, ModelError
from pipeline.methods import compare as cmp
from pipeline.methods.gridding import Grid, allocation_weights, coverage_fractions
from pipeline.readers.edgar import national_series, read_edgar_national
from pipeline.readers.faostat import read_synthetic_fertilizer_n2o
from pipeline.stages import compare as compare_stage
from pipeline.stages import estimate, fit, grid, ingest
from tests.test_edgar_fetch import serve_years, server  # noqa: F401  (server is a fixture)

FAST = SimpleNamespace(max_breaks=2, criterion="bic", alpha=0.05, min_segment_years=4, n_sim=199, seed=0)


# ---------------------------------------------------------------------------------------------
# Units and scope
# ---------------------------------------------------------------------------------------------
def test_reference_units_convert_n2o_mass_to_n2o_n() -> None:
    # 44 t N2O hold 28 t N2O-N = 28,000 kg; 1 Gg = 1 kt = 1e6 kg
    assert cmp.reference_to_n2o_n_kg([44.0], "t N2O")[0] == pytest.approx(28_000.0, rel=1e-15)
    assert cmp.reference_to_n2o_n_kg([44.0], "Gg N2O")[0] == pytest.approx(28e6, rel=1e-15)
    assert cmp.reference_to_n2o_n_kg([44.0], "kt N2O")[0] == pytest.approx(28e6, rel=1e-15)
    assert cmp.reference_to_n2o_n_kg([5.0], "kg N2O-N")[0] == 5.0
    with pytest.raises(ValueError, match="unknown reference unit"):
        cmp.reference_to_n2o_n_kg([1.0], "kg N")


def test_scope_shares_and_notes() -> None:
    inv = cmp.inventory_scope(False, False)
    assert "background separate" in inv and "indirect not included" in inv
    fao = cmp.reference_scope("faostat", inv, None, indirect_included=False)
    # IPCC 2006: EF1 0.01, FracGASF 0.10 x EF4 0.01, FracLEACH 0.30 x EF5 0.0075
    assert fao.reference_share == pytest.approx(0.01 / (0.01 + 0.001 + 0.00225), rel=1e-12)
    assert cmp.reference_scope("faostat", inv, None, indirect_included=True).reference_share == 1.0
    whole = cmp.reference_scope("edgar_grid", inv, None, False)
    assert whole.reference_share == 1.0 and "manure" in whole.share_note
    assert cmp.reference_scope("edgar_national", inv, 0.6, False).reference_share == 0.6
    with pytest.raises(ValueError):
        cmp.reference_scope("edgar_grid", inv, 1.5, False)
    with pytest.raises(ValueError):
        cmp.reference_scope("ceds", inv, None, False)


def test_compare_totals_difference_ratio_and_scope_columns() -> None:
    inv = pd.DataFrame({"year": [2000, 2001, 2002], "n2o_n_kg": [10.0, 12.0, 14.0]})
    ref = pd.DataFrame({"year": [2001, 2002, 2003], "n2o_n_kg": [20.0, 40.0, 50.0]})
    scope = cmp.reference_scope("edgar_grid", "inv", 0.5, False)
    out = cmp.compare_totals(inv, ref, scope, "edgar_grid", reference_area="test")
    assert out["year"].tolist() == [2001, 2002]  # only common years
    assert out["reference_n2o_n_kg"].tolist() == [10.0, 20.0]
    assert out["difference_n2o_n_kg"].tolist() == [2.0, -6.0]
    assert out["ratio"].tolist() == [1.2, 0.7]
    assert out["difference_n2o_kg"].iloc[0] == pytest.approx(2.0 * 44 / 28)
    assert set(out["scope_reference"]) == {cmp.REFERENCE_SCOPES["edgar_grid"]}
    assert (out["reference_scope_share"] == 0.5).all() and (out["inventory"] == "fitted").all()


# ---------------------------------------------------------------------------------------------
# Bridge
# ---------------------------------------------------------------------------------------------
def test_bridge_terms_sum_to_total_every_year() -> None:
    rng = np.random.default_rng(3)
    years = np.arange(1990, 2015)
    f = pd.Series(rng.uniform(1e8, 4e8, years.size), index=years)
    t = pd.Series(rng.uniform(1e8, 4e8, years.size), index=years)
    e = pd.Series(rng.uniform(1e8, 4e8, years.size), index=years)
    e.iloc[5] = f.iloc[5] * (1 + 1e-12)  # near-zero total difference
    b = cmp.bridge(f, t, e)
    assert b["year"].tolist() == years.tolist()
    total = f.to_numpy() - e.to_numpy()
    parts = b["activity_data_n2o_n_kg"].to_numpy() + b["emission_model_n2o_n_kg"].to_numpy()
    assert np.all(np.abs(parts - total) <= 1e-9 * np.maximum(np.abs(f.to_numpy()), np.abs(total)))
    assert (b["closure_rel"] <= 1e-9).all()
    np.testing.assert_array_equal(b["activity_data_n2o_n_kg"], t.to_numpy() - e.to_numpy())
    np.testing.assert_array_equal(b["emission_model_n2o_n_kg"], f.to_numpy() - t.to_numpy())
    # years missing in one series are dropped, not filled
    assert cmp.bridge(f, t, e.drop(2000))["year"].tolist() == [y for y in years if y != 2000]


# ---------------------------------------------------------------------------------------------
# Spatial agreement and grid placement
# ---------------------------------------------------------------------------------------------
def test_spatial_metrics_on_constructed_fields() -> None:
    rng = np.random.default_rng(1)
    inv = rng.gamma(2.0, 3.0, size=(20, 30))
    mask = np.ones(inv.shape, bool)
    mask[:2] = False
    m = cmp.spatial_agreement(inv, 2.0 * inv + 3.0, mask)  # exact linear, monotone
    assert m["pearson_r"] == pytest.approx(1.0, abs=1e-12) and m["spearman_rho"] == pytest.approx(1.0, abs=1e-12)
    d = inv[mask] - (2.0 * inv[mask] + 3.0)
    assert m["bias_kg_per_cell"] == pytest.approx(d.sum() / mask.sum(), rel=1e-12)
    assert m["rmse_kg_per_cell"] == pytest.approx(math.sqrt((d**2).sum() / mask.sum()), rel=1e-12)
    assert m["n_cells"] == 18 * 30
    neg = cmp.spatial_agreement(inv, -inv, mask)
    assert neg["pearson_r"] == pytest.approx(-1.0, abs=1e-12) and neg["spearman_rho"] == pytest.approx(-1.0, abs=1e-12)
    # one known 2x2 case: r of (1,2,3,4) and (1,3,2,4) is 4/5 (centred cross-products 4, sums of squares 5)
    two = cmp.spatial_agreement(
        np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 3.0], [2.0, 4.0]]), np.ones((2, 2), bool)
    )
    assert two["pearson_r"] == pytest.approx(0.8) and two["spearman_rho"] == pytest.approx(0.8)
    assert math.isnan(cmp.spatial_agreement(np.ones((2, 2)), inv[:2, :2], np.ones((2, 2), bool))["pearson_r"])


def test_place_on_grid_offsets_and_refusals() -> None:
    grid = Grid("g", 0.1, 1100, 300, 20, 10)  # 110-112 E, 30-31 N
    lat = np.round(30.5 + 0.1 * np.arange(10) + 0.05, 10)  # 30.55 ... 31.45: half outside
    lon = np.round(109.5 + 0.1 * np.arange(10) + 0.05, 10)
    vals = np.arange(100.0).reshape(1, 10, 10)
    field, covered = cmp.place_on_grid(lat, lon, vals, grid)
    # reference cell (row 0 = 30.55 N, col 5 = 110.05 E) lands at grid row 5, col 0
    assert field[0, 5, 0] == vals[0, 0, 5]
    assert covered.sum() == 5 * 5 and field.sum() == vals[0, :5, 5:].sum()
    with pytest.raises(ValueError, match="differs"):
        cmp.place_on_grid(lat[::2], lon, vals[:, ::2], grid)
    with pytest.raises(ValueError, match="lattice"):
        cmp.place_on_grid(lat + 0.03, lon, vals, grid)


def _tiling_weights() -> tuple:
    """Three polygons tiling 110-111 E x 30-31 N (diagonal internal edges) on a 0.1° grid with margin."""
    grid = Grid("g", 0.1, 1098, 298, 14, 14)
    a = Polygon([(110, 30), (111, 30), (110, 31)])
    b = Polygon([(111, 30), (111, 31), (110.5, 30.5)])
    c = Polygon([(110, 31), (110.5, 30.5), (111, 31)])
    geoms = [a, b, c]
    codes = np.array([410101, 410102, 430101])
    cov = coverage_fractions(geoms, codes, grid)
    w = allocation_weights(cov, grid, None)
    return grid, geoms, codes, w


def test_aggregation_through_weights_equals_exactextract_and_direct_sums() -> None:
    grid, geoms, codes, w = _tiling_weights()
    rng = np.random.default_rng(5)
    layers = rng.gamma(2.0, 1.0, size=(3, grid.nlat, grid.nlon))  # rows south to north
    ours = cmp.aggregate_layers(w, layers)  # (counties, layers)
    gdf = gpd.GeoDataFrame({"code": codes}, geometry=geoms, crs="EPSG:4326")
    wb, sb, eb, nb = grid.bounds
    for j in range(3):
        src = NumPyRasterSource(layers[j][::-1].copy(), xmin=wb, ymin=sb, xmax=eb, ymax=nb)
        ee = exact_extract(src, gdf, "sum", include_cols=["code"], output="pandas")
        np.testing.assert_allclose(ours[:, j], ee["sum"].to_numpy(), rtol=1e-9)
    # direct sum over cells with the coverage fractions (polygons tile the square: shares = fractions)
    direct = np.zeros((len(codes), 3))
    for ci, k, f in zip(w.county_idx, w.cell, w.coverage):
        direct[ci] += f * layers[:, k // grid.nlon, k % grid.nlon]
    np.testing.assert_allclose(ours, direct, rtol=1e-12)
    # mass inside the square is conserved
    inside = layers[:, 2:12, 2:12].sum(axis=(1, 2))
    np.testing.assert_allclose(ours.sum(axis=0), inside, rtol=1e-12)
    np.testing.assert_allclose((cmp.zonal_sums_sparse(w) @ layers.reshape(3, -1).T), ours, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Trends
# ---------------------------------------------------------------------------------------------
def test_trend_statement_slowdown_vs_straight_line() -> None:
    years = np.arange(1990, 2015, dtype=float)
    rng = np.random.default_rng(11)
    kinked = 100 + 11.2 * (years - 1990) - 8.4 * np.maximum(years - 2003, 0) + rng.normal(0, 1.0, years.size)
    straight = 100 + 9.0 * (years - 1990) + rng.normal(0, 1.0, years.size)
    table, results = cmp.trend_table(
        {"fitted": (years, kinked), "edgar_grid": (years, straight), "short": (years[:5], kinked[:5])},
        FAST,
        "Gg N2O-N/yr",
        {},
    )
    r = table.set_index("series")
    assert bool(r.loc["fitted", "slowdown"]) and not bool(r.loc["edgar_grid", "slowdown"])
    assert abs(r.loc["fitted", "one_kink_psi"] - 2003) < 1.0
    assert r.loc["fitted", "one_kink_slope_before"] == pytest.approx(11.2, abs=0.5)
    assert r.loc["fitted", "one_kink_slope_after"] == pytest.approx(2.8, abs=0.5)
    assert "too short" in r.loc["short", "error"]
    st = cmp.missed_slowdown(results, "fitted", "edgar_grid")
    assert st["reference_misses_slowdown"] is True and "misses the slowdown" in st["statement"]
    assert cmp.missed_slowdown(results, "fitted", "short")["reference_misses_slowdown"] is None


# Independent reference: R 4.2.2, segmented 1.6.2 (benchmarks/r/segmented_reference_output.txt,
# docs/validation_breakpoints.md).
R_REF = {
    "faostat": {
        "psi": 2000.99972,
        "rss": 15159.3218,
        "slope1": 9.4032228637241708,
        "slope2": 12.07846419034,
        "davies_p": 0.97387143830396672,
        "n": 25,
    },
    "edgar": {
        "psi": 2001.0000089960447,
        "rss": 11093.317854916912,
        "slope1": 9.7326004393444805,
        "slope2": 17.6514261460634,
        "davies_p": 0.12482805674807454,
        "n": 23,
    },
}


def _real_series(shared_data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    f = read_synthetic_fertilizer_n2o(
        shared_data / "faostat_china_extracts" / "ddf_unfao_faostat_gt_synthetic_fertilizers_emissions_n2o_china.csv"
    )
    f = f[f["year"].between(1990, 2014)]
    t = read_edgar_national(shared_data / "edgar_v432" / "v432_N2O_1970_2012.xls")
    e = national_series(t, "CHN", ["4D1"])
    e = e[e["year"].between(1990, 2012)]
    assert e.loc[e["year"] == 1990, "n2o_gg"].iloc[0] == pytest.approx(463.4731, abs=5e-5)
    return {
        "faostat": (f["year"].to_numpy(float), f["n2o_kt"].to_numpy()),
        "edgar": (e["year"].to_numpy(float), e["n2o_gg"].to_numpy()),
    }


def test_real_national_series_breakpoints_match_r(shared_data: Path) -> None:
    series = _real_series(shared_data)
    table, results = cmp.trend_table(series, FAST, "kt N2O/yr (native units)", {})
    for name, ref in R_REF.items():
        o = results[name]["one_kink"]
        assert len(series[name][0]) == ref["n"]
        assert o["psi"] == pytest.approx(ref["psi"], abs=1e-3)
        assert o["rss"] == pytest.approx(ref["rss"], rel=1e-5)
        assert o["slope_before"] == pytest.approx(ref["slope1"], abs=2e-3)
        assert o["slope_after"] == pytest.approx(ref["slope2"], abs=2e-3)
        assert o["davies_p"] == pytest.approx(ref["davies_p"], rel=1e-6)
        # neither national series has a significant slope change at 5 %: no slowdown to report
        assert results[name]["summary"]["significant"] is False
        assert results[name]["summary"]["slowdown"] is False
    assert set(table["series"]) == {"faostat", "edgar"}


# ---------------------------------------------------------------------------------------------
# Demo end to end
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compared(demo_slice, tmp_path_factory):
    processed = tmp_path_factory.mktemp("compare_processed")
    cfg = demo_slice.model_copy(
        update={
            "processed_dir": str(processed),
            "ingest": IngestConfig(first_year=1990, last_year=1995),
            "grid": GridConfig(grids=[GridSpec(name="0p1deg", resolution_deg=0.1)], geotiff=False),
            "estimate": demo_slice.estimate.model_copy(update={"draws": 50}),
            # one model family: the compare stage only needs some fitted model (and it is the fast one)
            "fit": demo_slice.fit.model_copy(update={"model": "single_family"})
            if "model" in type(demo_slice.fit).model_fields
            else demo_slice.fit,
        }
    )
    for mod in (ingest, fit, estimate, grid):
        mod.run(cfg)
    return cfg, compare_stage.run(cfg)


def test_demo_fixture_is_edgar_v8_layout_and_tier1_total(demo_slice) -> None:
    folder = demo_slice.path(demo_slice.inputs.edgar.path)
    zips = sorted(folder.glob("*.zip"))
    assert [z.name for z in zips] == [f"v8.0_FT2022_GHG_N2O_{y}_AGS_emi_nc.zip" for y in range(1990, 1996)]
    with zipfile.ZipFile(zips[0]) as z:
        nc_bytes = z.read("v8.0_FT2022_GHG_N2O_1990_AGS_emi.nc")
    with netCDF4.Dataset("mem.nc", memory=nc_bytes) as ds:
        v = ds["emissions"]
        assert v.units == "Tonnes" and "SYNTHETIC" in ds.title and "SYNTHETIC" in v.comment
        lat, lon = ds["lat"][:], ds["lon"][:]
        assert np.all(np.diff(lat) > 0) and lon[0] == pytest.approx(73.05) and lat[0] == pytest.approx(18.05)
        total_t = float(np.asarray(v[:], dtype=np.float64).sum())
    # national N use 1990 (config calibration, t N) x EF1 0.01 x 1.5 -> t N2O-N -> x 44/28
    n_t = demo_slice.demo.calibration.n_fertilizer_t[1990]
    assert total_t == pytest.approx(n_t * 0.01 * 1.5 * 44 / 28, rel=1e-5)
    manifest = json.loads((demo_slice.path(demo_slice.inputs.boundaries.path).parent / "MANIFEST.json").read_text())
    assert "edgar/v8.0_FT2022_GHG_N2O_1990_AGS_emi_nc.zip" in manifest["files"]


def test_demo_compare_stage_end_to_end(compared) -> None:
    cfg, written = compared
    out = cfg.processed / "compare"
    names = {p.name for p in written}
    for f in (
        "national.csv",
        "province.csv",
        "county.parquet",
        "bridge.csv",
        "trends.csv",
        "spatial.csv",
        "difference_map.nc",
        "summary.json",
        "totals.png",
        "totals.svg",
        "bridge.svg",
        "difference_map.png",
        "manifest.json",
    ):
        assert f in names, f
    national = pd.read_csv(out / "national.csv")
    assert {"edgar_grid", "faostat"} <= set(national["reference"])
    assert national["scope_inventory"].notna().all() and national["scope_reference"].notna().all()
    br = pd.read_csv(out / "bridge.csv")
    assert len(br) == 6 and (br["closure_rel"] <= 1e-9).all()
    np.testing.assert_allclose(
        br["activity_data_n2o_n_kg"] + br["emission_model_n2o_n_kg"], br["total_difference_n2o_n_kg"], rtol=1e-9
    )
    # the bridge's EDGAR equals the scope-matched EDGAR of the national table, its fitted the estimate
    nat = national[(national["reference"] == "edgar_grid") & (national["inventory"] == "fitted")].set_index("year")
    np.testing.assert_allclose(br.set_index("year")["edgar_n2o_n_kg"], nat["reference_n2o_n_kg"], rtol=1e-12)
    est = pd.read_parquet(cfg.processed / "estimate" / "national_total.parquet").set_index("year")["n2o_n_kg_mean"]
    np.testing.assert_allclose(br.set_index("year")["fitted_n2o_n_kg"], est.loc[br["year"]], rtol=1e-12)
    # province and county tables add up to the national EDGAR total over the inventory's counties
    prov = pd.read_csv(out / "province.csv")
    county = pd.read_parquet(out / "county.parquet")
    for y in (1990, 1995):
        ps = prov.loc[prov["year"] == y, "reference_sector_n2o_n_kg"].sum()
        cs = county.loc[county["year"] == y, "reference_sector_n2o_n_kg"].sum()
        assert ps == pytest.approx(nat.loc[y, "reference_sector_n2o_n_kg"], rel=1e-9)
        assert cs == pytest.approx(ps, rel=1e-9)
    assert set(prov["province_code"]) == {41, 43}
    sp = pd.read_csv(out / "spatial.csv")
    assert len(sp) == 6 and sp["pearson_r"].between(-1, 1).all() and (sp["n_cells"] > 1000).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bridge_max_closure_rel"] <= 1e-9
    assert any("too short" in v.get("error", "") for v in summary["trends"].values())  # 6 years only
    svg = (out / "totals.svg").read_text()
    assert "SYNTHETIC" in svg and "Scope" in svg
    assert "SYNTHETIC" in (out / "difference_map.svg").read_text()


def test_compare_refuses_wrong_sector_in_one_line(compared) -> None:
    cfg, _ = compared
    bad = cfg.model_copy(update={"compare": cfg.compare.model_copy(update={"edgar_sector": "N2O"})})
    with pytest.raises(InputError) as e:
        compare_stage.run(bad)
    assert "compare.edgar_sector" in str(e.value) and "\n" not in str(e.value) and "Fix:" in str(e.value)
    assert not (cfg.processed / "compare" / "manifest.json").exists()


def test_bridge_closure_error_names_the_year() -> None:
    f = pd.Series([1.0, float("nan")], index=[2000, 2001])
    with pytest.raises(ModelError, match="2001"):
        cmp.bridge(f, pd.Series([1.0, 1.0], index=[2000, 2001]), pd.Series([0.5, 0.5], index=[2000, 2001]))


# ---------------------------------------------------------------------------------------------
# fetch-edgar through the CLI, against a local server
# ---------------------------------------------------------------------------------------------
def test_fetch_edgar_cli_downloads_and_unpacks(server, tmp_path, capsys) -> None:  # noqa: F811
    serve_years(server, tmp_path, [2004, 2005])
    dest = tmp_path / "edgar"
    rc = main(
        [
            "fetch-edgar",
            "--release",
            "v8.0",
            "--sector",
            "AGS",
            "--first-year",
            "2004",
            "--last-year",
            "2005",
            "--dest",
            str(dest),
            "--base-url",
            server.base,
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == [
        "v8.0_FT2022_GHG_N2O_2004_AGS_emi.nc",
        "v8.0_FT2022_GHG_N2O_2005_AGS_emi.nc",
    ]
    assert (dest / "v8.0_FT2022_GHG_N2O_2005_AGS_emi_nc.zip").exists()
    rc = main(
        ["fetch-edgar", "--first-year", "1960", "--last-year", "1961", "--dest", str(dest), "--base-url", server.base]
    )
    err = capsys.readouterr().err
    assert rc != 0 and "covers 1970-2022" in err and err.count("\n") == 1

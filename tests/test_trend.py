"""Tests of pipeline.trend on a small synthetic world built here (not by the demo generator)."""

from __future__ import annotations

import hashlib
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from pipeline.cli import main as cli_main
from pipeline.config import Config, Inputs, InputSpec, TrendConfig
from pipeline.errors import InputError
from pipeline.methods import attribution as trend
from pipeline.stages import trend as trend_stage
from tests.conftest import reproducible_bytes

YEARS = np.arange(1990, 2015)
BREAK = 2003
COUNTIES = [110101, 110102, 120101, 120102, 130101, 130102]
CROPS = ["rice", "wheat"]


def _intensity(n, water):
    return np.exp(-1.0 + 0.002 * n + 0.001 * water)


def _activity() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    rows = []
    for c in COUNTIES:
        # the 11 province keeps growing after the break: growth does not slow there
        slows = c // 10_000 != 11
        for crop in CROPS:
            a_base, n_base = rng.uniform(800, 1500), rng.uniform(120, 180)
            for y in YEARS:
                n = n_base + 6 * min(y, BREAK) - 6 * 1990 + (-4 if slows else 6) * max(y - BREAK, 0)
                rows.append(
                    {
                        "county_code": c,
                        "prefecture_code": c // 100,
                        "province_code": c // 10_000,
                        "year": int(y),
                        "crop": crop,
                        "area_ha": a_base * (1 + 0.01 * (y - 1990)),
                        "n_rate_kg_ha": n,
                        "irrigated_fraction": 0.3 + 0.01 * (y - 1990),
                        "irrigation_mm": 300.0,
                        "precip_mm": 500.0,
                    }
                )
    act = pd.DataFrame(rows)
    act["water_input_mm"] = act["precip_mm"] + act["irrigated_fraction"] * act["irrigation_mm"]
    return act


def _emissions(act: pd.DataFrame) -> np.ndarray:
    return act["area_ha"].to_numpy() * _intensity(act["n_rate_kg_ha"].to_numpy(), act["water_input_mm"].to_numpy())


def _write_world(tmp_path, with_tier1=True):
    act = _activity()
    # Inventory means carry year-to-year noise (weather, sampling) the point estimate lacks.
    year_noise = dict(zip(YEARS, np.exp(np.random.default_rng(3).normal(0, 0.003, YEARS.size))))
    act["e"] = _emissions(act) * act["year"].map(year_noise).to_numpy()
    proc = tmp_path / "data_processed"
    (proc / "ingest").mkdir(parents=True)
    act.drop(columns="e").to_parquet(proc / "ingest" / "activity.parquet", index=False)
    (proc / "ingest" / "manifest.json").write_text("{}")  # a completed ingest run (no hashes recorded)
    rng = np.random.default_rng(7)
    for folder, scale in (("estimate", 1.0), ("estimate_tier1", 0.8)):
        if folder == "estimate_tier1" and not with_tier1:
            continue
        d = proc / folder
        d.mkdir()
        e = act.assign(n2o_n_kg_mean=act["e"] * scale)
        mean = e["n2o_n_kg_mean"]
        county = e.assign(n2o_n_kg_p2_5=mean * 0.7, n2o_n_kg_p97_5=mean * 1.4)
        county.to_parquet(d / "county.parquet", index=False)
        cols = ["n2o_n_kg_mean", "n2o_n_kg_p2_5", "n2o_n_kg_p97_5", "area_ha"]
        by_crop = county.groupby(["year", "crop"], as_index=False)[cols].sum()
        allc = county.groupby("year", as_index=False)[cols].sum().assign(crop="all")
        pd.concat([by_crop, allc]).to_parquet(d / "national.parquet", index=False)
        prov = county.groupby(["province_code", "year"], as_index=False)[cols].sum().assign(crop="all")
        prov.to_parquet(d / "province.parquet", index=False)
        nat = allc.set_index("year")["n2o_n_kg_mean"]
        draws = [
            pd.DataFrame(
                {
                    "draw": k,
                    "year": nat.index,
                    "crop": "all",
                    "n2o_n_kg": nat.to_numpy() * np.exp(rng.normal(0, 0.01, nat.size)),
                }
            )
            for k in range(60)
        ]
        pd.concat(draws).to_parquet(d / "national_draws.parquet", index=False)
        (d / "manifest.json").write_text("{}")  # a completed estimate run
    raw = tmp_path / "raw"
    raw.mkdir()
    gpd.GeoDataFrame(
        {"county_code": COUNTIES},
        geometry=[box(100 + i, 30, 101 + i, 31) for i in range(len(COUNTIES))],
        crs="EPSG:4326",
    ).to_file(raw / "b.gpkg")
    spec = InputSpec(path="raw/none.csv")
    cfg = Config(
        inputs=Inputs(
            observations=spec,
            n_rate=spec,
            sown_area=spec,
            irrigation=spec,
            covariates=spec,
            boundaries=InputSpec(path="raw/b.gpkg"),
            crosswalk=spec,
        ),
        trend=TrendConfig(n_sim=999),
        root=tmp_path,
    )
    return cfg


@pytest.fixture()
def world(tmp_path, monkeypatch):
    monkeypatch.setattr(trend_stage, "_emissions_fn", lambda stage: _emissions)
    return _write_world(tmp_path)


def test_run_writes_everything_and_recovers_the_break(world):
    files = trend_stage.run(world)
    names = {p.name for p in files}
    assert {
        "series.csv",
        "breaks.json",
        "breaks.csv",
        "break_draws.csv",
        "spatial_province.csv",
        "spatial_county.csv",
        "attribution_yearly.csv",
        "attribution_periods.csv",
        "counterfactuals.csv",
        "national_trend.png",
        "attribution.png",
        "province_slope_change.png",
    } <= names
    res = json.loads((world.processed / "trend" / "breaks.json").read_text())
    sc = res["national"]["slope_change"]
    assert sc["significant"] and sc["n_breaks"] >= 1
    psi = res["break_used"]["psi"]
    assert abs(psi - BREAK) <= 1
    d = res["national"]["break_year_over_draws"]
    assert d["ci_low"] - 0.5 <= psi <= d["ci_high"] + 0.5
    assert "national_tier1" in res and set(res["crops"]) == set(CROPS)
    # province 11 (a third of the counties) keeps growing; the others slow down
    prov = pd.read_csv(world.processed / "trend" / "spatial_province.csv")
    assert prov.set_index("province_code")["slowed"].to_dict() == {11: False, 12: True, 13: True}
    assert 0.4 < res["spatial"]["county_share_of_area_slowed"] < 0.9


def test_attribution_terms_sum_to_total_change(world):
    trend_stage.run(world)
    out = world.processed / "trend"
    yearly = pd.read_csv(out / "attribution_yearly.csv")
    act = _activity()
    change = pd.Series(_emissions(act)).groupby(act["year"].to_numpy()).sum().diff().dropna().to_numpy()
    np.testing.assert_allclose(yearly["total"], change, rtol=1e-9)
    effects = yearly[["area", "crop_mix", "location", "n_rate", "environment"]].sum(axis=1)
    np.testing.assert_allclose(effects, yearly["total"], rtol=1e-9, atol=1e-6)
    periods = pd.read_csv(out / "attribution_periods.csv").set_index("period")
    # N rates fall after the break in two provinces of three: the N-rate effect shrinks
    assert periods.loc["after", "n_rate"] < periods.loc["before", "n_rate"]
    assert periods.loc["before", "n_rate"] > 0 and periods.loc["after", "area"] > 0


def test_counterfactual_n_rate_held(world):
    act = _activity()
    held = trend.counterfactual_activity(act, BREAK, "n_rate_held")
    k = ["county_code", "crop"]
    at_break = act[act["year"] == BREAK].set_index(k)["n_rate_kg_ha"]
    later = held[held["year"] > BREAK].set_index(k)["n_rate_kg_ha"]
    np.testing.assert_allclose(later.to_numpy(), at_break.reindex(later.index).to_numpy())
    np.testing.assert_array_equal(
        held[held["year"] <= BREAK]["n_rate_kg_ha"], act[act["year"] <= BREAK]["n_rate_kg_ha"]
    )
    irr = trend.counterfactual_activity(act, BREAK, "irrigation_held")
    assert irr.loc[irr["year"] == 2014, "water_input_mm"].iloc[0] == pytest.approx(500 + (0.3 + 0.13) * 300)
    cf = trend_stage.counterfactuals(act, _emissions, BREAK).pivot(index="year", columns="scenario", values="n2o_n_kg")
    np.testing.assert_allclose(cf.loc[:BREAK, "n_rate_held"], cf.loc[:BREAK, "actual"])


def test_slopes_around_recovers_known_slopes():
    t = YEARS.astype(float)
    frame = pd.concat(
        [
            pd.DataFrame(
                {
                    "u": u,
                    "year": t,
                    "area_ha": a,
                    "n2o_n_kg_mean": 100 + b1 * (t - 1990) + (b2 - b1) * np.maximum(t - 2003.5, 0),
                }
            )
            for u, b1, b2, a in ((1, 10, 2, 3.0), (2, 5, 8, 1.0))
        ]
    )
    s = trend_stage.slopes_around(frame, "u", 2003.5).set_index("u")
    assert s.loc[1, "slope_before_kg_yr2"] == pytest.approx(10) and s.loc[1, "slope_after_kg_yr2"] == pytest.approx(2)
    assert s.loc[2, "slope_after_kg_yr2"] == pytest.approx(8)
    assert trend_stage.slowed_area_share(s.reset_index()) == pytest.approx(0.75)


def test_outputs_are_byte_identical_on_rerun(world):
    def digest():
        out = world.processed / "trend"
        # manifests carry wall times by design: compare them without those keys
        return {p.name: hashlib.sha256(reproducible_bytes(p)).hexdigest() for p in sorted(out.iterdir())}

    trend_stage.run(world)
    first = digest()
    trend_stage.run(world)
    assert digest() == first


def test_breaks_command_and_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = 200 + 11.2 * (YEARS - 1990) - 8.4 * np.maximum(YEARS - 2003, 0) + rng.normal(0, 3, YEARS.size)
    src = tmp_path / "s.csv"
    pd.DataFrame({"year": YEARS, "emission": y}).to_csv(src, index=False)
    out = tmp_path / "r.json"
    assert cli_main(["breaks", str(src), "--value-column", "emission", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert abs(res["slope_change"]["breaks"][0]["break_year"] - 2003) <= 1
    assert "year_convention" in res["mean_shift"]
    assert (tmp_path / "r.csv").exists()
    assert "slope_change" in capsys.readouterr().out


def test_breaks_command_bad_cell(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("year,value\n2000,1\n2001,x\n2002,3\n")
    with pytest.raises(InputError) as e:
        trend_stage.read_series(src)
    assert e.value.row == 3 and e.value.column == "value"
    with pytest.raises(InputError):
        trend_stage.read_series(src, "missing")


def test_series_use_the_central_estimate_and_forms_are_reported():
    """With a plug-in column the breakpoint analysis runs on it (not on the Jensen-inflated mean
    over draws), and the national draws' forms give each form's share per crop."""
    t = YEARS.astype(float)
    central = 100 + 10 * (t - 1990) - 8 * np.maximum(t - 2003.5, 0) + np.random.default_rng(0).normal(0, 2, t.size)
    nat = pd.DataFrame(
        {
            "year": t,
            "crop": "all",
            "n2o_n_kg_central": central,
            "n2o_n_kg_mean": central * 1.07,
            "n2o_n_kg_p2_5": central * 0.8,
            "n2o_n_kg_p97_5": central * 1.3,
            "area_ha": 1.0,
        }
    )
    s = trend.build_series(nat, None, "fitted")
    assert trend.central_column(s) == "n2o_n_kg_central"
    assert trend.central_column(s.drop(columns="n2o_n_kg_central")) == "n2o_n_kg_mean"
    r = trend.analyse(s, TrendConfig(n_sim=199))
    on_mean = trend.analyse(s, TrendConfig(n_sim=199), value="n2o_n_kg_mean")
    np.testing.assert_allclose(
        on_mean["slope_change"]["fitted"], np.asarray(r["slope_change"]["fitted"]) * 1.07, rtol=1e-6
    )
    assert abs(np.mean(np.asarray(r["slope_change"]["fitted"]) - central)) < 1e-6
    draws = pd.DataFrame(
        {
            "draw": np.tile(np.arange(4), 2),
            "year": 1990,
            "crop": np.repeat(["wheat", "all"], 4),
            "n2o_n_kg": 1.0,
            "form": ["linear", "linear", "linear", "saturating", "x", "x", "x", "x"],
        }
    )
    assert trend.forms_contributed(draws) == {"wheat": {"linear": 0.75, "saturating": 0.25}}
    assert trend.forms_contributed(draws.drop(columns="form")) is None
    assert trend.forms_contributed(draws.assign(form="")) is None

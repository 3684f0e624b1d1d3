"""Estimate stage: additivity, Monte Carlo correctness, chunking invariance, Tier 1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import EstimateConfig
from pipeline.estimate import emission_draws, estimate, expected_emissions, lognormal_multiplier
from pipeline.models import CropModel, InventoryModel, tier1_model


def _activity(n_counties: int = 30, years=range(2000, 2004), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_counties):
        code = (41 if c % 2 else 43) * 10_000 + 101 + c
        for y in years:
            for crop in ("rice", "wheat"):
                rows.append({"county_code": code, "province_code": code // 10_000, "year": y, "crop": crop,
                             "area_ha": float(rng.uniform(1e3, 5e4)), "n_rate_kg_ha": float(rng.uniform(50, 350)),
                             "water_input_mm": 800.0, "irrigated_fraction": 0.5, "climate": "wet",
                             "mean_temp_c": float(rng.uniform(5, 20))})
    return pd.DataFrame(rows)


def _model(sd: float = 0.05) -> InventoryModel:
    """An exponential model with known coefficients: E = exp(a + b N + g (T - 12))."""
    models = {}
    for crop, a, b in (("rice", -0.5, 0.004), ("wheat", -0.2, 0.005)):
        cov = np.diag([sd**2, (sd * 0.02) ** 2, (sd * 0.1) ** 2])
        models[crop] = CropModel(crop=crop, family="glm_gamma", terms=["n_rate_kg_ha", "mean_temp_c"],
                                 coef_names=["intercept", "n_rate_kg_ha", "mean_temp_c"],
                                 coef=np.array([a, b, 0.03]), cov=cov, center={"mean_temp_c": 12.0})
    return InventoryModel(models=models, kind="fitted")


def _manual(act: pd.DataFrame, background: str = "separate") -> np.ndarray:
    coef = {"rice": (-0.5, 0.004), "wheat": (-0.2, 0.005)}
    a = act["crop"].map(lambda c: coef[c][0]).to_numpy()
    b = act["crop"].map(lambda c: coef[c][1]).to_numpy()
    base = np.exp(a + 0.03 * (act["mean_temp_c"].to_numpy() - 12.0))
    e = base * np.exp(b * act["n_rate_kg_ha"].to_numpy())
    return act["area_ha"].to_numpy() * (e - base if background == "separate" else e)


def test_point_estimate_matches_formula() -> None:
    act = _activity()
    assert np.allclose(expected_emissions(act, _model()), _manual(act), rtol=1e-12)
    assert np.allclose(expected_emissions(act, _model(), "included"), _manual(act, "included"), rtol=1e-12)


def test_county_sums_equal_province_and_national() -> None:
    act = _activity()
    out = estimate(act, _model(), EstimateConfig(draws=200, seed=1))
    county, prov, nat = out["county"], out["province"], out["national"]
    assert len(county) == len(act)
    for y in act["year"].unique():
        c = county[county["year"] == y]
        total = nat[(nat["year"] == y) & (nat["crop"] == "all")]["n2o_n_kg_mean"].item()
        assert total == pytest.approx(c["n2o_n_kg_mean"].sum(), rel=1e-12)
        p = prov[(prov["year"] == y) & (prov["crop"] == "all")].set_index("province_code")["n2o_n_kg_mean"]
        assert np.allclose(p.to_numpy(), c.groupby("province_code")["n2o_n_kg_mean"].sum().loc[p.index].to_numpy(), rtol=1e-12)
    # the draw-level national series averages to the same mean
    d = out["national_draws"]
    dm = d[d["crop"] == "all"].groupby("year")["n2o_n_kg"].mean()
    assert np.allclose(dm.to_numpy(), nat[nat["crop"] == "all"].sort_values("year")["n2o_n_kg_mean"].to_numpy(), rtol=1e-9)


def test_no_uncertainty_gives_the_point_estimate() -> None:
    act = _activity(5)
    out = estimate(act, _model(sd=0.0), EstimateConfig(draws=20, seed=3, rel_error_n_rate=0.0, rel_error_area=0.0))
    county = out["county"].sort_values(["county_code", "crop", "year"])
    ref = act.assign(e=_manual(act)).sort_values(["county_code", "crop", "year"])["e"].to_numpy()
    assert np.allclose(county["n2o_n_kg_mean"], ref, rtol=1e-12)
    assert np.allclose(county["n2o_n_kg_p2_5"], ref, rtol=1e-12) and np.allclose(county["n2o_n_kg_p97_5"], ref, rtol=1e-12)


def test_chunking_and_scheduler_do_not_change_results() -> None:
    act = _activity(40)
    cfg = EstimateConfig(draws=100, seed=7)
    a = estimate(act, _model(), cfg)
    b = estimate(act, _model(), cfg.model_copy(update={"max_cells_per_task": 1000}))  # 10 rows per task
    pd.testing.assert_frame_equal(a["national"], b["national"], rtol=1e-12)
    pd.testing.assert_frame_equal(a["county"], b["county"], rtol=1e-12)
    c = estimate(act, _model(), cfg)
    pd.testing.assert_frame_equal(a["national_draws"], c["national_draws"], check_exact=True)


def test_parameters_stay_correlated_across_counties() -> None:
    """With parameter uncertainty only, 40 identical counties have the national relative interval
    of one county: draws are shared, not independent (which would shrink it ~sqrt(40)-fold)."""
    act = _activity(1, years=[2000])
    act = pd.concat([act.assign(county_code=410101 + i, province_code=41) for i in range(40)], ignore_index=True)
    out = estimate(act, _model(sd=0.1), EstimateConfig(draws=400, seed=5, rel_error_n_rate=0.0, rel_error_area=0.0))
    one = out["county"].iloc[0]
    nat = out["national"][out["national"]["crop"] == one["crop"]].iloc[0]
    rel_county = (one["n2o_n_kg_p97_5"] - one["n2o_n_kg_p2_5"]) / one["n2o_n_kg_mean"]
    rel_nat = (nat["n2o_n_kg_p97_5"] - nat["n2o_n_kg_p2_5"]) / nat["n2o_n_kg_mean"]
    assert rel_nat == pytest.approx(rel_county, rel=1e-9)


def test_n_rate_error_applied_through_the_exponential() -> None:
    act = _activity(3, years=[2000])
    m = _model(sd=0.0).for_crop("rice")
    X = act[act["crop"] == "rice"]
    params = np.tile(m.coef, (2, 1))
    mult = np.array([[1.0] * len(X), [1.2] * len(X)])
    e, _ = emission_draws(m, X, params, mult, "included")
    direct = m.mean_emission(X.assign(n_rate_kg_ha=X["n_rate_kg_ha"] * 1.2))
    assert np.allclose(e[1], direct, rtol=1e-12)


def test_lognormal_multiplier_has_mean_one() -> None:
    m = lognormal_multiplier(np.random.default_rng(0), 0.2, (200_000,))
    assert m.mean() == pytest.approx(1.0, abs=2e-3) and m.std() == pytest.approx(0.2, rel=0.02)


def test_tier1_inventory_on_the_same_activity() -> None:
    act = _activity()
    t1 = tier1_model("2006", disaggregated=False)
    out = estimate(act, t1, EstimateConfig(draws=300, seed=2, rel_error_n_rate=0.0, rel_error_area=0.0))
    ef = np.where(act["crop"] == "rice", 0.003, 0.01)
    point = (act["area_ha"] * act["n_rate_kg_ha"] * ef).groupby(act["year"]).sum()
    nat = out["national"][out["national"]["crop"] == "all"].set_index("year")
    # Tier 1 EF draws are skewed (range 0.003-0.03 around 0.01): the median sits near the default
    assert np.allclose(nat["n2o_n_kg_median"], point, rtol=0.15)
    assert (nat["n2o_n_kg_p2_5"] < point).all() and (nat["n2o_n_kg_p97_5"] > point).all()

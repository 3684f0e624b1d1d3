"""Tests of pipeline.models: the model interface, Tier 1 values and draws, JSON round trips."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError, ModelError
from pipeline.methods.models import CropModel, FittedModel, InventoryModel, tier1_model


def _activity(n: int = 4, **extra) -> pd.DataFrame:
    X = pd.DataFrame(
        {
            "n_rate_kg_ha": np.linspace(0, 300, n),
            "soil_ph": 6.0,
            "water_input_mm": 800.0,
            "climate": "wet",
            "crop": "wheat",
        }
    )
    for k, v in extra.items():
        X[k] = v
    return X


def _fitted_like(family: str = "mixed_lognormal") -> FittedModel:
    return FittedModel(
        crop="rice",
        family=family,
        terms=["n_rate_kg_ha", "soil_ph", "water_regime"],
        coef_names=["intercept", "n_rate_kg_ha", "soil_ph", "water_regime[continuous_flooding]"],
        coef=np.array([-0.5, 0.004, 0.2, -0.3]),
        cov=np.diag([0.01, 1e-7, 0.004, 0.02]),
        center={"soil_ph": 6.5},
        fill={"soil_ph": 6.4},
        reference={"water_regime": "single_drainage"},
        merged={"water_regime": ["multiple_drainage"]},
        defaults={"water_regime": "single_drainage"},
        retransform="duan",
        smearing=1.3,
    )


def test_tier1_2006_is_linear_without_background():
    inv = tier1_model("2006", disaggregated=False)
    X = _activity()
    wheat, rice = inv.for_crop("wheat"), inv.for_crop("rice")
    np.testing.assert_allclose(wheat.mean_emission(X), X["n_rate_kg_ha"] * 0.01)
    np.testing.assert_allclose(rice.mean_emission(X), X["n_rate_kg_ha"] * 0.003)
    np.testing.assert_array_equal(wheat.background(X), 0.0)
    assert inv.kind == "tier1" and inv.provenance["edition"] == "2006"


def test_tier1_2006_ignores_disaggregation_and_says_so():
    inv = tier1_model("2006", disaggregated=True)
    assert inv.provenance["disaggregated"] is False
    assert "not applicable" in inv.provenance["disaggregation_note"]


def test_tier1_2019_disaggregated_by_climate_fertilizer_and_regime():
    inv = tier1_model("2019", disaggregated=True, rice_water_regime="single_drainage")
    X = pd.DataFrame(
        {
            "n_rate_kg_ha": [100.0] * 4,
            "climate": ["wet", "wet", "dry", "dry"],
            "fertilizer_type": ["synthetic", "other", "synthetic", "other"],
        }
    )
    np.testing.assert_allclose(inv.for_crop("maize").mean_emission(X), [1.6, 0.6, 0.5, 0.5])
    # activity rows carry no fertilizer_type: synthetic N is assumed
    np.testing.assert_allclose(
        inv.for_crop("maize").mean_emission(X.drop(columns="fertilizer_type")), [1.6, 1.6, 0.5, 0.5]
    )
    rice = inv.for_crop("rice")
    np.testing.assert_allclose(rice.mean_emission(X), 0.5)  # single drainage default: 0.005
    Xr = X.assign(water_regime=["continuous_flooding", "multiple_drainage", "single_drainage", "continuous_flooding"])
    np.testing.assert_allclose(rice.mean_emission(Xr), [0.3, 0.5, 0.5, 0.3])
    with pytest.raises(ModelError, match="climate"):
        inv.for_crop("wheat").mean_emission(X.drop(columns="climate"))


def test_tier1_2019_aggregated():
    inv = tier1_model("2019", disaggregated=False)
    X = _activity()
    np.testing.assert_allclose(inv.for_crop("wheat").mean_emission(X), X["n_rate_kg_ha"] * 0.010)
    np.testing.assert_allclose(inv.for_crop("rice").mean_emission(X), X["n_rate_kg_ha"] * 0.004)


def test_tier1_unknown_edition():
    with pytest.raises(ConfigError, match="edition"):
        tier1_model("1996", disaggregated=False)


@pytest.mark.parametrize(
    "edition,name,central,low,high",
    [("2006", "ef1", 0.01, 0.003, 0.03), ("2019", "ef1", 0.010, 0.002, 0.018), ("2019", "ef_dry", 0.005, 0.0, 0.011)],
)
def test_tier1_draws_match_ipcc_range(edition, name, central, low, high):
    inv = tier1_model(edition, disaggregated=name != "ef1")
    m = inv.for_crop("wheat")
    j = m.coef_names.index(name)
    draws = m.draw_params(np.random.default_rng(7), 40_000)[:, j]
    assert draws.min() >= 0.0
    assert np.median(draws) == pytest.approx(central, rel=0.03)
    q_lo, q_hi = np.quantile(draws, [0.025, 0.975])
    if low > 0:  # a range starting at 0 is truncated there, so its 2.5 % quantile is 0
        assert q_lo == pytest.approx(low, rel=0.08)
    else:
        assert q_lo == 0.0
    assert q_hi == pytest.approx(high, rel=0.05)


def test_mean_emission_shapes_and_draws_are_consistent():
    m = _fitted_like()
    X = _activity(6, water_regime="single_drainage")
    point = m.mean_emission(X)
    assert point.shape == (6,)
    P = np.vstack([m.coef, m.coef])
    many = m.mean_emission(X, P)
    assert many.shape == (2, 6)
    np.testing.assert_allclose(many[0], point)
    # E = s * exp(b0 + bN N + g (pH - 6.5)); rows here are at the reference regime
    expected = 1.3 * np.exp(-0.5 + 0.004 * X["n_rate_kg_ha"] + 0.2 * (6.0 - 6.5))
    np.testing.assert_allclose(point, expected)
    bg = m.background(X, P)
    assert bg.shape == (2, 6)
    np.testing.assert_allclose(bg[0], expected.iloc[0])


def test_design_categoricals_defaults_fill_and_errors():
    m = _fitted_like()
    X = _activity(3)  # no water_regime column: the default regime (reference) is used
    D = m.design(X)
    np.testing.assert_array_equal(D[:, 3], 0.0)
    D2 = m.design(X.assign(water_regime="continuous_flooding"))
    np.testing.assert_array_equal(D2[:, 3], 1.0)
    np.testing.assert_array_equal(m.design(X.assign(water_regime="multiple_drainage"))[:, 3], 0.0)  # merged
    with pytest.raises(ModelError, match="upland"):
        m.design(X.assign(water_regime="upland"))
    assert m.design(X.assign(water_regime="upland"), unseen="reference")[:, 3].sum() == 0.0
    Xm = X.assign(soil_ph=[np.nan, 6.0, np.nan])
    np.testing.assert_allclose(m.design(Xm)[:, 2], [6.4 - 6.5, 6.0 - 6.5, 6.4 - 6.5])
    with pytest.raises(ModelError, match="n_rate_kg_ha"):
        m.design(X.drop(columns="n_rate_kg_ha"))


def test_draw_params_multivariate_normal():
    m = _fitted_like()
    P = m.draw_params(np.random.default_rng(3), 20_000)
    assert P.shape == (20_000, 4)
    assert np.all(np.abs(P.mean(axis=0) - m.coef) < 4 * np.sqrt(np.diag(m.cov) / 20_000))
    np.testing.assert_allclose(P.std(axis=0), np.sqrt(np.diag(m.cov)), rtol=0.03)
    with pytest.raises(ModelError, match="params"):
        m.mean_emission(_activity(), np.zeros((3, 2)))


def test_json_round_trip_is_portable_and_exact():
    fitted = InventoryModel(
        models={"rice": _fitted_like(), "wheat": _fitted_like("glm_gamma")},
        kind="fitted",
        provenance={"inputs_sha256": {"observations.parquet": "ab"}},
    )
    fitted.models["wheat"].crop = "wheat"
    for inv in (fitted, tier1_model("2019", True)):
        text = json.dumps(inv.to_json(), sort_keys=True)
        back = InventoryModel.from_json(json.loads(text))
        assert json.dumps(back.to_json(), sort_keys=True) == text
        X = _activity(5, water_regime="continuous_flooding")
        for crop, m in inv.models.items():
            np.testing.assert_array_equal(back.models[crop].mean_emission(X), m.mean_emission(X))
    with pytest.raises(ModelError):
        InventoryModel.from_json({"nothing": 1})


def test_inventory_dispatches_by_crop_and_names_missing_models():
    inv = tier1_model("2006", False)
    X = pd.DataFrame({"crop": ["rice", "wheat"], "n_rate_kg_ha": [100.0, 100.0]})
    np.testing.assert_allclose(inv.mean_emission(X), [0.3, 1.0])
    with pytest.raises(ModelError, match="soybean"):
        inv.for_crop("soybean")


def test_vectorised_on_inventory_sized_input():
    m = _fitted_like()
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"n_rate_kg_ha": rng.uniform(0, 400, 15_000), "soil_ph": rng.uniform(5, 8, 15_000)})
    out = m.mean_emission(X, m.draw_params(rng, 200))
    assert out.shape == (200, 15_000) and np.isfinite(out).all()


def test_unknown_family_rejected():
    with pytest.raises(ModelError, match="family"):
        CropModel(crop="wheat", family="linear", terms=[], coef_names=["a"], coef=np.zeros(1), cov=np.zeros((1, 1)))


@pytest.mark.parametrize("family", ["mixed_lognormal", "glm_gamma", "tier1"])
def test_prepared_rows_give_the_bits_of_the_table(family):
    """A Monte Carlo task prepares its rows once and evaluates them four times: draws and
    plug-in, at N and at N = 0 must be the bits that the table itself gives (the background
    from the table at N = 0 was a copy of the table with the N column set to 0)."""
    if family == "tier1":
        m = tier1_model("2019", disaggregated=True).for_crop("wheat")
        X = _activity(9, fertilizer_type=["synthetic", "manure", "synthetic"] * 3)
    else:
        m = _fitted_like(family)
        X = _activity(
            9, soil_ph=[6.0, np.nan, 7.1] * 3, water_regime=["continuous_flooding", None, "single_drainage"] * 3
        )
    P = m.draw_params(np.random.default_rng(3), 16)
    R = m.prepare(X)
    assert m.prepare(R) is R and len(R) == len(X)
    X0 = X.assign(n_rate_kg_ha=0.0)
    for params in (None, P):
        assert np.array_equal(m.mean_emission(R, params), m.mean_emission(X, params))
        assert np.array_equal(m.background(R, params), m.background(X, params))
        assert np.array_equal(m.background(R, params), m.mean_emission(X0, params))


def test_rows_prepared_by_another_crop_are_refused():
    inv = tier1_model("2019", disaggregated=False)
    R = inv.for_crop("rice").prepare(_activity(3, water_regime="single_drainage"))
    with pytest.raises(ModelError, match="prepared by the rice ipcc_tier1 model.*wheat"):
        inv.for_crop("wheat").mean_emission(R)

"""Tests of pipeline.lmdi: exactness of LMDI-I and of the N-rate / environment split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.methods import lmdi


def _intensity(n, w):
    # an exponential emission model (kg N2O-N/ha) of the Stehfest-Bouwman type
    return np.exp(-1.0 + 0.0065 * n + 0.0012 * w)


def _rows(seed=0, m=60):
    rng = np.random.default_rng(seed)
    crop = rng.choice(["rice", "wheat", "maize", "vegetables"], m)
    a0 = rng.uniform(100, 1000, m)
    a1 = a0 * rng.uniform(0.8, 1.3, m)
    a1[0] = 0.0  # a county-crop that disappears
    a0[1] = 0.0  # and one that appears
    n0 = rng.uniform(80, 320, m)
    n1 = n0 * rng.uniform(0.8, 1.1, m)
    w0 = rng.uniform(300, 900, m)
    w1 = w0 + rng.normal(0, 60, m)
    return pd.DataFrame(
        {
            "crop": crop,
            "area_ha_0": a0,
            "area_ha_1": a1,
            "n2o_n_kg_0": a0 * _intensity(n0, w0),
            "n2o_n_kg_1": a1 * _intensity(n1, w1),
            "n_rate_kg_ha_0": n0,
            "n_rate_kg_ha_1": n1,
            "intensity_n1_env0_kg_ha": _intensity(n1, w0),
            "intensity_n0_env1_kg_ha": _intensity(n0, w1),
        }
    )


def test_logarithmic_mean():
    assert lmdi.logarithmic_mean(np.array([2.0]), np.array([2.0]))[0] == 2.0
    assert lmdi.logarithmic_mean(np.array([np.e]), np.array([1.0]))[0] == pytest.approx(np.e - 1)
    assert lmdi.logarithmic_mean(np.array([0.0]), np.array([1.0]))[0] == 0.0


def test_generic_lmdi_is_exact():
    rng = np.random.default_rng(1)
    f0 = {k: rng.uniform(0.5, 2, 30) for k in "abc"}
    f1 = {k: v * rng.uniform(0.7, 1.5, 30) for k, v in f0.items()}
    out = lmdi.lmdi(f0, f1)
    v0 = np.prod([f0[k] for k in "abc"], axis=0).sum()
    v1 = np.prod([f1[k] for k in "abc"], axis=0).sum()
    assert out["a"] + out["b"] + out["c"] == pytest.approx(v1 - v0, rel=1e-12)
    assert out["total"] == pytest.approx(v1 - v0, rel=1e-12)


def test_emission_terms_sum_to_total_change_with_entries_and_exits():
    out = lmdi.decompose_emissions(_rows())
    assert abs(out["residual"]) < 1e-8 * abs(out["total"]) + 1e-9
    assert out["n_rate_proportional"] + out["n_rate_ef_response"] == pytest.approx(out["n_rate"])


def test_known_single_driver_changes():
    r = _rows(2)
    # Only area doubles everywhere: everything is the area effect, exactly ln 2 weighted.
    i0 = _intensity(r["n_rate_kg_ha_0"], 500.0)
    only_area = r.assign(area_ha_0=r["area_ha_0"] + 1.0)
    only_area = only_area.assign(
        area_ha_1=2 * only_area["area_ha_0"],
        n_rate_kg_ha_1=only_area["n_rate_kg_ha_0"],
        n2o_n_kg_0=only_area["area_ha_0"] * i0,
        n2o_n_kg_1=2 * only_area["area_ha_0"] * i0,
        intensity_n1_env0_kg_ha=i0,
        intensity_n0_env1_kg_ha=i0,
    )
    out = lmdi.decompose_emissions(only_area)
    assert out["area"] == pytest.approx(out["total"], rel=1e-9)
    for k in ("crop_mix", "location", "n_rate", "environment"):
        assert abs(out[k]) < 1e-6 * out["total"]
    # Only the N rate changes: the effect is all N rate, and with a convex EF it exceeds what a
    # constant EF would attribute when N rises.
    n1 = only_area["n_rate_kg_ha_0"] * 1.2
    a = only_area["area_ha_0"]
    only_n = only_area.assign(
        area_ha_1=a,
        n_rate_kg_ha_1=n1,
        n2o_n_kg_1=a * _intensity(n1, 500.0),
        intensity_n1_env0_kg_ha=_intensity(n1, 500.0),
        intensity_n0_env1_kg_ha=i0,
    )
    out = lmdi.decompose_emissions(only_n)
    assert out["n_rate"] == pytest.approx(out["total"], rel=1e-9)
    assert out["n_rate_ef_response"] > 0 and out["n_rate_proportional"] > 0


def test_additive_log_model_split_is_one_at_a_time():
    # For ln I = a + bN + cW the Shapley split equals the one-at-a-time change (no interaction).
    r = _rows(3)
    both = (r["area_ha_0"] > 0) & (r["area_ha_1"] > 0)
    f00 = np.log(r["n2o_n_kg_0"][both] / r["area_ha_0"][both])
    f10 = np.log(r["intensity_n1_env0_kg_ha"][both])
    f01 = np.log(r["intensity_n0_env1_kg_ha"][both])
    f11 = np.log(r["n2o_n_kg_1"][both] / r["area_ha_1"][both])
    first, second = lmdi.shapley_two(f00.to_numpy(), f10.to_numpy(), f01.to_numpy(), f11.to_numpy())
    np.testing.assert_allclose(first, 0.0065 * (r["n_rate_kg_ha_1"] - r["n_rate_kg_ha_0"])[both], rtol=1e-9)
    np.testing.assert_allclose(first + second, f11 - f00, rtol=1e-12)

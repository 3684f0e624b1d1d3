"""Model-form uncertainty through the ESTIMATE path (issue 12, items 1-3 and the Checks).

Field records come from the simulator of tests/test_response_forms.py (not the demo generator):
tens of sites with a zero-N control and 3-5 N rates, a site covariate, a multiplicative site
effect and log-normal noise, for truths whose N response is linear, exponential or saturating.
The fit is :func:`pipeline.methods.fitting.fit_forms` (the fit stage's code: candidate forms,
leave-site-out CV, stacking, :class:`~pipeline.methods.models.AveragedModel`); the inventory is
:func:`pipeline.methods.montecarlo.estimate` on a world of 500 fields over 1990-2014 whose N
rates rise to 2003 and fall after (a designed kink), exactly as the estimate stage runs it; the
trend slopes are those of :func:`pipeline.methods.slope_change.kink_slopes` on every Monte Carlo
draw of the national series (what the trend stage reports), at the designed kink.

For each truth: share of seeds whose national 95 % interval covers the true total (kink year),
median relative error of the central estimate (plug-in, ``n2o_n_kg_central``), share of seeds
whose slope intervals cover the true slopes before and after the kink; the same with the
exponential family alone (fit.response_forms: [exponential]) for contrast. The slow test runs
20 seeds per truth; the fast one runs the same code on 2 seeds with loose bounds.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipeline.config import FitConfig
from pipeline.methods import fitting
from pipeline.methods.models import AveragedModel, CropModel, Family, InventoryModel
from pipeline.methods.montecarlo import estimate
from pipeline.methods.slope_change import kink_slopes
from tests.test_response_forms import KINK, YEARS, make_world, simulate_fields

TRUTHS = ("linear", "exponential", "saturating")


def observations(form: str, seed: int, n_sites: int = 80) -> pd.DataFrame:
    """Simulated field records in the OBSERVATIONS columns the fit reads (crop wheat; the site
    covariate x stored as soil_ph)."""
    d = simulate_fields(form, seed, n_sites=n_sites)
    return pd.DataFrame(
        {
            "obs_id": [f"r{i}" for i in range(len(d))],
            "site_id": d["site_id"],
            "study_id": d["site_id"],
            "crop": "wheat",
            "n_rate_kg_ha": d["n_rate_kg_ha"],
            "flux_kg_n2o_n_ha": d["n2o_n_kg_ha"],
            "soil_ph": d["x"],
        }
    )


def fit_cfg(forms: tuple[str, ...] | None = None) -> FitConfig:
    kw = {} if forms is None else {"response_forms": list(forms)}
    return FitConfig(crops=["wheat"], covariates=["soil_ph"], min_records=30, min_sites=5, **kw)


def fit_average(obs: pd.DataFrame, cfg: FitConfig) -> AveragedModel:
    kept, _ = fitting.prepare_observations(obs, cfg)
    model, _report = fitting.fit_forms(fitting.select_crop_data(kept, "wheat", cfg), cfg)
    return model


def activity(form: str, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The world as ACTIVITY rows (one county per field) and its true national totals (kg N2O-N)."""
    w = make_world(form, seed)
    n_fields = w.A.shape[0] // len(YEARS)
    field = np.tile(np.arange(n_fields), len(YEARS))
    year = np.repeat(YEARS, n_fields)
    act = pd.DataFrame(
        {
            "county_code": 110000 + field,
            "province_code": 11 + field // 50,
            "year": year,
            "crop": "wheat",
            "area_ha": w.A.sum(axis=1),
            "n_rate_kg_ha": w.N,
            "water_input_mm": 0.0,
            "soil_ph": w.X[:, 0],
        }
    )
    return act, w.true_total


def est_cfg(seed: int, draws: int) -> SimpleNamespace:
    return SimpleNamespace(
        background="included",
        indirect=False,
        draws=draws,
        seed=seed,
        rel_error_n_rate=0.0,
        rel_error_area=0.0,
        max_cells_per_task=1_000_000,
        form_draws="shared",
    )


def study(form: str, seed: int, draws: int = 400) -> dict:
    obs = observations(form, seed)
    act, truth = activity(form, seed)
    k = int(np.flatnonzero(YEARS == KINK)[0])
    true_sl = kink_slopes(YEARS, truth[None, :], np.array([KINK + 0.0]))[0]
    out: dict = {"form": form, "seed": seed}
    for label, forms in (("avg", None), ("exp", ("exponential",))):
        model = fit_average(obs, fit_cfg(forms))
        tables = estimate(act, InventoryModel({"wheat": model}, kind="fitted"), est_cfg(seed, draws))
        nat = tables["national"].query("crop == 'all'").sort_values("year")
        central = nat["n2o_n_kg_central"].to_numpy()
        lo, hi = nat["n2o_n_kg_p2_5"].to_numpy(), nat["n2o_n_kg_p97_5"].to_numpy()
        d = tables["national_draws"].query("crop == 'all'").pivot(index="draw", columns="year", values="n2o_n_kg")
        sl = kink_slopes(YEARS, d.to_numpy(), np.full(len(d), KINK + 0.0))
        sl_lo, sl_hi = np.quantile(sl, [0.025, 0.975], axis=0)
        out[f"{label}_cover_peak"] = bool(lo[k] <= truth[k] <= hi[k])
        out[f"{label}_cover_years"] = float(np.mean((lo <= truth) & (truth <= hi)))
        out[f"{label}_relerr_peak"] = float(central[k] / truth[k] - 1.0)
        out[f"{label}_mcmean_relerr_peak"] = float(nat["n2o_n_kg_mean"].to_numpy()[k] / truth[k] - 1.0)
        out[f"{label}_cover_slope_before"] = bool(sl_lo[0] <= true_sl[0] <= sl_hi[0])
        out[f"{label}_cover_slope_after"] = bool(sl_lo[1] <= true_sl[1] <= sl_hi[1])
        if label == "avg":
            out["weights"] = model.weights
            out["forms_drawn"] = nat["forms_drawn"].iloc[0]
    return out


def summarise(results: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(results)
    rows = {}
    for form, g in df.groupby("form"):
        rows[form] = {
            "seeds": len(g),
            **{
                f"{lab}_{k}": agg(g[f"{lab}_{k}"])
                for lab in ("avg", "exp")
                for k, agg in (
                    ("cover_peak", np.mean),
                    ("cover_years", np.mean),
                    ("cover_slope_before", np.mean),
                    ("cover_slope_after", np.mean),
                    ("relerr_peak", np.median),
                    ("mcmean_relerr_peak", np.mean),
                )
            },
            "avg_mean_relerr_peak": g["avg_relerr_peak"].mean(),
            "exp_mean_relerr_peak": g["exp_relerr_peak"].mean(),
        }
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------------------
# The averaged model itself
# ---------------------------------------------------------------------------------------------
def test_averaged_model_json_draws_and_plug_in():
    obs = observations("saturating", 3, n_sites=40)
    m = fit_average(obs, fit_cfg())
    back = CropModel.from_json(m.to_json())
    assert isinstance(back, AveragedModel) and back.family == Family.MODEL_AVERAGE
    X = pd.DataFrame({"n_rate_kg_ha": [0.0, 100.0, 300.0], "soil_ph": [0.0, 1.0, -1.0]})
    np.testing.assert_allclose(back.mean_emission(X), m.mean_emission(X), rtol=1e-12)
    # plug-in = weighted sum of the forms' plug-ins, each form evaluated by its own FittedForm
    Z = X[["soil_ph"]].to_numpy() - m.center["soil_ph"]
    mix = sum(w * m.form(f).predict_mean(X["n_rate_kg_ha"], Z) for f, w in m.weights.items())
    np.testing.assert_allclose(m.mean_emission(X), mix, rtol=1e-12)
    # draws: the form shares follow the weights; a draw of form f equals that form's predict_draws
    P = m.draw_params(np.random.default_rng(0), 3000)
    fams = m.draw_families(P)
    for f, w in m.weights.items():
        assert np.mean(fams == f) == pytest.approx(w, abs=0.03)
    E = m.mean_emission(X, P)
    f0 = m.families[int(P[0, 0])]
    lo, hi = m._blocks[f0]
    np.testing.assert_allclose(E[0], m.form(f0).predict_draws(P[:1, lo:hi], X["n_rate_kg_ha"], Z)[0], rtol=1e-10)
    # N-rate errors: evaluating at N x m equals evaluating rows whose N was multiplied
    mult = np.random.default_rng(1).lognormal(0, 0.1, (len(P), len(X)))
    direct = np.array(
        [m.mean_emission(X.assign(n_rate_kg_ha=X["n_rate_kg_ha"] * mult[i]), P[i : i + 1])[0] for i in range(20)]
    )
    np.testing.assert_allclose(m.mean_emission(X, P[:20], n_mult=mult[:20]), direct, rtol=1e-10)
    # a shared uniform makes the form draws of two crops comonotone
    u = np.random.default_rng(2).random(500)
    a = m.draw_families(m.draw_params(np.random.default_rng(3), 500, u=u))
    b = m.draw_families(m.draw_params(np.random.default_rng(4), 500, u=u))
    assert (a == b).all()
    # rows prepared once (as a Monte Carlo task does) give the table's bits, at N and at N = 0
    R = m.prepare(X)
    for params in (None, P[:50]):
        assert np.array_equal(m.mean_emission(R, params), m.mean_emission(X, params))
        assert np.array_equal(m.background(R, params), m.mean_emission(X.assign(n_rate_kg_ha=0.0), params))
    assert np.array_equal(m.mean_emission(R, P[:20], n_mult=mult[:20]), m.mean_emission(X, P[:20], n_mult=mult[:20]))


def test_estimate_reports_central_and_forms():
    obs = observations("linear", 5, n_sites=40)
    m = fit_average(obs, fit_cfg())
    act, _truth = activity("linear", 5)
    act = act[act["year"].isin([1990, 2003, 2014])]
    tables = estimate(act, InventoryModel({"wheat": m}, kind="fitted"), est_cfg(0, 300))
    county = tables["county"]
    # central = area x plug-in model average at the county's own N and covariates
    expect = county["area_ha"].to_numpy() * m.mean_emission(
        county.merge(act, on=["county_code", "year", "crop"], suffixes=("", "_a"))[["n_rate_kg_ha", "soil_ph"]]
    )
    np.testing.assert_allclose(county["n2o_n_kg_central"], expect, rtol=1e-10)
    nat = tables["national"].query("crop == 'all'")
    np.testing.assert_allclose(
        nat["n2o_n_kg_central"].to_numpy(), county.groupby("year")["n2o_n_kg_central"].sum().to_numpy(), rtol=1e-10
    )
    drawn = tables["national_draws"].query("crop == 'wheat'")["form"]
    assert set(drawn) <= set(m.families) and drawn.nunique() >= 1
    share = dict(
        item.rsplit(" ", 1) for item in tables["national"].query("crop == 'wheat'")["forms_drawn"].iloc[0].split(", ")
    )
    for f, w in m.weights.items():
        if w > 0.05:
            assert float(share[f]) == pytest.approx(w, abs=0.08)


# ---------------------------------------------------------------------------------------------
# The Checks: coverage, central error, slopes; exponential family alone for contrast
# ---------------------------------------------------------------------------------------------
def test_estimate_path_study_fast():
    """The slow study's logic on 2 seeds per truth (a seed's relative error has an SD of ~6 %)."""
    s = summarise([study(form, seed, draws=300) for form in TRUTHS for seed in range(2)])
    print("\n" + s.T.to_string())
    for form in TRUTHS:
        assert s.loc[form, "avg_cover_peak"] >= 0.5, s.loc[form]
        assert abs(s.loc[form, "avg_relerr_peak"]) < 0.15, s.loc[form]


@pytest.mark.slow
def test_estimate_path_study_20_seeds():
    """20 seeds per truth through fit_forms -> montecarlo.estimate -> kink_slopes."""
    s = summarise([study(form, seed) for form in TRUTHS for seed in range(20)])
    print("\n" + s.T.to_string())
    for form in TRUTHS:
        assert s.loc[form, "avg_cover_peak"] >= 0.85, s.loc[form]
        assert abs(s.loc[form, "avg_relerr_peak"]) <= 0.03, s.loc[form]
        assert s.loc[form, "avg_cover_slope_before"] >= 0.85, s.loc[form]
        assert s.loc[form, "avg_cover_slope_after"] >= 0.85, s.loc[form]
    assert abs(s.loc["exponential", "avg_mean_relerr_peak"]) <= 0.02, s.loc["exponential"]
    assert abs(s.loc["exponential", "exp_mean_relerr_peak"]) <= 0.02, s.loc["exponential"]
    # the Monte Carlo mean is Jensen-inflated where the central estimate is not
    assert s.loc["exponential", "exp_mcmean_relerr_peak"] > s.loc["exponential", "exp_mean_relerr_peak"]


def test_negative_and_zero_fluxes_are_floored_in_the_forms():
    """Measurement noise around zero (negative fluxes) does not break the forms' CV: they count as
    zero and are floored at fit.flux_floor_kg_ha like the single-family rule."""
    obs = observations("exponential", 7, n_sites=30)
    obs.loc[obs.index[:3], "flux_kg_n2o_n_ha"] = [-0.01, 0.0, -0.002]
    cfg = fit_cfg()
    kept, _ = fitting.prepare_observations(obs, cfg)
    model, report = fitting.fit_forms(fitting.select_crop_data(kept, "wheat", cfg), cfg)
    assert all(not v for v in report["cv"]["failures"].values())
    assert all(
        model.form(f).n_floored == 3 and model.form(f).floor_kg_ha == cfg.flux_floor_kg_ha for f in model.families
    )

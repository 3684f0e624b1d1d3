"""Tests of pipeline.fit: parameter recovery, cross-validation, rules, errors, determinism.

Observations for recovery tests come from :func:`simulate`, a small generator written here and
independent of the fitting code. Its model (the truth):

    log E_ij = a_c + b_c N_ij + g_ph (pH_i - 6.5) + g_w (W_i - 900) [+ d_cf if continuous flooding]
               + u_i + e_ij,     u_i ~ N(0, sd_site^2),  e_ij ~ N(0, sd_res^2)

for site i and record j, E in kg N2O-N/ha, N in kg N/ha (rates 0, 60, ..., 240 at every site),
pH in pH units, W (water input) in mm. So E[E | x] = exp(a + (sd_site^2 + sd_res^2)/2 + b N + ...):
slopes are shared by both families; the mixed model's intercept is a, the GLM's a + s^2/2.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from pipeline.config import Config, FitConfig, Inputs, InputSpec
from pipeline.errors import InputError, ModelError, StageOrderError
from pipeline.methods import fitting as fit
from pipeline.methods.models import Z95
from pipeline.stages import fit as fit_stage
from tests.conftest import reproducible_bytes

TRUTH_A = {  # world A (coverage), per crop: intercept a, N slope b
    "wheat": {"a": -0.4, "b": 0.0045},
}
G_PH, G_W = 0.15, 0.0006
TRUTH_B = {  # world B: other coefficients, other seed
    "rice": {"a": -1.0, "b": 0.0030, "cf": -0.5},
    "wheat": {"a": -0.2, "b": 0.0055},
    "maize": {"a": 0.1, "b": 0.0040},
    "vegetables": {"a": 0.6, "b": 0.0025},
    "other_upland": {"a": -0.6, "b": 0.0065},
}
G_PH_B, G_W_B = -0.2, 0.0003
COVS = ["water_input_mm", "soil_ph"]


def simulate(
    seed: int,
    truth: dict,
    g_ph: float,
    g_w: float,
    n_sites: int = 25,
    sd_site: float = 0.5,
    sd_res: float = 0.5,
    rates=(0.0, 60.0, 120.0, 180.0, 240.0),
) -> pd.DataFrame:
    """Observations in the OBSERVATIONS schema drawn from the documented truth."""
    rng = np.random.default_rng(seed)
    rows = []
    for crop, t in truth.items():
        for s in range(n_sites):
            site = f"{crop}-{s:03d}"
            ph, w = rng.uniform(5.0, 8.5), rng.uniform(300.0, 1500.0)
            u = rng.normal(0.0, sd_site)
            regime = rng.choice(["single_drainage", "continuous_flooding"]) if crop == "rice" else "upland"
            for n in rates:
                mu = t["a"] + t["b"] * n + g_ph * (ph - 6.5) + g_w * (w - 900.0) + u
                if regime == "continuous_flooding":
                    mu += t["cf"]
                rows.append(
                    {
                        "obs_id": f"{site}-{int(n)}",
                        "site_id": site,
                        "study_id": site,
                        "crop": crop,
                        "water_regime": regime,
                        "year": 2005,
                        "n_rate_kg_ha": n,
                        "fertilizer_type": "synthetic",
                        "flux_kg_n2o_n_ha": float(np.exp(mu + rng.normal(0.0, sd_res))),
                        "duration_days": 150.0,
                        "soil_ph": ph,
                        "soc_g_kg": np.nan,
                        "clay_pct": np.nan,
                        "mean_temp_c": np.nan,
                        "precip_mm": w,
                        "irrigation_mm": 0.0,
                        "water_input_mm": w,
                        "climate": "wet",
                        "lat": np.nan,
                        "lon": np.nan,
                        "source_file": "sim.csv",
                        "source_row": len(rows) + 2,
                    }
                )
    return pd.DataFrame(rows)


def _cfg(**kw) -> FitConfig:
    """The single-family fit (glm_gamma / mixed_lognormal chosen by CV): these tests check it;
    the model average is tested in tests/test_model_averaging.py and by the stage test below."""
    base = {"covariates": COVS, "crops": ["wheat"], "min_records": 30, "min_sites": 5, "model": "single_family"}
    base.update(kw)
    return FitConfig(**base)


# ---------------------------------------------------------------------------------------------
# Parameter recovery
# ---------------------------------------------------------------------------------------------
def _coverage(seeds, families=("glm_gamma", "mixed_lognormal")) -> dict[str, dict[str, float]]:
    """Share of 95 % intervals covering the truth, per family and coefficient, over world-A sets."""
    cfg = _cfg()
    hits: dict[str, dict[str, list[bool]]] = {fam: {} for fam in families}
    for seed in seeds:
        obs = simulate(seed, TRUTH_A, G_PH, G_W)
        for fam in families:
            m = fit.fit_crop(obs, "wheat", fam, cfg)
            # covariates are centred at their sample means: intercept = a + sum g (xbar - x0), and
            # the GLM's intercept is the log of the marginal mean: + (sd_site^2 + sd_res^2) / 2
            a = (
                TRUTH_A["wheat"]["a"]
                + G_PH * (m.center["soil_ph"] - 6.5)
                + G_W * (m.center["water_input_mm"] - 900.0)
                + (0.25 if fam == "glm_gamma" else 0.0)
            )
            truth = {"intercept": a, "n_rate_kg_ha": TRUTH_A["wheat"]["b"], "soil_ph": G_PH, "water_input_mm": G_W}
            se = m.standard_errors()
            for name, value in truth.items():
                j = m.coef_names.index(name)
                hits[fam].setdefault(name, []).append(bool(abs(m.coef[j] - value) <= Z95 * se[j]))
    out = {fam: {name: float(np.mean(h)) for name, h in per.items()} for fam, per in hits.items()}
    for fam, per in hits.items():
        out[fam]["all"] = float(np.mean([x for h in per.values() for x in h]))
    return out


def test_interval_coverage_over_20_observation_sets():
    """95 % intervals of both families cover the true coefficients ~95 % of the time (20 seeds).

    Seeds 100-119 were fixed before any result was seen. 20 sets x 4 coefficients is a noisy
    check (one set moves a coefficient's coverage by 5 points); the slow 300-set test below
    measures the calibration per coefficient.
    """
    coverage = _coverage(range(100, 120))
    print(f"\n95 % interval coverage over 20 observation sets: {coverage}")
    for fam, c in coverage.items():
        assert c["all"] >= 0.85, f"{fam}: intervals too narrow (coverage {c})"


@pytest.mark.slow
def test_interval_coverage_per_coefficient_over_300_observation_sets():
    """Per-coefficient coverage over 300 sets (seeds 100-399): a miscalibration of a few points shows.

    With 300 sets the binomial SE of a 95 % coverage is 1.3 points, so < 90 % is > 3.5 SE
    below nominal. The former CR2 covariance of the GLM failed this (intercept 0.897,
    water-input slope 0.897); the plain sandwich fails it by more.
    """
    coverage = _coverage(range(100, 400))
    print(f"\n95 % interval coverage over 300 observation sets: {coverage}")
    for fam, per in coverage.items():
        for name, c in per.items():
            assert c >= 0.90, f"{fam} {name}: intervals too narrow (coverage {c:.3f})"
            assert c <= 0.99, f"{fam} {name}: intervals too wide (coverage {c:.3f})"


def test_cluster_cov_equals_gee_sandwiches_on_unbalanced_sites():
    """CR3 = statsmodels' GEE bias-reduced (Mancl-DeRouen) sandwich, CR0 = GEE robust (independence)."""
    import statsmodels.api as sm

    obs = simulate(41, TRUTH_A, G_PH, G_W, n_sites=12)
    obs = obs.drop(index=obs.index[np.random.default_rng(0).random(len(obs)) < 0.3])  # unequal site sizes
    kept, _ = fit.prepare_observations(obs, _cfg())
    m = fit.fit_crop(kept, "wheat", "glm_gamma", _cfg())
    D, y = m.design(kept), kept[fit.FIT_FLUX_COL].to_numpy()
    groups = pd.factorize(kept["site_id"], sort=True)[0]
    fam = sm.families.Gamma(link=sm.families.links.Log())
    glm = sm.GLM(y, D, family=fam)
    res = glm.fit()
    gee = sm.GEE(y, D, groups=groups, family=fam, cov_struct=sm.cov_struct.Independence())
    for adjustment, cov_type in (("cr3", "bias_reduced"), ("cr0", "robust")):
        ours = fit.cluster_cov(D, np.asarray(res.resid_working), np.asarray(glm.weights), groups, adjustment)
        ref = gee.fit(cov_type=cov_type, start_params=res.params).cov_params()
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-14)
    v = {
        a: np.diag(fit.cluster_cov(D, np.asarray(res.resid_working), np.asarray(glm.weights), groups, a))
        for a in ("cr0", "cr2", "cr3")
    }
    assert np.all(v["cr0"] < v["cr2"]) and np.all(v["cr2"] < v["cr3"])
    # the model's covariance is CR3 widened from z to t(G - 1) quantiles
    t_over_z = fit.student_t.ppf(0.975, m.n_groups - 1) / Z95
    cr3 = fit.cluster_cov(D, np.asarray(res.resid_working), np.asarray(glm.weights), groups)
    np.testing.assert_allclose(m.cov, cr3 * t_over_z**2, rtol=1e-4)


def test_recovery_on_second_world_all_crops():
    """World B (other seed, other coefficients, five crops, rice water regimes) via fit_all."""
    obs = simulate(777, TRUTH_B, G_PH_B, G_W_B, n_sites=30)
    cfg = FitConfig(covariates=COVS, crops=list(TRUTH_B))
    inv, tables = fit_stage.fit_all(obs, cfg)
    for fam in ("glm_gamma", "mixed_lognormal"):
        coefs = tables["coefficients"].query("family == @fam")
        for crop, t in TRUTH_B.items():
            row = coefs.query("crop == @crop and term == 'n_rate_kg_ha'").iloc[0]
            assert abs(row.estimate - t["b"]) <= 3 * row.std_error, (fam, crop, row.estimate, t["b"])
            assert row.estimate == pytest.approx(t["b"], rel=0.25), (fam, crop)
        ph = coefs.query("term == 'soil_ph'")
        assert np.all(np.abs(ph.estimate - G_PH_B) <= 3 * ph.std_error)
    cf = tables["coefficients"].query("crop == 'rice' and term == 'water_regime[continuous_flooding]'")
    assert len(cf) == 2
    assert np.all(np.abs(cf.estimate - TRUTH_B["rice"]["cf"]) <= 3 * cf.std_error)
    assert set(inv.models) == set(TRUTH_B)


@pytest.mark.parametrize("retransform", ["duan", "lognormal"])
def test_retransformation_recovers_the_mean(retransform):
    """exp(E[log y]) is the median; the bias-corrected mean must match the true mean."""
    sd_site, sd_res = 0.6, 0.5
    # 150 sites: the log-mean near mid-range N then has SE ~0.05, so 15 % is ~3 SE
    obs = simulate(31, {"wheat": TRUTH_A["wheat"]}, 0.0, 0.0, n_sites=150, sd_site=sd_site, sd_res=sd_res)
    m = fit.fit_crop(obs, "wheat", "mixed_lognormal", _cfg(covariates=[], retransform=retransform))
    X = pd.DataFrame({"n_rate_kg_ha": [90.0, 120.0, 150.0]})
    a, b = TRUTH_A["wheat"]["a"], TRUTH_A["wheat"]["b"]
    true_mean = np.exp(a + b * X["n_rate_kg_ha"] + (sd_site**2 + sd_res**2) / 2)
    np.testing.assert_allclose(m.mean_emission(X), true_mean, rtol=0.15)
    # log(smearing) is a coefficient of the mixed model (so Monte Carlo draws carry it): drop it
    # to get the uncorrected back-transform, the median
    j = m.coef_names.index("log_smearing")
    assert m.coef[j] == pytest.approx(np.log(m.smearing)) and m.cov[j, j] > 0
    median = np.exp(m.design(X) @ m.coef - m.coef[j])
    assert np.all(median < 0.85 * true_mean)  # the uncorrected back-transform is biased low
    g = fit.fit_crop(obs, "wheat", "glm_gamma", _cfg(covariates=[]))
    np.testing.assert_allclose(g.mean_emission(X), true_mean, rtol=0.15)


# ---------------------------------------------------------------------------------------------
# Cross-validation and model choice
# ---------------------------------------------------------------------------------------------
def test_site_folds_keep_sites_together_and_are_deterministic():
    groups = pd.Series([f"s{i % 13}" for i in range(100)])
    f1 = fit.site_folds(groups, 5, seed=1)
    assert np.array_equal(f1, fit.site_folds(groups, 5, seed=1))
    assert set(f1) == set(range(5))
    assert pd.DataFrame({"g": groups, "f": f1}).groupby("g")["f"].nunique().max() == 1
    assert len(set(fit.site_folds(pd.Series(["a", "b"]), 5, 0))) == 2  # fewer sites than folds


def test_cross_validate_metrics_on_original_scale():
    obs = simulate(5, TRUTH_A, G_PH, G_W)
    metrics, pred = fit.cross_validate(obs, "wheat", "glm_gamma", _cfg())
    assert metrics["cv_n_scored"] == len(obs) and metrics["cv_folds"] == 5
    err = pred["predicted_kg_ha"] - pred["observed_kg_ha"]
    assert metrics["cv_rmse_kg_ha"] == pytest.approx(float(np.sqrt(np.mean(err**2))))
    assert metrics["cv_bias_kg_ha"] == pytest.approx(float(err.mean()))
    assert 0 < metrics["cv_rmse_kg_ha"] < obs["flux_kg_n2o_n_ha"].std() * 1.5


def test_choice_by_cv_rmse_or_pin():
    obs = simulate(9, TRUTH_A, G_PH, G_W)
    _, tables = fit_stage.fit_all(obs, _cfg())
    d = tables["diagnostics"]
    assert d["chosen"].sum() == 1
    best = d.loc[d["cv_rmse_kg_ha"].idxmin(), "family"]
    assert d.loc[d["chosen"], "family"].item() == best
    assert "CV RMSE" in d.loc[d["chosen"], "reason"].item()
    loser = "glm_gamma" if best == "mixed_lognormal" else "mixed_lognormal"
    inv, tables = fit_stage.fit_all(obs, _cfg(pin={"wheat": loser}))
    assert inv.models["wheat"].family == loser
    assert "pinned" in tables["diagnostics"].query("chosen")["reason"].item()
    for col in ("n_records", "n_sites", "cv_rmse_kg_ha", "cv_bias_kg_ha", "cv_r2", "r2_insample"):
        assert col in tables["diagnostics"].columns


# ---------------------------------------------------------------------------------------------
# Rules: non-positive fluxes, minimums, pooling, bad tables
# ---------------------------------------------------------------------------------------------
def _with_nonpositive(obs: pd.DataFrame) -> pd.DataFrame:
    obs = obs.copy()
    obs.loc[[0, 5, 10], "flux_kg_n2o_n_ha"] = [0.0, -0.02, -0.1]
    return obs


def test_nonpositive_flux_floor_is_counted():
    obs = _with_nonpositive(simulate(3, TRUTH_A, G_PH, G_W))
    _, tables = fit_stage.fit_all(obs, _cfg(nonpositive_flux="floor", flux_floor_kg_ha=0.01))
    d = tables["diagnostics"]
    assert (d["n_nonpositive_floored"] == 3).all() and (d["n_nonpositive_quarantined"] == 0).all()
    assert (d["n_records"] == len(obs)).all()
    kept, q = fit.apply_flux_rule(obs, _cfg(flux_floor_kg_ha=0.01))
    assert kept.loc[[0, 5, 10], fit.FIT_FLUX_COL].eq(0.01).all() and len(q) == 0


def test_nonpositive_flux_quarantine_is_reported():
    obs = _with_nonpositive(simulate(3, TRUTH_A, G_PH, G_W))
    _, tables = fit_stage.fit_all(obs, _cfg(nonpositive_flux="quarantine"))
    assert len(tables["quarantine"]) == 3
    assert tables["quarantine"]["reason"].str.contains("flux <= 0").all()
    d = tables["diagnostics"]
    assert (d["n_nonpositive_quarantined"] == 3).all() and (d["n_records"] == len(obs) - 3).all()


def test_too_few_records_is_a_clear_error():
    obs = simulate(4, TRUTH_A, G_PH, G_W, n_sites=4)
    with pytest.raises(ModelError, match=r"crop wheat has 20 usable records at 4 sites.*fit\.pooling"):
        fit.fit_crop(obs, "wheat", "glm_gamma", _cfg())
    with pytest.raises(ModelError, match="vegetables has 0"):
        fit_stage.fit_all(simulate(4, TRUTH_A, G_PH, G_W), _cfg(crops=["wheat", "vegetables"]))


def test_pooling_shares_slopes_and_is_logged(caplog):
    world = {"other_upland": {"a": -0.5, "b": 0.005}, "vegetables": {"a": 0.5, "b": 0.005}}
    obs = simulate(12, world, G_PH, G_W, n_sites=25)
    few_veg = obs[(obs["crop"] == "other_upland") | obs["site_id"].isin([f"vegetables-{i:03d}" for i in range(4)])]
    cfg = _cfg(crops=["vegetables"], pooling={"vegetables": "other_upland"})
    with caplog.at_level("WARNING", logger="pipeline.methods.fitting"):
        m = fit.fit_crop(few_veg, "vegetables", "mixed_lognormal", cfg)
    assert "pooled with other_upland" in caplog.text
    assert m.pooled_with == ["other_upland"]
    j = m.coef_names.index("crop[vegetables]")
    assert abs(m.coef[j] - 1.0) <= 3 * m.standard_errors()[j]  # intercept shift +1.0
    # predicting vegetables rows without a crop column uses the model's own crop
    X = pd.DataFrame({"n_rate_kg_ha": [0.0], "soil_ph": 6.5, "water_input_mm": 900.0})
    assert m.mean_emission(X)[0] > m.mean_emission(X.assign(crop="other_upland"))[0]


def test_bad_tables_raise_input_errors_naming_file_row_column():
    obs = simulate(2, TRUTH_A, G_PH, G_W)
    with pytest.raises(InputError, match="column 'flux_kg_n2o_n_ha'"):
        fit_stage.fit_all(obs.drop(columns="flux_kg_n2o_n_ha"), _cfg())
    broken = obs.copy()
    broken.loc[7, "flux_kg_n2o_n_ha"] = np.nan
    with pytest.raises(InputError, match=r"sim\.csv, row 9, column 'flux_kg_n2o_n_ha'.*Fix"):
        fit_stage.fit_all(broken, _cfg())
    broken = obs.copy()
    broken.loc[3, "crop"] = "soybean"
    with pytest.raises(InputError, match="soybean"):
        fit_stage.fit_all(broken, _cfg())
    with pytest.raises(InputError, match="no rows"):
        fit_stage.fit_all(obs.iloc[0:0], _cfg())
    with pytest.raises(ModelError, match="same N rate"):
        fit.fit_crop(obs.assign(n_rate_kg_ha=100.0), "wheat", "glm_gamma", _cfg())


# ---------------------------------------------------------------------------------------------
# Stage: outputs, determinism
# ---------------------------------------------------------------------------------------------
def _project(tmp_path, obs: pd.DataFrame | None, **fit_kw) -> Config:
    from pipeline import io

    spec = InputSpec(path="unused.csv")
    cfg = Config(
        inputs=Inputs(
            observations=spec,
            n_rate=spec,
            sown_area=spec,
            irrigation=spec,
            covariates=spec,
            boundaries=spec,
            crosswalk=spec,
        ),
        fit=FitConfig(**{"covariates": COVS, "crops": ["wheat", "rice"], **fit_kw}),
        root=tmp_path,
    )
    if obs is not None:
        io.write_parquet(obs, cfg.processed / "ingest" / "observations.parquet")
        io.write_json({}, cfg.processed / "ingest" / "manifest.json")  # a completed ingest run
    return cfg


def test_run_writes_outputs_deterministically(tmp_path):
    obs = simulate(21, {"wheat": TRUTH_B["wheat"], "rice": TRUTH_B["rice"]}, G_PH_B, G_W_B, n_sites=12)
    cfg = _project(tmp_path, obs)
    paths = fit_stage.run(cfg)
    names = [p.name for p in paths]
    for expected in (
        "model.json",
        "tier1_model.json",
        "coefficients.csv",
        "covariance.csv",
        "diagnostics.csv",
        "ef_curves.csv",
        "ef_curves.png",
        "manifest.json",
    ):
        assert expected in names
    assert names[-1] == "manifest.json"
    first = {p.name: hashlib.sha256(reproducible_bytes(p)).hexdigest() for p in paths}
    second = {p.name: hashlib.sha256(reproducible_bytes(p)).hexdigest() for p in fit_stage.run(cfg)}
    assert first == second
    model = json.loads((cfg.processed / "fit" / "model.json").read_text())
    sha = hashlib.sha256((cfg.processed / "ingest" / "observations.parquet").read_bytes()).hexdigest()
    assert model["provenance"]["inputs_sha256"] == {"observations.parquet": sha}
    assert str(tmp_path) not in (cfg.processed / "fit" / "model.json").read_text()
    curves = pd.read_csv(cfg.processed / "fit" / "ef_curves.csv")
    fitted = curves[curves["model"] != "tier1"]
    assert (fitted["ef_lo95"] <= fitted["ef"]).all() and (fitted["ef"] <= fitted["ef_hi95"]).all()
    # The model average (default fit.model) carries every weighted form: its EF(N) is the
    # weighted sum of the forms' EF(N) (E and E0 are both weighted sums), each form's row names
    # its weight, and the weights in model.json are the stacking weights of response_forms.json.
    inv = json.loads((cfg.processed / "fit" / "model.json").read_text())["models"]["wheat"]
    weights = inv["average"]["weights"]
    assert inv["family"] == "model_average" and sum(weights.values()) == pytest.approx(1.0)
    w = curves[(curves["crop"] == "wheat") & (curves["model"] == "model_average")]
    forms = curves[(curves["crop"] == "wheat") & curves["model"].str.startswith("form:")]
    assert set(forms["model"].str[5:]) == set(weights)
    mix = sum(weights[f[5:]] * g["ef"].to_numpy() for f, g in forms.groupby("model"))
    np.testing.assert_allclose(w["ef"].to_numpy(), mix, rtol=1e-9)
    report = json.loads((cfg.processed / "fit" / "response_forms.json").read_text())["crops"]["wheat"]
    assert report["weighting"]["final_weights"] == pytest.approx(weights)
    for name in ("response_forms.json", "form_cv.csv", "paired_ef.csv", "paired_ef.png"):
        assert name in names
    paired = pd.read_csv(cfg.processed / "fit" / "paired_ef.csv")
    assert len(paired) == (obs["n_rate_kg_ha"] > 0).sum()  # every site has a zero-N control
    t1 = curves[(curves["model"] == "tier1") & (curves["crop"] == "wheat") & (curves["climate"] == "wet")]
    np.testing.assert_allclose(t1["ef"], 0.016)


def test_run_errors_before_ingest_and_on_corrupt_parquet(tmp_path):
    cfg = _project(tmp_path, None)
    with pytest.raises(StageOrderError, match="ingest"):
        fit_stage.run(cfg)
    target = cfg.processed / "ingest" / "observations.parquet"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"PAR1 this is not parquet")
    (target.parent / "manifest.json").write_text("{}")
    with pytest.raises(InputError, match="observations.parquet"):
        fit_stage.run(cfg)


# ---------------------------------------------------------------------------------------------
# Real data and the demo world
# ---------------------------------------------------------------------------------------------
def _kensyn_observations(cfg: Config) -> pd.DataFrame:
    from pipeline.stages import ingest

    raw = ingest.read_input(cfg, "observations")
    return ingest.harmonise_observations(getattr(raw, "frame", raw))[0]


def test_real_kensyn_forms_cv_and_weights(shared_data, repo_root):
    """KenSyn (real): every candidate form is scored by 5-fold leave-site-out CV without failed
    folds, the stacking weights sum to one, and the measurement-period exponent is positive and
    below one (docs/validation.md records the table: upland linear 0.77 / exponential 0.23)."""
    from pipeline.config import load_config

    csv = shared_data / "n2o_field_kensyn" / "KenSyn_N2O.csv"
    cfg = load_config(repo_root / "config" / "examples" / "kensyn.yaml", {"inputs.observations.path": str(csv)})
    obs = _kensyn_observations(cfg)
    fcfg = FitConfig(
        crops=["rice", "other_upland"],
        covariates=["water_input_mm", "mean_temp_c", "soil_ph", "soc_g_kg"],
        period_reference="annual",
    )
    inv, tables = fit_stage.fit_all(obs, fcfg)
    cv = tables["form_cv"]
    print("\n" + cv[["crop", "family", "rmse_kg_ha", "mlpd", "elpd", "elpd_se", "weight"]].to_string())
    assert set(cv["family"]) == set(fcfg.response_forms) and (cv["n_failed_folds"] == 0).all()
    assert cv.groupby("crop")["weight"].sum().to_numpy() == pytest.approx([1.0, 1.0])
    assert (cv.groupby("crop")["n_scored"].first() == obs["crop"].value_counts().sort_index()).all()
    for crop, m in inv.models.items():
        assert m.family == "model_average"
        for fam in m.families:
            f = m.form(fam)
            g = f.params[f.param_names.index(fit.PERIOD_COL)]
            assert 0.3 < g < 1.0, (crop, fam, g)


def test_real_kensyn_n_coefficient_and_rice_effect(shared_data, repo_root):
    """The same code on the real 985-record KenSyn compilation via the foundation's mapping."""
    from pipeline.config import load_config

    csv = shared_data / "n2o_field_kensyn" / "KenSyn_N2O.csv"
    cfg = load_config(repo_root / "config" / "examples" / "kensyn.yaml", {"inputs.observations.path": str(csv)})
    obs = _kensyn_observations(cfg)
    fcfg = FitConfig(covariates=[], group_by="study_id", measurement_period="ignore")
    m = fit.fit_pooled(obs, ["rice", "other_upland"], "mixed_lognormal", fcfg, crop_effects=["rice"], name="kensyn")
    se = m.standard_errors()
    report = {
        name: (round(b, 5), round(b - Z95 * s, 5), round(b + Z95 * s, 5))
        for name, b, s in zip(m.coef_names, m.coef, se)
    }
    print(f"\nKenSyn mixed model (study random intercept), {m.n_records} records, {m.n_groups} studies: {report}")
    jn = m.coef_names.index("n_rate_kg_ha")
    b, b_se = m.coef[jn], se[jn]
    # literature band: Stehfest & Bouwman (2006) ~0.0038 per kg N/ha on the log scale
    assert 0.002 < b < 0.01 and b - Z95 * b_se > 0
    assert m.n_records == len(obs) and m.n_groups == obs["study_id"].nunique()
    assert "crop[rice]" in m.coef_names
    # Wetland rice emits less than upland crops at the same N rate (Stehfest & Bouwman 2006 find a
    # negative rice class effect): the whole 95 % interval is below zero.
    j = m.coef_names.index("crop[rice]")
    assert m.coef[j] + Z95 * se[j] < 0 and np.isfinite(se[j]) and -3.0 < m.coef[j] < 0.0


def test_default_demo_world_expected_emission_inside_the_model_interval(tmp_path, repo_root):
    """The default demo world (pipeline.demo, its own generator, whose N response is a Hill curve
    none of the candidate forms has): per crop, the true expected emission of its records (summed
    exp(eta + (s_u^2 + s_e^2)/2)) lies inside the 95 % interval of the model average's draws (form
    and parameters). The sample itself is 0.70-1.25 x the truth per crop (16-71 sites), so a
    fixed band around the truth would test the sampling, not the model; measured ratios of the
    central estimate 0.71-1.24, every interval covering (docs/validation.md)."""
    from pipeline import demo
    from pipeline.config import load_config
    from pipeline.demo import truth as demo_truth
    from pipeline.stages import ingest

    cfg = load_config(repo_root / "config" / "default.yaml", {"root": str(tmp_path)})
    demo.run(cfg)
    obs = ingest.ingest_observations(cfg)[0]
    truth = pd.read_csv(tmp_path / "data_raw" / "demo" / "truth" / "observations_truth.csv")
    inv, _tables = fit_stage.fit_all(obs, cfg.fit)
    rows = obs.merge(truth[["obs_id", "eta"]], on="obs_id")
    rows["true_mean"] = np.exp(rows["eta"] + (demo_truth.SIGMA_SITE**2 + demo_truth.SIGMA_RESID**2) / 2)
    assert set(inv.models) == set(demo_truth.TRUE_A)
    for crop, m in inv.models.items():
        assert m.family == "model_average"
        r = rows[rows["crop"] == crop]
        if fit.PERIOD_COL in m.center:  # predict each record over its own measured period
            r = r.assign(**{fit.PERIOD_COL: np.log(r["duration_days"].astype(float) / 365.0)})
        draws = m.mean_emission(r, m.draw_params(np.random.default_rng(0), 2000)).sum(axis=1)
        lo, hi = np.quantile(draws / r["true_mean"].sum(), [0.025, 0.975])
        central = float(m.mean_emission(r).sum() / r["true_mean"].sum())
        print(f"\n{crop}: model average / truth {central:.3f} (95 % {lo:.3f}-{hi:.3f})")
        assert lo <= 1.0 <= hi, (crop, central, lo, hi)


# ---------------------------------------------------------------------------------------------
# Measurement period and paired-control EF (issue 12, items 4 and 5)
# ---------------------------------------------------------------------------------------------
def test_measurement_period_is_modelled_and_predictions_are_annual():
    """Fluxes cumulated over 30-1095 days with E ∝ D^0.7 (truth): the fit recovers the exponent,
    and activity rows (no duration) get the annual prediction."""
    obs = simulate(31, TRUTH_A, G_PH, G_W, n_sites=40)
    rng = np.random.default_rng(5)
    site_days = {s: float(rng.choice([30, 60, 120, 180, 365, 730, 1095])) for s in obs["site_id"].unique()}
    obs["duration_days"] = obs["site_id"].map(site_days)
    obs["flux_kg_n2o_n_ha"] *= (obs["duration_days"] / 365.0) ** 0.7
    m = fit.fit_crop(obs, "wheat", "mixed_lognormal", _cfg(period_reference="annual"))
    j = m.coef_names.index(fit.PERIOD_COL)
    se = m.standard_errors()[j]
    assert abs(m.coef[j] - 0.7) <= 3 * se and se < 0.15, (m.coef[j], se)
    assert m.fill[fit.PERIOD_COL] == 0.0
    # default reference: the crop's median measured period (no extrapolation beyond the records)
    m_med = fit.fit_crop(obs, "wheat", "mixed_lognormal", _cfg())
    assert m_med.fill[fit.PERIOD_COL] == pytest.approx(np.log(obs["duration_days"].median() / 365.0))
    X = pd.DataFrame({"n_rate_kg_ha": [100.0], "water_input_mm": [900.0], "soil_ph": [6.5]})
    annual = m.mean_emission(X)[0]
    seasonal = m.mean_emission(X.assign(**{fit.PERIOD_COL: np.log(120 / 365)}))[0]
    assert annual / seasonal == pytest.approx((365 / 120) ** m.coef[j], rel=1e-9)
    _, tables = fit_stage.fit_all(obs, _cfg())
    assert tables["diagnostics"]["measurement_period"].str.startswith("measurement period modelled").all()
    # without the column, or when told to ignore it, the diagnostics say the periods are mixed
    _, t2 = fit_stage.fit_all(obs.drop(columns="duration_days"), _cfg())
    assert t2["diagnostics"]["measurement_period"].str.contains("no duration_days column").all()
    m2 = fit.fit_crop(obs, "wheat", "mixed_lognormal", _cfg(measurement_period="ignore"))
    assert fit.PERIOD_COL not in m2.coef_names


def test_paired_control_ef_matches_the_difference_method():
    obs = pd.DataFrame(
        {
            "obs_id": list("abcdefg"),
            "site_id": ["s1", "s1", "s1", "s1", "s2", "s2", "s3"],
            "crop": ["wheat"] * 4 + ["maize"] * 3,
            "year": [2001, 2001, 2001, 2002, 2001, 2001, 2001],
            "n_rate_kg_ha": [0.0, 0.0, 150.0, 150.0, 0.0, 200.0, 100.0],
            "flux_kg_n2o_n_ha": [0.4, 0.6, 2.0, 3.0, 1.0, 3.0, 2.0],
        }
    )
    p = fit.paired_control_ef(obs, _cfg()).set_index("obs_id")
    # c: two controls of s1/2001 (mean 0.5); d has no control in 2002; f: control 1.0; g: none
    assert sorted(p.index) == ["c", "f"]
    assert p.loc["c", "ef"] == pytest.approx((2.0 - 0.5) / 150.0) and p.loc["c", "n_controls"] == 2
    assert p.loc["f", "ef"] == pytest.approx((3.0 - 1.0) / 200.0)

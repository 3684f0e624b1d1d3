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


def simulate(seed: int, truth: dict, g_ph: float, g_w: float, n_sites: int = 25, sd_site: float = 0.5,
             sd_res: float = 0.5, rates=(0.0, 60.0, 120.0, 180.0, 240.0)) -> pd.DataFrame:
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
                rows.append({"obs_id": f"{site}-{int(n)}", "site_id": site, "study_id": site, "crop": crop,
                             "water_regime": regime, "year": 2005, "n_rate_kg_ha": n,
                             "fertilizer_type": "synthetic",
                             "flux_kg_n2o_n_ha": float(np.exp(mu + rng.normal(0.0, sd_res))),
                             "duration_days": 150.0, "soil_ph": ph, "soc_g_kg": np.nan, "clay_pct": np.nan,
                             "mean_temp_c": np.nan, "precip_mm": w, "irrigation_mm": 0.0, "water_input_mm": w,
                             "climate": "wet", "lat": np.nan, "lon": np.nan,
                             "source_file": "sim.csv", "source_row": len(rows) + 2})
    return pd.DataFrame(rows)


def _cfg(**kw) -> FitConfig:
    base = {"covariates": COVS, "crops": ["wheat"], "min_records": 30, "min_sites": 5}
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
            a = (TRUTH_A["wheat"]["a"] + G_PH * (m.center["soil_ph"] - 6.5)
                 + G_W * (m.center["water_input_mm"] - 900.0) + (0.25 if fam == "glm_gamma" else 0.0))
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
    v = {a: np.diag(fit.cluster_cov(D, np.asarray(res.resid_working), np.asarray(glm.weights), groups, a))
         for a in ("cr0", "cr2", "cr3")}
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
    cfg = Config(inputs=Inputs(observations=spec, n_rate=spec, sown_area=spec, irrigation=spec,
                               covariates=spec, boundaries=spec, crosswalk=spec),
                 fit=FitConfig(**{"covariates": COVS, "crops": ["wheat", "rice"], **fit_kw}), root=tmp_path)
    if obs is not None:
        io.write_parquet(obs, cfg.processed / "ingest" / "observations.parquet")
        io.write_json({}, cfg.processed / "ingest" / "manifest.json")  # a completed ingest run
    return cfg


def test_run_writes_outputs_deterministically(tmp_path):
    obs = simulate(21, {"wheat": TRUTH_B["wheat"], "rice": TRUTH_B["rice"]}, G_PH_B, G_W_B, n_sites=12)
    cfg = _project(tmp_path, obs)
    paths = fit_stage.run(cfg)
    names = [p.name for p in paths]
    for expected in ("model.json", "tier1_model.json", "coefficients.csv", "covariance.csv", "diagnostics.csv",
                     "ef_curves.csv", "ef_curves.png", "manifest.json"):
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
    # exponential response: the fertilizer-induced EF rises with N
    assert (fitted.groupby("crop")["ef"].apply(lambda s: s.is_monotonic_increasing)).all()
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
def test_real_kensyn_n_coefficient_and_rice_effect(shared_data, repo_root):
    """The same code on the real 985-record KenSyn compilation via the foundation's mapping."""
    from pipeline.config import load_config
    from pipeline.stages import ingest

    csv = shared_data / "n2o_field_kensyn" / "KenSyn_N2O.csv"
    cfg = load_config(repo_root / "config" / "examples" / "kensyn.yaml", {"inputs.observations.path": str(csv)})
    raw = ingest.read_input(cfg, "observations")
    obs, _ = ingest.harmonise_observations(raw)
    fcfg = FitConfig(covariates=[], group_by="study_id")
    m = fit.fit_pooled(obs, ["rice", "other_upland"], "mixed_lognormal", fcfg, crop_effects=["rice"], name="kensyn")
    se = m.standard_errors()
    report = {name: (round(b, 5), round(b - Z95 * s, 5), round(b + Z95 * s, 5))
              for name, b, s in zip(m.coef_names, m.coef, se)}
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


def test_default_demo_world_n_slopes_within_20_percent(tmp_path, repo_root):
    """The default demo world (pipeline.demo, its own generator): chosen N slope per crop vs truth."""
    from pipeline import demo
    from pipeline.config import load_config
    from pipeline.stages import ingest

    cfg = load_config(repo_root / "config" / "default.yaml", {"root": str(tmp_path)})
    demo.run(cfg)
    obs, _, _ = ingest.ingest_observations(cfg)
    truth = json.loads((tmp_path / "data_raw" / "demo" / "truth" / "truth.json").read_text())["b"]
    inv, tables = fit_stage.fit_all(obs, cfg.fit)
    slopes = {c: float(m.coef[m.coef_names.index("n_rate_kg_ha")]) for c, m in inv.models.items()}
    print("\ndemo world N slopes (chosen model) vs truth: "
          + ", ".join(f"{c} {slopes[c]:.5f}/{truth[c]:.5f}" for c in sorted(slopes)))
    assert set(slopes) == set(truth)
    for crop, b in truth.items():
        assert slopes[crop] == pytest.approx(b, rel=0.20), crop

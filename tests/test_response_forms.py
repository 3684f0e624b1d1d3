"""Candidate N-response forms, leave-site-out CV, stacking and the model-averaged Monte Carlo.

Own simulator (not the demo generator): field experiments at tens of sites, each with a zero-N
control and 3-5 N rates in 40-400 kg N/ha, a site-level covariate, a multiplicative site effect
and log-normal noise, for truths whose N response is linear, exponential, saturating, or a
sigmoid that none of the candidate forms has. A 'world' of 500 fields over 1990-2014, whose
N rates rise to 2003 and fall after, gives the national-like totals and trend slopes.

The fast tests cover every check with few seeds; the ``slow`` ones repeat them with 20+ seeds
(``pytest -m slow tests/test_response_forms.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ModelError
from pipeline.methods import response_forms as rf

SIGMA_SITE = 0.4  # sd of the site effect, log scale
SIGMA_RESID = 0.4  # sd of the record noise, log scale
GAMMA = 0.3  # effect of the covariate x per unit, log scale
RETRANSFORM_TRUE = np.exp((SIGMA_SITE**2 + SIGMA_RESID**2) / 2)  # E[exp(u + e)]

#: Median N response of a typical site (x = 0, u = 0), kg N2O-N/ha per season.
TRUTHS = {
    "linear": lambda N: 1.0 + 0.0125 * N,  # Bouwman (1996) slope
    "exponential": lambda N: np.exp(0.004 * N),  # b ~ Stehfest & Bouwman
    "saturating": lambda N: 1.0 + 4.0 * (1.0 - np.exp(-N / 120.0)),  # Mitscherlich
    "sigmoid": lambda N: 1.0 + 4.0 / (1.0 + np.exp(-(N - 180.0) / 40.0)),  # no candidate has it
}
#: True parameters (module parametrisation) of each form whose truth is a candidate.
TRUE_PARAMS = {
    "linear": {"intercept": 0.0, "r_per_kg_n": 0.0125},
    "exponential": {"intercept": 0.0, "b_per_kg_n": 0.004},
    "saturating": {"intercept": 0.0, "r_per_kg_n": 4.0 / 120.0, "k_per_kg_n": 1.0 / 120.0},
    "quadratic": {"intercept": 0.0, "b_per_kg_n": 0.006, "c_per_kg_n2": -6e-6},
    "exponential_rs": {"intercept": 0.0, "b_per_kg_n": 0.004},
}
RS_SLOPE_SD = 0.0015  # sd of the site N slope (per kg N/ha) in the random-slope truth


def true_median(form: str, N: np.ndarray) -> np.ndarray:
    if form == "quadratic":
        p = TRUE_PARAMS["quadratic"]
        return np.exp(p["b_per_kg_n"] * N + p["c_per_kg_n2"] * N**2)
    if form == "exponential_rs":
        return TRUTHS["exponential"](N)
    return TRUTHS[form](N)


def simulate_fields(form: str, seed: int, n_sites: int = 80, zero_share: float = 0.0) -> pd.DataFrame:
    """Field records: zero-N control + 3-5 N rates per site, 1-2 years each, log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    grid = np.arange(40, 401, 20)
    for g in range(n_sites):
        u = rng.normal(0.0, SIGMA_SITE)
        slope = rng.normal(0.0, RS_SLOPE_SD) if form == "exponential_rs" else 0.0
        x = rng.normal()
        levels = np.r_[0.0, np.sort(rng.choice(grid, size=rng.integers(3, 6), replace=False))]
        for _year in range(rng.integers(1, 3)):
            for N in levels:
                rows.append((f"site{g:03d}", float(N), x, u, slope))
    d = pd.DataFrame(rows, columns=["site_id", "n_rate_kg_ha", "x", "u", "slope"])
    N = d["n_rate_kg_ha"].to_numpy()
    eps = rng.normal(0.0, SIGMA_RESID, len(d))
    d["n2o_n_kg_ha"] = true_median(form, N) * np.exp(GAMMA * d["x"] + d["u"] + d["slope"] * N + eps)
    if zero_share:
        d.loc[rng.random(len(d)) < zero_share, "n2o_n_kg_ha"] = 0.0
    return d


# ---------------------------------------------------------------------------------------------
# The world: 500 fields, 1990-2014, N rates rising to 2003 then falling
# ---------------------------------------------------------------------------------------------
YEARS = np.arange(1990, 2015)
KINK = 2003


@dataclass
class World:
    N: np.ndarray  # (fields * years,) kg N/ha
    X: np.ndarray  # (fields * years, 1)
    A: np.ndarray  # (fields * years, years) area in ha of each row in each year
    true_total: np.ndarray  # (years,) kg N2O-N


def n_multiplier(years: np.ndarray) -> np.ndarray:
    """National mean N rate, kg N/ha: 150 -> 260 (1990-2003), then -> 215 (2014)."""
    up = 150.0 + (260.0 - 150.0) * (years - 1990) / (KINK - 1990)
    down = 260.0 - (260.0 - 215.0) * (years - KINK) / (2014 - KINK)
    return np.where(years <= KINK, up, down)


def make_world(form: str, seed: int, n_fields: int = 500) -> World:
    rng = np.random.default_rng(10_000 + seed)
    base = rng.lognormal(0.0, 0.3, n_fields)
    x = rng.normal(0.0, 1.0, n_fields)
    area = rng.uniform(0.5, 1.5, n_fields)
    m = n_multiplier(YEARS)
    N = np.clip(np.outer(m, base), 0.0, 400.0).ravel()  # year-major
    X = np.tile(x, len(YEARS))[:, None]
    A = np.zeros((len(N), len(YEARS)))
    A[np.arange(len(N)), np.repeat(np.arange(len(YEARS)), n_fields)] = np.tile(area, len(YEARS))
    e_true = true_median(form, N) * np.exp(GAMMA * X[:, 0]) * RETRANSFORM_TRUE
    return World(N=N, X=X, A=A, true_total=e_true @ A)


def slopes(totals: np.ndarray) -> np.ndarray:
    """OLS slopes (per year) of annual totals before (<= KINK) and after (>= KINK) the kink;
    ``totals`` (..., years) -> (..., 2)."""
    out = []
    for mask in (YEARS <= KINK, YEARS >= KINK):
        t = YEARS[mask] - YEARS[mask].mean()
        out.append((totals[..., mask] @ t) / (t @ t))
    return np.stack(out, axis=-1)


def study_world(form: str, seed: int, n_draws: int = 500, n_folds: int = 5) -> dict:
    """Fit the candidates to one simulated data set and estimate one world, model-averaged and
    with the exponential form alone. Returns coverage flags and relative errors."""
    data = simulate_fields(form, seed)
    world = make_world(form, seed)
    avg, _cv, st = rf.fit_model_average(data, covariates=["x"], n_folds=n_folds, seed=seed)
    rng = np.random.default_rng(seed)
    out = {"form": form, "seed": seed, "weights": st.weights}
    exp_fit = rf.fit_family("exponential", data["n_rate_kg_ha"], data["n2o_n_kg_ha"], data["site_id"], data[["x"]])
    exp_only = rf.ModelAverage(forms={"exponential": exp_fit}, weights={"exponential": 1.0})
    true_sl = slopes(world.true_total)
    peak = int(np.flatnonzero(YEARS == KINK)[0])
    for label, model in (("avg", avg), ("exp", exp_only)):
        central = model.predict_mean(world.N, world.X) @ world.A
        fam, draws = model.predict_draws(rng, n_draws, world.N, world.X, aggregate=world.A)
        lo, hi = np.quantile(draws, [0.025, 0.975], axis=0)
        sl = slopes(draws)
        sl_lo, sl_hi = np.quantile(sl, [0.025, 0.975], axis=0)
        out[f"{label}_cover_peak"] = bool(lo[peak] <= world.true_total[peak] <= hi[peak])
        out[f"{label}_cover_years"] = float(np.mean((lo <= world.true_total) & (world.true_total <= hi)))
        out[f"{label}_relerr_peak"] = float(central[peak] / world.true_total[peak] - 1.0)
        out[f"{label}_relerr_sum"] = float(central.sum() / world.true_total.sum() - 1.0)
        out[f"{label}_mcmean_relerr_peak"] = float(draws[:, peak].mean() / world.true_total[peak] - 1.0)
        out[f"{label}_sdlog_peak"] = float(np.std(np.log(draws[:, peak])))
        out[f"{label}_cover_slope_before"] = bool(sl_lo[0] <= true_sl[0] <= sl_hi[0])
        out[f"{label}_cover_slope_after"] = bool(sl_lo[1] <= true_sl[1] <= sl_hi[1])
        if label == "avg":
            out["avg_contributions"] = model.contributions(fam)
    return out


def summarise(results: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(results)
    rows = {}
    for form, g in df.groupby("form"):
        rows[form] = {
            "seeds": len(g),
            **{
                f"{lab}_{k}": v
                for lab in ("avg", "exp")
                for k, v in {
                    "cover_peak": g[f"{lab}_cover_peak"].mean(),
                    "cover_years": g[f"{lab}_cover_years"].mean(),
                    "cover_slope_before": g[f"{lab}_cover_slope_before"].mean(),
                    "cover_slope_after": g[f"{lab}_cover_slope_after"].mean(),
                    "median_relerr_peak": g[f"{lab}_relerr_peak"].median(),
                    "mean_relerr_peak": g[f"{lab}_relerr_peak"].mean(),
                    "mean_mcmean_relerr_peak": g[f"{lab}_mcmean_relerr_peak"].mean(),
                }.items()
            },
            "w_exponential_forms": float(
                np.mean([sum(w.get(f, 0.0) for f in rf.EXPONENTIAL_FAMILIES) for w in g["weights"]])
            ),
        }
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------------------
# Formulas and plumbing
# ---------------------------------------------------------------------------------------------
def test_phi_continuous_at_zero_and_saturating_nests_linear():
    x = np.array([-1e-9, 0.0, 1e-9, 1e-3, 0.5])
    assert np.allclose(rf._phi(x), np.where(x == 0, 1.0, -np.expm1(-np.where(x == 0, 1, x)) / np.where(x == 0, 1, x)))
    h = 1e-5
    assert np.allclose(
        rf._dphi(np.array([0.0, 0.3])),
        (rf._phi(np.array([h, 0.3 + h])) - rf._phi(np.array([-h, 0.3 - h]))) / (2 * h),
        atol=1e-6,
    )
    N = np.linspace(0, 400, 9)
    kw = {
        "cov": np.eye(4) * 1e-4,
        "sigma2_resid": 0.25,
        "re_cov": [[0.3]],
        "retransform": "duan",
        "smearing": 1.3,
        "n_records": 10,
        "n_sites": 5,
    }
    lin = rf.FittedForm(
        family="linear",
        param_names=["intercept", "r_per_kg_n", "log_smearing"],
        params=[0.1, 0.01, np.log(1.3)],
        **{**kw, "cov": np.eye(3) * 1e-4},
    )
    sat = rf.FittedForm(
        family="saturating",
        param_names=["intercept", "r_per_kg_n", "k_per_kg_n", "log_smearing"],
        params=[0.1, 0.01, 0.0, np.log(1.3)],
        **kw,
    )
    expected = np.exp(0.1) * (1 + 0.01 * N) * 1.3
    assert np.allclose(lin.predict_mean(N), expected)
    assert np.allclose(sat.predict_mean(N), expected)
    assert np.allclose(lin.background(n=3), np.exp(0.1) * 1.3)
    assert np.allclose(lin.emission_factor(N)[1:], np.exp(0.1) * 1.3 * 0.01)


def test_random_intercept_fit_matches_statsmodels_mixedlm():
    import statsmodels.api as sm

    d = simulate_fields("exponential", seed=3)
    fit = rf.fit_family(
        "exponential", d["n_rate_kg_ha"], d["n2o_n_kg_ha"], d["site_id"], d[["x"]], retransform="lognormal"
    )
    D = np.column_stack([np.ones(len(d)), d["n_rate_kg_ha"], d["x"]])
    ref = sm.MixedLM(np.log(d["n2o_n_kg_ha"].to_numpy()), D, groups=d["site_id"].to_numpy()).fit(reml=True)
    widen = (rf.student_t.ppf(0.975, fit.n_sites - 1) / rf.Z95) ** 2
    assert np.allclose(fit.params[:3], ref.fe_params, rtol=1e-5, atol=1e-7)
    assert np.allclose(np.sqrt(np.diag(fit.cov)[:3] / widen), ref.bse_fe, rtol=1e-3)
    assert fit.sigma2_resid == pytest.approx(ref.scale, rel=1e-4)
    assert fit.re_cov[0, 0] == pytest.approx(float(np.asarray(ref.cov_re)[0, 0]), rel=1e-3)
    assert fit.params[-1] == pytest.approx((fit.sigma2_resid + fit.re_cov[0, 0]) / 2)  # lognormal factor


def test_zero_fluxes_are_floored_and_counted():
    d = simulate_fields("linear", seed=5, zero_share=0.05)
    n0 = int((d["n2o_n_kg_ha"] == 0).sum())
    assert n0 > 0
    fit = rf.fit_family("linear", d["n_rate_kg_ha"], d["n2o_n_kg_ha"], d["site_id"], d[["x"]])
    assert fit.n_floored == n0
    assert fit.floor_kg_ha == pytest.approx(0.5 * d.loc[d["n2o_n_kg_ha"] > 0, "n2o_n_kg_ha"].min())
    assert any("floored" in note for note in fit.notes)
    assert np.all(np.isfinite(fit.log_predictive_density(d["n_rate_kg_ha"], d["n2o_n_kg_ha"], d[["x"]])))


def test_bad_inputs_raise_model_error():
    d = simulate_fields("linear", seed=1, n_sites=6)
    N, y, g = d["n_rate_kg_ha"], d["n2o_n_kg_ha"], d["site_id"]
    with pytest.raises(ModelError, match="unknown N-response family"):
        rf.fit_family("cubic", N, y, g)
    with pytest.raises(ModelError, match="negative emissions"):
        rf.fit_family("linear", N, y - 100.0, g)
    with pytest.raises(ModelError, match="at least 3"):
        rf.fit_family("linear", N, y, np.where(np.arange(len(g)) % 2, "a", "b"))
    with pytest.raises(ModelError, match="distinct N rates"):
        rf.fit_family("quadratic", np.where(N > 0, 100.0, 0.0), y, g)
    fit = rf.fit_family("exponential", N, y, g, d[["x"]])
    with pytest.raises(ModelError, match="columns"):
        fit.predict_draws(np.zeros((2, 3)), N)
    with pytest.raises(ModelError, match="fitted with 1"):
        fit.predict_mean(N, np.zeros((len(N), 2)))


def test_json_round_trip_of_forms_and_average():
    d = simulate_fields("saturating", seed=2)
    avg, _cv, _st = rf.fit_model_average(d, covariates=["x"], n_folds=4)
    back = rf.ModelAverage.from_json(avg.to_json())
    N = np.array([0.0, 100.0, 300.0])
    X = np.array([[0.0], [1.0], [-1.0]])
    assert np.allclose(back.predict_mean(N, X), avg.predict_mean(N, X))
    assert back.weights == pytest.approx(avg.weights)
    assert "stacking" in back.reason


# ---------------------------------------------------------------------------------------------
# (a) each family recovers its own truth
# ---------------------------------------------------------------------------------------------
def recovery(family: str, seeds: range) -> dict[str, float]:
    hits: dict[str, list[bool]] = {}
    for seed in seeds:
        d = simulate_fields(family, seed=100 + seed, n_sites=50)
        fit = rf.fit_family(family, d["n_rate_kg_ha"], d["n2o_n_kg_ha"], d["site_id"], d[["x"]])
        ci = fit.confidence_intervals().set_index("param")
        truth = {**TRUE_PARAMS[family], "x": GAMMA}
        if family == "exponential_rs":
            truth[rf.LOG_SMEARING] = (SIGMA_RESID**2 + SIGMA_SITE**2) / 2
        else:
            truth[rf.LOG_SMEARING] = np.log(RETRANSFORM_TRUE)
        for name, value in truth.items():
            hits.setdefault(name, []).append(bool(ci.loc[name, "low"] <= value <= ci.loc[name, "high"]))
    return {k: float(np.mean(v)) for k, v in hits.items()}


@pytest.mark.parametrize("family", rf.FAMILIES)
def test_each_family_recovers_its_own_truth(family):
    cover = recovery(family, range(8))
    assert min(cover.values()) >= 5 / 8, cover


@pytest.mark.slow
@pytest.mark.parametrize("family", rf.FAMILIES)
def test_each_family_recovers_its_own_truth_many_seeds(family):
    cover = recovery(family, range(40))
    print(family, cover)
    assert min(cover.values()) >= 0.8, cover


def test_random_slope_variance_is_recovered():
    d = simulate_fields("exponential_rs", seed=7, n_sites=60)
    fit = rf.fit_family("exponential_rs", d["n_rate_kg_ha"], d["n2o_n_kg_ha"], d["site_id"], d[["x"]])
    assert np.sqrt(fit.re_cov[1, 1]) == pytest.approx(RS_SLOPE_SD, rel=0.5)
    assert np.sqrt(fit.re_cov[0, 0]) == pytest.approx(SIGMA_SITE, rel=0.35)
    assert fit.retransform == "lognormal"


# ---------------------------------------------------------------------------------------------
# (b) CV and stacking choose the right shape
# ---------------------------------------------------------------------------------------------
def exp_weight(weights: dict[str, float]) -> float:
    return sum(weights.get(f, 0.0) for f in rf.EXPONENTIAL_FAMILIES)


def test_loso_cv_and_stacking_on_saturating_truth():
    d = simulate_fields("saturating", seed=11, n_sites=40)
    cv = rf.leave_site_out_cv(d, covariates=["x"])  # leave-one-site-out
    assert cv.folds.max() + 1 == d["site_id"].nunique()
    s = cv.scores
    assert set(s.index) == set(rf.FAMILIES) and (s["n_failed_folds"] == 0).all()
    best_nonexp = s.loc[["saturating", "linear"]]
    assert best_nonexp["rmse_kg_ha"].min() < s.loc["exponential", "rmse_kg_ha"]
    assert best_nonexp["mlpd"].max() > s.loc["exponential", "mlpd"]
    st = rf.stacking_weights(cv.lpd, cv.families)
    assert exp_weight(st.weights) < 0.5, st.reason
    assert st.weights["saturating"] + st.weights["linear"] > 0.5, st.reason
    assert sum(st.weights.values()) == pytest.approx(1.0)


def test_kfold_cv_and_stacking_on_exponential_truth():
    d = simulate_fields("exponential", seed=12, n_sites=40)
    cv = rf.leave_site_out_cv(d, covariates=["x"], n_folds=8, seed=1)
    per_site = cv.predictions.groupby("site")["fold"].nunique()
    assert (per_site == 1).all()  # a site is never split between folds
    st = rf.stacking_weights(cv.lpd, cv.families)
    assert st.weights["exponential"] + st.weights["quadratic"] + st.weights["exponential_rs"] > 0.5, st.reason


def weights_over_seeds(form: str, seeds: range) -> list[dict[str, float]]:
    out = []
    for seed in seeds:
        d = simulate_fields(form, seed=200 + seed, n_sites=40)
        cv = rf.leave_site_out_cv(d, covariates=["x"], n_folds=10, seed=seed)
        out.append(rf.stacking_weights(cv.lpd, cv.families).weights)
    return out


@pytest.mark.slow
def test_stacking_over_seeds():
    sat = weights_over_seeds("saturating", range(20))
    ex = weights_over_seeds("exponential", range(20))
    print("saturating truth, mean weights", pd.DataFrame(sat).mean().round(3).to_dict())
    print("exponential truth, mean weights", pd.DataFrame(ex).mean().round(3).to_dict())
    assert np.mean([exp_weight(w) < 0.5 for w in sat]) >= 0.85
    assert np.mean([w["exponential"] + w["quadratic"] + w["exponential_rs"] > 0.5 for w in ex]) >= 0.85


def test_stacking_weights_on_known_densities():
    rng = np.random.default_rng(0)
    n = 300
    good = rng.normal(-1.0, 0.3, n)
    L = np.column_stack([good, good - 2.0, good - 5.0])
    st = rf.stacking_weights(L, ["a", "b", "c"])
    assert st.weights["a"] > 0.99
    # two identical forms share the weight; stacking objective is the mixture log score
    L2 = np.column_stack([good, good, good - 3.0])
    st2 = rf.stacking_weights(L2, ["a", "a2", "c"])
    assert st2.weights["a"] + st2.weights["a2"] > 0.99
    w = np.array(list(st2.weights.values()))
    assert st2.objective == pytest.approx(float(np.sum(np.log(np.exp(L2) @ w))), rel=1e-6)
    # complementary forms: each predicts half the records well -> both get weight
    half = np.arange(n) < n // 2
    L3 = np.column_stack([np.where(half, -1.0, -6.0), np.where(half, -6.0, -1.0)])
    st3 = rf.stacking_weights(L3, ["p", "q"])
    assert st3.weights["p"] == pytest.approx(0.5, abs=0.02)
    pb = rf.stacking_weights(L, ["a", "b", "c"], method="pseudo_bma")
    assert pb.weights["a"] == pytest.approx(1.0) and pb.method == "pseudo_bma"
    pbp = rf.stacking_weights(L3, ["p", "q"], method="pseudo_bma_plus", rng=np.random.default_rng(1), n_bootstrap=200)
    assert sum(pbp.weights.values()) == pytest.approx(1.0)
    # a family whose folds all failed gets no weight, and the reason says so
    L4 = np.column_stack([good, np.full(n, np.nan)])
    st4 = rf.stacking_weights(L4, ["a", "dead"])
    assert st4.weights == {"a": 1.0, "dead": 0.0} and "dead" in st4.reason
    with pytest.raises(ModelError):
        rf.stacking_weights(L, ["a", "b", "c"], method="bma")


# ---------------------------------------------------------------------------------------------
# Model average draws and the Jensen gap
# ---------------------------------------------------------------------------------------------
def test_model_average_draws_form_and_parameters():
    d = simulate_fields("sigmoid", seed=4)
    fits, failed = rf.fit_families(d, covariates=["x"])
    assert not failed
    weights = {"linear": 0.2, "saturating": 0.5, "quadratic": 0.3}
    avg = rf.ModelAverage(forms=fits, weights=weights)
    N = np.array([0.0, 150.0, 300.0])
    X = np.zeros((3, 1))
    assert np.allclose(avg.predict_mean(N, X), sum(w * fits[k].predict_mean(N, X) for k, w in weights.items()))
    rng = np.random.default_rng(0)
    fam, draws = avg.predict_draws(rng, 4000, N, X)
    share = avg.contributions(fam)
    for k, w in weights.items():
        assert share[k] == pytest.approx(w, abs=0.03)
    # draws of one family come from that family's parameters: the background column of
    # linear draws scatters around the linear plug-in background
    lin = draws[fam == "linear", 0]
    assert np.median(lin) == pytest.approx(fits["linear"].predict_mean([0.0], X[:1])[0], rel=0.05)
    agg = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    fam2, tot = avg.predict_draws(np.random.default_rng(0), 4000, N, X, aggregate=agg)
    assert np.allclose(tot, draws @ agg) and (fam2 == fam).all()


def test_plug_in_central_versus_jensen_inflated_draw_mean():
    d = simulate_fields("exponential", seed=21, n_sites=30)
    fit = rf.fit_family("exponential", d["n_rate_kg_ha"], d["n2o_n_kg_ha"], d["site_id"], d[["x"]])
    N = np.array([0.0, 200.0, 400.0])
    X = np.zeros((3, 1))
    P = fit.draw_params(np.random.default_rng(0), 40_000)
    raw = fit.predict_draws(P, N, X).mean(axis=0)
    corrected = fit.predict_draws(P, N, X, jensen_correct=True).mean(axis=0)
    plug = fit.predict_mean(N, X)
    G = fit._log_mean_gradient(N, X)
    inflation = np.exp(0.5 * np.einsum("ni,ij,nj->n", G, fit.cov, G))
    assert np.all(raw > plug)
    assert np.allclose(raw / plug, inflation, rtol=0.01)
    assert np.allclose(corrected / plug, 1.0, atol=0.01)


# ---------------------------------------------------------------------------------------------
# (c, d) the world: national totals and trend slopes
# ---------------------------------------------------------------------------------------------
def run_study(forms, seeds) -> pd.DataFrame:
    return summarise([study_world(form, seed) for form in forms for seed in seeds])


#: Truths whose form is one of the candidates; the sigmoid is the misspecified one.
CANDIDATE_TRUTHS = ("linear", "exponential", "saturating")


def test_world_study_fast():
    """Same logic as the slow study with 3 seeds per truth; loose bounds (a seed's relative
    error has a standard deviation of about 6.5 %)."""
    s = run_study(list(TRUTHS), range(3))
    print(s.T.to_string())
    for form in TRUTHS:
        assert s.loc[form, "avg_cover_peak"] >= 2 / 3, s.loc[form]
        assert abs(s.loc[form, "avg_median_relerr_peak"]) < 0.15, s.loc[form]
    assert s.loc["saturating", "w_exponential_forms"] < 0.5
    assert s.loc["exponential", "w_exponential_forms"] > 0.3
    # the failure mode of issue 12: the exponential form alone misses the slopes of a
    # saturating world, the average does not
    assert s.loc["saturating", "exp_cover_slope_after"] < s.loc["saturating", "avg_cover_slope_after"]


@pytest.mark.slow
def test_world_study_coverage_and_central_error():
    """30 seeds per truth (about 3 minutes on 2 cores)."""
    s = run_study(list(TRUTHS), range(30))
    print(s.T.to_string())
    for form in TRUTHS:
        assert s.loc[form, "avg_cover_peak"] >= 0.85, s.loc[form]
    for form in CANDIDATE_TRUTHS:
        assert abs(s.loc[form, "avg_median_relerr_peak"]) <= 0.03, s.loc[form]
        assert s.loc[form, "avg_cover_slope_before"] >= 0.85, s.loc[form]
        assert s.loc[form, "avg_cover_slope_after"] >= 0.85, s.loc[form]
    # misspecified (sigmoid) truth: the log-quadratic takes most weight and the central
    # estimate runs about 5 % low (measured -4.5 % median); bound it, do not hide it
    assert abs(s.loc["sigmoid", "avg_median_relerr_peak"]) <= 0.07, s.loc["sigmoid"]
    # exponential form alone, for contrast: it under-covers the slopes of a saturating world
    assert s.loc["saturating", "exp_cover_slope_after"] < 0.5
    # (d) exponential world: central estimate unbiased; the Monte Carlo mean is inflated
    assert abs(s.loc["exponential", "avg_mean_relerr_peak"]) <= 0.02
    assert abs(s.loc["exponential", "exp_mean_relerr_peak"]) <= 0.02
    assert s.loc["exponential", "exp_mean_mcmean_relerr_peak"] > s.loc["exponential", "exp_mean_relerr_peak"]

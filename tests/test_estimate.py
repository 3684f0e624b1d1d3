"""Estimate stage: additivity, Monte Carlo correctness, chunking invariance, Tier 1."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest

from pipeline.config import EstimateConfig
from pipeline.methods.models import CropModel, FittedModel, InventoryModel, tier1_model
from pipeline.methods.montecarlo import (
    emission_draws,
    expected_emissions,
    lognormal_multiplier,
)
from pipeline.stages.estimate import estimate


def _activity(n_counties: int = 30, years=range(2000, 2004), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_counties):
        code = (41 if c % 2 else 43) * 10_000 + 101 + c
        for y in years:
            for crop in ("rice", "wheat"):
                rows.append(
                    {
                        "county_code": code,
                        "province_code": code // 10_000,
                        "year": y,
                        "crop": crop,
                        "area_ha": float(rng.uniform(1e3, 5e4)),
                        "n_rate_kg_ha": float(rng.uniform(50, 350)),
                        "water_input_mm": 800.0,
                        "irrigated_fraction": 0.5,
                        "climate": "wet",
                        "mean_temp_c": float(rng.uniform(5, 20)),
                    }
                )
    return pd.DataFrame(rows)


def _model(sd: float = 0.05) -> InventoryModel:
    """An exponential model with known coefficients: E = exp(a + b N + g (T - 12))."""
    models: dict[str, CropModel] = {}
    for crop, a, b in (("rice", -0.5, 0.004), ("wheat", -0.2, 0.005)):
        cov = np.diag([sd**2, (sd * 0.02) ** 2, (sd * 0.1) ** 2])
        models[crop] = FittedModel(
            crop=crop,
            family="glm_gamma",
            terms=["n_rate_kg_ha", "mean_temp_c"],
            coef_names=["intercept", "n_rate_kg_ha", "mean_temp_c"],
            coef=np.array([a, b, 0.03]),
            cov=cov,
            center={"mean_temp_c": 12.0},
        )
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
        assert np.allclose(
            p.to_numpy(), c.groupby("province_code")["n2o_n_kg_mean"].sum().loc[p.index].to_numpy(), rtol=1e-12
        )
    # the draw-level national series averages to the same mean
    d = out["national_draws"]
    dm = d[d["crop"] == "all"].groupby("year")["n2o_n_kg"].mean()
    assert np.allclose(
        dm.to_numpy(), nat[nat["crop"] == "all"].sort_values("year")["n2o_n_kg_mean"].to_numpy(), rtol=1e-9
    )


def test_no_uncertainty_gives_the_point_estimate() -> None:
    act = _activity(5)
    out = estimate(act, _model(sd=0.0), EstimateConfig(draws=20, seed=3, rel_error_n_rate=0.0, rel_error_area=0.0))
    county = out["county"].sort_values(["county_code", "crop", "year"])
    ref = act.assign(e=_manual(act)).sort_values(["county_code", "crop", "year"])["e"].to_numpy()
    assert np.allclose(county["n2o_n_kg_mean"], ref, rtol=1e-12)
    assert np.allclose(county["n2o_n_kg_p2_5"], ref, rtol=1e-12) and np.allclose(
        county["n2o_n_kg_p97_5"], ref, rtol=1e-12
    )


def test_chunking_and_scheduler_do_not_change_results() -> None:
    act = _activity(40)
    cfg = EstimateConfig(draws=100, seed=7)
    a = estimate(act, _model(), cfg)
    b = estimate(act, _model(), cfg.model_copy(update={"max_cells_per_task": 1000}))  # 10 rows per task
    pd.testing.assert_frame_equal(a["national"], b["national"], rtol=1e-12)
    pd.testing.assert_frame_equal(a["county"], b["county"], rtol=1e-12)
    c = estimate(act, _model(), cfg)
    pd.testing.assert_frame_equal(a["national_draws"], c["national_draws"], check_exact=True)
    # the same result from a dask.distributed cluster (the configuration for a named scheduler)
    from distributed import LocalCluster

    from pipeline.config import DaskConfig
    from pipeline.parallel import dask_context

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with dask_context(DaskConfig(scheduler=cluster.scheduler_address)):
            d = estimate(act, _model(), cfg)
    pd.testing.assert_frame_equal(a["national"], d["national"], rtol=1e-12)
    pd.testing.assert_frame_equal(a["county"], d["county"], rtol=1e-12)


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


def test_non_psd_covariance_is_refused() -> None:
    """A failed fit's covariance (negative eigenvalue) must not reach the Monte Carlo."""
    from pipeline.errors import ModelError

    model = _model()
    model.models["rice"].cov = np.array([[1.0, 0.0, 2.0], [0.0, 1e-6, 0.0], [2.0, 0.0, 1.0]])
    with pytest.raises(ModelError, match="rice.*positive semi-definite.*Fix"):
        estimate(_activity(3), model, EstimateConfig(draws=20, seed=1))


def test_province_sums_match_a_direct_sum_over_draws() -> None:
    """Per-draw province sums (reduceat over province runs) equal the naive loop on the same draws."""
    from pipeline.methods.montecarlo import make_draws

    act = _activity(12, years=[2001])
    act["province_code"] = np.where(act["county_code"] % 3 == 0, 41, np.where(act["county_code"] % 3 == 1, 43, 45))
    cfg = EstimateConfig(draws=50, seed=4, max_cells_per_task=1000)  # 20 rows per task: several tasks
    out = estimate(act, _model(), cfg)
    provinces = np.sort(act["province_code"].unique())
    d = make_draws(_model(), provinces, ("rice", "wheat"), cfg)
    for ci, crop in enumerate(("rice", "wheat")):
        X = act[act["crop"] == crop]
        pi = np.searchsorted(provinces, X["province_code"].to_numpy())
        e, _ = emission_draws(_model().for_crop(crop), X, d.params[crop], d.n_mult[:, pi, ci], "separate")
        total = e * X["area_ha"].to_numpy()[None, :] * d.area_mult[:, pi, ci]
        prov = out["province"][out["province"]["crop"] == crop].set_index("province_code")
        for p_i, p in enumerate(provinces):
            q = np.quantile(total[:, pi == p_i].sum(axis=1), [0.025, 0.975])
            assert prov.loc[p, "n2o_n_kg_p2_5"] == pytest.approx(q[0], rel=1e-12)
            assert prov.loc[p, "n2o_n_kg_p97_5"] == pytest.approx(q[1], rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Coverage: fitted on simulated observations, scored against the truth that generated them
# ---------------------------------------------------------------------------------------------
# Independent simulator (not pipeline.demo, not tests/test_fit.simulate). Truth:
#   log E_ij = A + B N_ij + G_T (T_i - 12) + u_i + e_ij,  u_i ~ N(0, SU^2), e_ij ~ N(0, SE^2)
# E in kg N2O-N/ha per season; so E[E | N, T] = exp(A + B N + G_T (T - 12) + (SU^2 + SE^2) / 2).
# Sites have 1 + Poisson(2.5) fertilized N levels (40-320 kg N/ha) plus a zero-N control.
A_TRUE, B_TRUE, GT_TRUE, SU_TRUE, SE_TRUE = -0.3, 0.006, 0.04, 0.45, 0.55


def _simulate_observations(seed: int, n_sites: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sites):
        t = rng.uniform(4.0, 22.0)
        u = rng.normal(0.0, SU_TRUE)
        levels = np.r_[0.0, np.sort(rng.uniform(40.0, 320.0, 1 + rng.poisson(2.5)))]
        for j, n in enumerate(levels):
            mu = A_TRUE + B_TRUE * n + GT_TRUE * (t - 12.0) + u + rng.normal(0.0, SE_TRUE)
            rows.append(
                {
                    "obs_id": f"S{s}-{j}",
                    "site_id": f"S{s}",
                    "crop": "wheat",
                    "n_rate_kg_ha": float(n),
                    "flux_kg_n2o_n_ha": float(np.exp(mu)),
                    "mean_temp_c": t,
                }
            )
    return pd.DataFrame(rows)


def _coverage_activity(n: int = 25) -> pd.DataFrame:
    rng = np.random.default_rng(999)
    return pd.DataFrame(
        {
            "county_code": 410101 + np.arange(n),
            "province_code": 41,
            "year": 2000,
            "crop": "wheat",
            "area_ha": rng.uniform(1e3, 5e4, n),
            "n_rate_kg_ha": rng.uniform(80.0, 300.0, n),
            "water_input_mm": 600.0,
            "mean_temp_c": rng.uniform(6.0, 20.0, n),
            "irrigated_fraction": 0.5,
            "climate": "wet",
        }
    )


def _true_national(act: pd.DataFrame) -> float:
    """Fertilizer-induced kg N2O-N of ``act`` under the simulator's true parameters."""
    e0 = np.exp(A_TRUE + GT_TRUE * (act["mean_temp_c"] - 12.0) + (SU_TRUE**2 + SE_TRUE**2) / 2.0)
    return float((act["area_ha"] * e0 * np.expm1(B_TRUE * act["n_rate_kg_ha"])).sum())


def _coverage_run(n_worlds: int, n_sites: int, family: str, draws: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per world: interval hit, log of the estimate, and the interval's log half-width / 1.96."""
    import dask

    from pipeline.config import FitConfig
    from pipeline.methods.fitting import fit_crop

    act = _coverage_activity()
    truth = _true_national(act)
    fcfg = FitConfig(crops=["wheat"], covariates=["mean_temp_c"], min_records=30, min_sites=5)
    ecfg = EstimateConfig(draws=draws, seed=11, rel_error_n_rate=0.0, rel_error_area=0.0)
    hits, log_est, log_sd = [], [], []
    with dask.config.set(scheduler="sync"):
        for w in range(n_worlds):  # worlds 1000, 1001, ...: fixed before any result was seen
            m = fit_crop(_simulate_observations(1000 + w, n_sites), "wheat", family, fcfg)
            nat = estimate(act, InventoryModel({"wheat": m}, "fitted"), ecfg)["national"]
            r = nat[nat["crop"] == "all"].iloc[0]
            hits.append(r["n2o_n_kg_p2_5"] <= truth <= r["n2o_n_kg_p97_5"])
            log_est.append(np.log(r["n2o_n_kg_median"]))
            log_sd.append(np.log(r["n2o_n_kg_p97_5"] / r["n2o_n_kg_p2_5"]) / (2 * 1.959964))
    return np.array(hits), np.array(log_est) - np.log(truth), np.array(log_sd)


def test_interval_coverage_over_25_simulated_worlds() -> None:
    """Parameter uncertainty only (activity errors 0): the national 95 % interval of a Gamma GLM
    fitted to 40 sites covers the true total in 22/25 worlds (measured; 0.93 over 100 worlds with 80
    sites, see the slow test), and its width matches the spread of the estimates across worlds
    (measured: implied log-scale sd / empirical sd = 0.90)."""
    hits, log_err, log_sd = _coverage_run(25, 40, "glm_gamma", 200)
    assert hits.mean() >= 0.8  # P(< 20/25 | true coverage 0.95) = 0.7 %; at 0.90 it is 9 %
    # calibration of the width: the interval's implied log-scale sd against the empirical sd of
    # the log estimates over worlds (an over-wide interval would pass the hit count alone)
    ratio = log_sd.mean() / log_err.std(ddof=1)
    assert 0.7 < ratio < 1.4, ratio
    assert abs(log_err.mean()) < 3 * log_err.std(ddof=1) / np.sqrt(len(log_err))  # median-unbiased


def test_mixed_model_interval_coverage_over_25_simulated_worlds() -> None:
    """The same check for the mixed model, whose mean is exp(x'beta) x smearing. Without the
    smearing's uncertainty the interval was too narrow (measured: 0.84 over 100 worlds, width
    ratio 0.77); with log(smearing) drawn as a coefficient: 0.92 over these 25 worlds and 0.98 over
    100, width ratio 1.15-1.17 (slightly conservative)."""
    hits, log_err, log_sd = _coverage_run(25, 40, "mixed_lognormal", 200)
    assert hits.mean() >= 0.8
    ratio = log_sd.mean() / log_err.std(ddof=1)
    assert 0.85 < ratio < 1.5, ratio
    assert abs(log_err.mean()) < 3 * log_err.std(ddof=1) / np.sqrt(len(log_err))


@pytest.mark.slow
@pytest.mark.parametrize("n_sites,min_cov", [(30, 0.84), (80, 0.89)])
def test_interval_coverage_over_100_simulated_worlds(n_sites: int, min_cov: float) -> None:
    """Measured: 0.88 with 30 sites, 0.93 with 80 (Gamma GLM, fit.py cluster-robust covariance); the
    misses are mostly low (a skewed estimator in small samples), and shrink as sites grow."""
    hits, _, _ = _coverage_run(100, n_sites, "glm_gamma", 400)
    assert hits.mean() >= min_cov


def test_central_is_the_plug_in_and_the_draw_mean_carries_the_jensen_gap() -> None:
    """n2o_n_kg_central = area x model at its estimates (the formula, written out here); the mean
    over parameter draws of exp(x'b) runs above it by E[exp(z'x)] = exp(x'Sigma x / 2)."""
    act = _activity(n_counties=10, years=[2000])
    sd = 0.3
    cfg = EstimateConfig(draws=20_000, seed=3, rel_error_n_rate=0.0, rel_error_area=0.0, background="included")
    out = estimate(act, _model(sd), cfg)
    county = out["county"].merge(
        act, on=["county_code", "year", "crop", "area_ha", "n_rate_kg_ha"], suffixes=("", "_a")
    )
    np.testing.assert_allclose(county["n2o_n_kg_central"], _manual(county, "included"), rtol=1e-12)
    x = np.column_stack([np.ones(len(county)), county["n_rate_kg_ha"], county["mean_temp_c"] - 12.0])
    var = np.array([sd**2, (sd * 0.02) ** 2, (sd * 0.1) ** 2])
    gap = np.exp(0.5 * (x**2) @ var)
    np.testing.assert_allclose(county["n2o_n_kg_mean"] / county["n2o_n_kg_central"], gap, rtol=0.03)
    nat = out["national"].query("crop == 'all'")
    assert nat["n2o_n_kg_central"].iloc[0] == pytest.approx(county["n2o_n_kg_central"].sum(), rel=1e-12)
    assert (nat["forms_drawn"] == "").all()  # single-family models: no form column content


# ---------------------------------------------------------------------------------------------
# Task rows read where the task runs; what a task holds; exact sums
# ---------------------------------------------------------------------------------------------
def _tiled(act: pd.DataFrame, k: int) -> pd.DataFrame:
    """``k`` copies of ``act``, each copy's units with new county codes (the bench's tiling)."""
    return pd.concat([act.assign(county_code=act["county_code"] + j * 1_000_000) for j in range(k)], ignore_index=True)


class _RecordingRows:
    """Task rows from Parquet row groups (as on a cluster), remembering the slices asked for."""

    def __init__(self, folder) -> None:
        from pipeline.parallel import ParquetTaskRows

        self.inner = ParquetTaskRows(folder)
        self.blocks: list[slice] = []

    def __call__(self, activity, blocks):
        self.blocks += list(blocks)
        return self.inner(activity, blocks)


def _graph_of(act: pd.DataFrame, cfg: EstimateConfig, task_rows=None) -> tuple[dict, dict]:
    """The task graph that estimate() hands to the scheduler, and the tables it returns."""
    from dask.local import get_sync

    seen: dict = {}

    def get(dsk, keys, **kwargs):
        seen["graph"] = dict(dsk.__dask_graph__()) if hasattr(dsk, "__dask_graph__") else dict(dsk)
        return get_sync(seen["graph"], keys)

    with dask.config.set(scheduler=get):
        out = estimate(act, _model(), cfg, task_rows=task_rows)
    return seen["graph"], out


def test_tasks_reading_their_rows_from_parquet_give_the_same_bytes(tmp_path) -> None:
    act = _activity(30)
    act["province_code"] = np.where(act["county_code"] % 3 == 0, 45, act["province_code"])
    act = act.astype({"crop": pd.StringDtype(na_value=pd.NA)})  # as read from ingest's Parquet
    cfg = EstimateConfig(draws=50, seed=8, max_cells_per_task=1000, indirect=True)  # 20 rows per task
    rows = _RecordingRows(tmp_path)
    a, b = estimate(act, _model(), cfg), estimate(act, _model(), cfg, task_rows=rows)
    assert len(rows.blocks) > 8 and len(rows.inner.files) == 1
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k], check_exact=True)


def test_a_task_holds_a_bounded_number_of_rows_and_the_graph_no_rows(tmp_path) -> None:
    """With task rows read where tasks run, the graph's constants are the draws, the models and
    the province codes: the same bytes for 4x the units, and no table rows; every task reads at
    most max_cells_per_task / draws rows, however many units there are."""
    from dask._task_spec import DataNode
    from dask.sizeof import sizeof

    cfg = EstimateConfig(draws=50, seed=8, max_cells_per_task=1000)  # 20 rows per task
    held, const_bytes = [], []
    for k in (1, 4):
        rows = _RecordingRows(tmp_path / f"x{k}")
        graph, _ = _graph_of(_tiled(_activity(30), k), cfg, task_rows=rows)
        constants = [v.value for v in graph.values() if isinstance(v, DataNode)]
        assert not [c for c in constants if isinstance(c, pd.DataFrame)]
        const_bytes.append(sum(sizeof(c) for c in constants))
        held.append(max(b.stop - b.start for b in rows.blocks))
        assert sum(b.stop - b.start for b in rows.blocks) == 30 * k * 4 * 2  # every row, once
        rows.inner.close()
    assert held == [20, 20] and const_bytes[0] == const_bytes[1]
    # in memory (threads) the rows are graph constants of their own, a distributed client
    # scatters them: per crop, its 30 x 4 year rows in 6 blocks of 20
    graph, _ = _graph_of(_activity(30), cfg)
    assert sum(isinstance(v, DataNode) and isinstance(v.value, pd.DataFrame) for v in graph.values()) == 2 * 6


@pytest.mark.parametrize("crop_dtype", [pd.StringDtype(na_value=pd.NA), "str", pd.CategoricalDtype(["wheat", "rice"])])
def test_table_sums_are_a_groupby_on_the_key_columns_to_the_bit(crop_dtype) -> None:
    """Province and national area and mean sums equal pandas' groupby on the key columns exactly
    (the label-based sums must not fall into pandas' other summation order for sorted labels)."""
    act = _activity(40).astype({"crop": crop_dtype})
    out = estimate(act, _model(), EstimateConfig(draws=30, seed=2))
    srt = act.sort_values(["crop", "year", "province_code", "county_code"])  # as estimate() sorts it
    for table, keys in ((out["province"], ["province_code", "year", "crop"]), (out["national"], ["year", "crop"])):
        ref = srt.groupby(keys)["area_ha"].sum()
        got = table[table["crop"] != "all"].set_index(keys)["area_ha"]
        assert np.array_equal(got.loc[ref.index].to_numpy(), ref.to_numpy())
        ref_all = srt.groupby(keys[:-1])["area_ha"].sum()
        got_all = table[table["crop"] == "all"].set_index(keys[:-1])["area_ha"]
        assert np.array_equal(got_all.loc[ref_all.index].to_numpy(), ref_all.to_numpy())
        county = out["county"].sort_values(["crop", "year", "province_code", "county_code"])
        ref_m = county.groupby(keys)["n2o_n_kg_mean"].sum()
        got_m = table[table["crop"] != "all"].set_index(keys)["n2o_n_kg_mean"]
        assert np.array_equal(got_m.loc[ref_m.index].to_numpy(), ref_m.to_numpy())
    if isinstance(crop_dtype, pd.StringDtype):  # as the merge on a StringDtype(NA) column gave
        assert out["province"]["crop"].dtype == object


def test_in_place_emission_draws_are_the_expression_to_the_bit() -> None:
    from pipeline.methods.montecarlo import _summarise

    act = _activity(7, years=[2000])
    X = act[act["crop"] == "rice"]
    m = _model(sd=0.1).for_crop("rice")
    rng = np.random.default_rng(1)
    params = rng.multivariate_normal(m.coef, m.cov, size=64)
    mult = rng.lognormal(0.0, 0.1, (64, len(X)))
    e0 = m.background(X, params)
    n = X["n_rate_kg_ha"].to_numpy()
    expected = m.mean_emission(X, params) * np.exp(params[:, [1]] * n[None, :] * (mult - 1.0))
    e, bg = emission_draws(m, X, params, mult, "separate")
    assert np.array_equal(e, expected - e0) and np.array_equal(bg, e0)
    assert np.array_equal(emission_draws(m, X, params, mult, "included")[0], expected)
    a, b = _summarise(expected), _summarise(expected.copy(), overwrite=True)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_task_holds_five_draws_x_rows_arrays_at_its_peak() -> None:
    """Memory of one task (tracemalloc sees every NumPy buffer): five draws x rows float arrays
    at the peak with a log-linear model (seven before the products were taken in place), so
    max_cells_per_task bounds what a worker holds per running task."""
    import tracemalloc

    from pipeline.methods.montecarlo import _Block, _task, make_draws

    act = _activity(200, years=[2000]).sort_values(["crop", "year", "province_code", "county_code"])
    X = act[act["crop"] == "rice"].reset_index(drop=True)
    provinces = np.sort(act["province_code"].unique())
    cfg = EstimateConfig(draws=400, seed=3)
    d = make_draws(_model(), provinces, ("rice", "wheat"), cfg)
    args = (d.params["rice"], np.ascontiguousarray(d.n_mult[:, :, 0]), np.ascontiguousarray(d.area_mult[:, :, 0]))
    block = _Block(0, slice(0, len(X)))
    _task(X, block, _model().for_crop("rice"), *args, provinces, "separate", "2019", True)  # warm caches
    tracemalloc.start()
    try:
        _task(X, block, _model().for_crop("rice"), *args, provinces, "separate", "2019", True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one = cfg.draws * len(X) * 8
    assert 4 * one < peak < 5.5 * one, peak / one


def test_blocks_are_the_fewest_equal_cuts_of_each_crop_under_the_cap() -> None:
    """A task holds rows of one crop, any years, at most max_cells / draws of them; each crop
    is cut into the fewest such blocks, of sizes equal to within a row (no 1-row remainders),
    so the number of tasks grows with the rows, not with years x crops."""
    from pipeline.methods.montecarlo import _blocks

    act = _activity(10, years=[2000, 2001, 2002]).sort_values(["crop", "year", "province_code", "county_code"])
    act = act.reset_index(drop=True)
    crops = tuple(sorted(act["crop"].unique()))
    blocks = _blocks(act, crops, n_draws=50, max_cells=1000)  # 20 rows per task; 30 rows per crop
    sizes = [b.rows.stop - b.rows.start for b in blocks]
    assert sizes == [15, 15] * len(crops)
    assert [b.rows.start for b in blocks] == list(range(0, 30 * len(crops), 15))
    for b in blocks:
        assert act["crop"].iloc[b.rows].nunique() == 1 and crops[b.crop_index] == act["crop"].iloc[b.rows.start]
    assert act["year"].iloc[blocks[0].rows].nunique() == 2  # rows 0-14: two years in one task
    assert [b.rows.stop - b.rows.start for b in _blocks(act, crops, 50, 10_000)] == [30] * len(crops)
    # years x crops no longer set the count: 16x the rows give 16x the tasks at the cap
    big = pd.concat([act] * 16).sort_values(["crop", "year", "province_code", "county_code"], kind="stable")
    assert len(_blocks(big.reset_index(drop=True), crops, 50, 1000)) == 24 * len(crops)

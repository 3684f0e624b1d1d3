"""Tests of pipeline.breakpoints: published results (Nile, strucchange) and recovery of known
breaks from series generated here with noise (not by the code under test)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from pipeline.errors import ModelError
from pipeline.methods import breakpoints as bp
from pipeline.methods import mean_shift, slope_change

YEARS = np.arange(1990, 2015)
N_SEEDS = 100


def _nile():
    sm = pytest.importorskip("statsmodels.api")
    d = sm.datasets.nile.load_pandas().data
    return d["year"].to_numpy(float), d["volume"].to_numpy(float)


def _kink(rng, psi=2003.0, s1=11.2, s2=2.8, sd=3.0):
    return 200 + s1 * (YEARS - 1990) + (s2 - s1) * np.maximum(YEARS - psi, 0) + rng.normal(0, sd, YEARS.size)


def _two_kinks(rng):
    return (
        100
        + 10 * (YEARS - 1990)
        - 12 * np.maximum(YEARS - 1998, 0)
        + 8 * np.maximum(YEARS - 2007, 0)
        + rng.normal(0, 2, YEARS.size)
    )


def _line(rng):
    return 5 + 0.5 * (YEARS - 1990) + rng.normal(0, 1, YEARS.size)


def _level_shift(rng, last_old=2002, jump=3.0):
    return 10 + jump * (YEARS > last_old) + rng.normal(0, 1, YEARS.size)


# --- Bai (1997) distribution ----------------------------------------------------------------
def test_pargmax_symmetric_case_matches_known_quantile():
    # Homoskedastic case: the 97.5 % quantile of argmax(W(s) - |s|/2) is 11.03 (Bai 1997, Table).
    assert mean_shift._argmax_quantile(0.975, 1, 1, 1) == pytest.approx(11.03, abs=0.01)
    x = np.linspace(-60, 60, 241)
    cdf = mean_shift.pargmax_v(x, 1.3, 1.0, 1.7)
    assert np.all(np.diff(cdf) >= -1e-12)
    assert mean_shift.pargmax_v(-500.0, 1.3, 1.0, 1.7) < 1e-6 and mean_shift.pargmax_v(500.0, 1.3, 1.0, 1.7) > 1 - 1e-6
    sym = mean_shift.pargmax_v(x, 1, 1, 1)
    np.testing.assert_allclose(sym, 1 - sym[::-1], atol=1e-9)


# --- Bai-Perron machinery -------------------------------------------------------------------
def test_segment_rss_matches_brute_force():
    rng = np.random.default_rng(3)
    y = rng.normal(size=20) * 5 + 100
    X = mean_shift.design_matrix(20, "trend")
    rss = mean_shift.segment_rss(y, X, 3)
    for i, j in [(0, 19), (2, 9), (5, 7), (12, 19)]:
        beta, *_ = np.linalg.lstsq(X[i : j + 1], y[i : j + 1], rcond=None)
        assert rss[i, j] == pytest.approx(float(((y[i : j + 1] - X[i : j + 1] @ beta) ** 2).sum()), rel=1e-8)
    assert np.isinf(rss[4, 5])


def test_optimal_partition_matches_exhaustive_search():
    rng = np.random.default_rng(5)
    y = np.r_[rng.normal(0, 1, 8), rng.normal(3, 1, 7), rng.normal(-1, 1, 9)]
    X = mean_shift.design_matrix(y.size, "mean")
    h = 3
    rss = mean_shift.segment_rss(y, X, h)
    parts = mean_shift.optimal_partition(rss, 2, h)
    best = min(
        (
            (b1, b2)
            for b1, b2 in itertools.combinations(range(y.size), 2)
            if b1 >= h - 1 and b2 - b1 >= h and y.size - 1 - b2 >= h
        ),
        key=lambda b: rss[0, b[0]] + rss[b[0] + 1, b[1]] + rss[b[1] + 1, y.size - 1],
    )
    assert parts[2][0] == best


def test_nile_mean_shift_matches_strucchange():
    years, flow = _nile()
    r = bp.mean_shift_breaks(years, flow, "mean", max_breaks=5, min_segment=0.15)
    # strucchange: breakpoints(Nile ~ 1) -> 1898, confint 1895-1902; sup.F = 75.93.
    assert r["n_breaks"] == 1
    b = r["breaks"][0]
    assert (b["break_year"], b["first_year_new_regime"]) == (1898, 1899)
    assert (b["ci_low"], b["ci_high"]) == (1895, 1902)
    assert r["existence_test"]["statistic"] == pytest.approx(75.93, abs=0.01)
    assert r["existence_test"]["p_value"] < 0.001
    assert "LAST year of the old regime" in r["year_convention"]


def test_nile_default_trimming_interval_inside_issue_bounds():
    years, flow = _nile()
    r = bp.mean_shift_breaks(years, flow, "mean")  # the published Nile result is a mean shift
    b = r["breaks"][0]
    assert b["break_year"] == 1898 and 1893 <= b["ci_low"] <= b["ci_high"] <= 1904


# --- Synthetic recovery over many seeds -----------------------------------------------------
def _runs(gen, **kw):
    return [bp.segmented_breaks(YEARS, gen(np.random.default_rng(10_000 + s)), **kw) for s in range(N_SEEDS)]


def test_one_clear_kink_recovered():
    runs = _runs(_kink)
    ok = [r for r in runs if r["n_breaks"] == 1]
    assert len(ok) >= 0.9 * N_SEEDS
    assert all(abs(r["breaks"][0]["break_year"] - 2003) <= 1 for r in ok)
    # slopes and kink recovered within their 95 % intervals about 95 % of the time
    for seg, truth in ((0, 11.2), (1, 2.8)):
        assert np.mean([r["slopes"][seg]["ci_low"] <= truth <= r["slopes"][seg]["ci_high"] for r in ok]) >= 0.88
    assert np.mean([r["breaks"][0]["ci_low"] <= 2003 <= r["breaks"][0]["ci_high"] for r in ok]) >= 0.88
    assert np.mean([r["breaks"][0]["profile_ci_low"] <= 2003 <= r["breaks"][0]["profile_ci_high"] for r in ok]) >= 0.88


def test_two_kinks_recovered():
    runs = _runs(_two_kinks)
    ok = [r for r in runs if r["n_breaks"] == 2]
    assert len(ok) >= 0.9 * N_SEEDS
    yrs = np.array([[b["break_year"] for b in r["breaks"]] for r in ok])
    assert np.all(np.abs(yrs - [1998, 2007]) <= 1)


def test_straight_line_gives_no_break_and_says_so():
    runs = _runs(_line)
    none = [r for r in runs if r["n_breaks"] == 0]
    assert len(none) >= 0.9 * N_SEEDS
    assert all(mean_shift.NO_BREAK_TEXT in r["conclusion"] for r in runs if not r["significant"])


def test_level_shift_found_by_mean_shift_method():
    runs = [
        bp.mean_shift_breaks(YEARS, _level_shift(np.random.default_rng(20_000 + s)), "mean") for s in range(N_SEEDS)
    ]
    ok = [r for r in runs if r["n_breaks"] == 1]
    assert len(ok) >= 0.9 * N_SEEDS
    assert np.mean([abs(r["breaks"][0]["break_year"] - 2002) <= 1 for r in ok]) >= 0.9
    flat = [
        bp.mean_shift_breaks(YEARS, 10 + np.random.default_rng(30_000 + s).normal(0, 1, YEARS.size), "mean")
        for s in range(N_SEEDS)
    ]
    assert sum(r["n_breaks"] == 0 for r in flat) >= 0.9 * N_SEEDS


def test_existence_tests_false_positive_rate_near_nominal():
    # 2,000 straight lines with noise from a seed unrelated to the null table's: the simulated
    # sup-F test must reject about 5 % of them (binomial sd 0.5 %).
    rng = np.random.default_rng(777)
    Y = 3 + 0.2 * (YEARS - 1990) + rng.normal(0, 1, (2000, YEARS.size))
    stat = slope_change._sup_f_kink(YEARS.astype(float), Y, slope_change.kink_grid(YEARS.astype(float), 1, 4))
    null = slope_change._null_sup_f_kink(tuple(float(v) for v in YEARS), 4, 4000, 0)
    p = np.array([mean_shift.mc_pvalue(s, null) for s in stat])
    assert 0.035 <= np.mean(p < 0.05) <= 0.065
    Z = 10 + rng.normal(0, 1, (2000, YEARS.size))
    statm = mean_shift._sup_f_shift(Z, mean_shift.design_matrix(YEARS.size, "mean"), 4)
    nullm = mean_shift._null_sup_f_shift(YEARS.size, "mean", 4, 4000, 0)
    pm = np.array([mean_shift.mc_pvalue(s, nullm) for s in statm])
    assert 0.035 <= np.mean(pm < 0.05) <= 0.065


# --- Behaviour ------------------------------------------------------------------------------
def test_deterministic_and_json_ready():
    y = _kink(np.random.default_rng(1))
    a = json.dumps(bp.analyse_series(YEARS, y), sort_keys=True)
    b = json.dumps(bp.analyse_series(YEARS, y), sort_keys=True)
    assert a == b


def test_muggeo_failure_falls_back_to_profile_optimum(monkeypatch):
    y = _kink(np.random.default_rng(2))
    ref = bp.segmented_breaks(YEARS, y, max_breaks=1)
    monkeypatch.setattr(slope_change, "_muggeo", lambda *a, **k: None)
    r = bp.segmented_breaks(YEARS, y, max_breaks=1)
    assert r["converged"] is False and r["n_breaks"] == 1
    assert r["breaks"][0]["break_year"] == pytest.approx(ref["breaks"][0]["break_year"], abs=0.051)
    assert r["breaks"][0]["se"] > 0


def test_draw_break_years_match_single_fit():
    rng = np.random.default_rng(4)
    draws = np.stack([_kink(rng) for _ in range(50)])
    yrs = slope_change.kink_year_draws(YEARS, draws)
    singles = [bp.segmented_breaks(YEARS, d, max_breaks=1)["breaks"][0]["break_year"] for d in draws[:5]]
    np.testing.assert_allclose(yrs[:5], singles, atol=0.051)


def test_summary_table_and_bad_series():
    y = _kink(np.random.default_rng(6))
    tab = bp.summary_table(bp.analyse_series(YEARS, y))
    assert set(tab["method"]) == {"slope_change", "mean_shift"}
    with pytest.raises(ModelError):
        bp.segmented_breaks(YEARS[:6], y[:6])
    with pytest.raises(ModelError):
        bp.mean_shift_breaks(np.r_[YEARS, 2014], np.r_[y, 1.0])


# --- Issue 12 item 7: Davies as R, a kink interval stable on data years, trend by default ----
def test_davies_p_value_is_r_segmented_davies_test():
    """The reported Davies p-value is pipeline.methods.davies (R segmented::davies.test, lm
    route; matched to R in tests/test_davies.py), not piecewise-regression's jump-and-slope test."""
    from pipeline.methods.davies import davies_test

    for seed in (1, 2, 3):
        y = _kink(np.random.default_rng(seed), sd=8.0)
        r = bp.segmented_breaks(YEARS, y, max_breaks=1, n_sim=199)
        assert r["existence_test"]["davies"]["p_value"] == pytest.approx(davies_test(YEARS, y)["p_value"], rel=1e-12)
    line = _line(np.random.default_rng(9))
    p = bp.segmented_breaks(YEARS, line, max_breaks=1, n_sim=199)["existence_test"]["davies"]["p_value"]
    assert p == pytest.approx(davies_test(YEARS, line)["p_value"], rel=1e-12) and p > 0.05


def test_kink_interval_is_profile_and_stable_on_a_data_year():
    """The primary kink interval is the profile-likelihood F interval: shifting the series so the
    optimum moves across a data year by 2e-7 yr moves the interval by about as much, where the
    Muggeo SE jumps (supplementary, wald_ci_*)."""
    t = YEARS.astype(float)
    noise = np.random.default_rng(5).normal(0, 3.0, t.size)
    out = []
    for eps in (-1e-7, 1e-7):
        y = 200 + 11.2 * (t - 1990) - 8.4 * np.maximum(t - (2003.0 + eps), 0) + noise
        b = bp.segmented_breaks(YEARS, y, max_breaks=1, n_sim=199)["breaks"][0]
        assert b["interval_method"] == "profile likelihood F"
        assert b["ci_low"] == b["profile_ci_low"] and b["ci_high"] == b["profile_ci_high"]
        assert b["ci_low"] < b["break_year"] < b["ci_high"] and not (b["truncated_low"] or b["truncated_high"])
        out.append((b["ci_low"], b["ci_high"]))
    assert abs(out[0][0] - out[1][0]) < 1e-3 and abs(out[0][1] - out[1][1]) < 1e-3, out


def test_kink_interval_truncation_is_flagged_when_the_data_do_not_locate_it():
    """A nearly straight noisy line: the profile set reaches a search bound and says so."""
    y = (
        5
        + 0.5 * (YEARS - 1990)
        + 0.05 * np.maximum(YEARS - 2001, 0)
        + np.random.default_rng(3).normal(0, 2, YEARS.size)
    )
    r = slope_change._describe_kinks(
        YEARS.astype(float),
        y,
        1,
        {
            "psi": np.array([2001.0]),
            "rss": 0.0,
            "muggeo": None,
            "grid": slope_change.kink_grid(YEARS.astype(float), 1, 4),
        },
        0.05,
    )
    b = r["breaks"][0]
    assert b["truncated_low"] or b["truncated_high"]
    assert b["interval_method"] == "profile likelihood F" and b["wald_ci_low"] is None


def test_mean_shift_default_models_the_trend():
    """Straight trending lines (no break of any kind): y ~ 1 (the old CLI default) cuts them into
    spurious level steps; y ~ 1 + t (the default of mean_shift_breaks and analyse_series now)
    finds no break in about 95 % of them."""
    lines = [_line(np.random.default_rng(40_000 + s)) for s in range(20)]
    spurious = [bp.mean_shift_breaks(YEARS, y, "mean", n_sim=999)["n_breaks"] for y in lines]
    assert sum(n >= 1 for n in spurious) >= 18
    r = bp.analyse_series(YEARS, lines[0], n_sim=999)
    assert r["mean_shift"]["regressors"] == "trend"
    trend = [bp.mean_shift_breaks(YEARS, y, n_sim=999)["n_breaks"] for y in lines]
    assert sum(n == 0 for n in trend) >= 17

"""Davies' test and the kink interval against R (segmented, strucchange), and the mean-shift check.

Reference numbers: printed by ``benchmarks/r/segmented_reference.R`` (R 4.2.2 Patched
2022-11-10 r83330, segmented 1.6.2, strucchange 1.5.3; Debian bookworm packages), recorded in
``benchmarks/r/segmented_reference_output.txt`` and copied here, so CI needs no R. Series:
``faostat`` (FAOSTAT synthetic-fertilizer N2O, geo 351 "China", kt N2O, 1990-2014), ``edgar``
(EDGAR v4.3.2 China sector 4D1, Gg N2O, 1990-2012), ``synth`` (the script's deterministic
broken line with a kink at 2004.5).

Tolerances: Davies p-values 1e-6 relative. The match is ~2e-8 relative on the lm route and
~1e-12 on the glm route: R's ``daviesLM`` inverts ``crossprod`` of the raw-year design
(condition number ~1e13), its glm route uses a QR; R's own lm-route and glm-route Wald statistics
differ by the same 1e-8 (checked below), ours agree with R's QR route to 1e-12.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.methods.breakpoints import mean_shift_breaks  # read-only; rename here
from pipeline.methods.davies import davies_grid, davies_test
from pipeline.methods.kink_interval import (
    bootstrap_kink_interval,
    broken_line_slopes,
    fit_kink,
    profile_kink_interval,
    profile_rss,
)

# Copied from benchmarks/r/segmented_reference_output.txt (R 4.2.2, segmented 1.6.2, strucchange 1.5.3).
R_REF: dict[str, dict[str, float]] = {
    "faostat": {
        "davies_lm_k10_two.sided_p": 0.97387143830396672,
        "davies_lm_k10_two.sided_best": 2000.7777777777778,
        "davies_lm_k10_two.sided_stat_01": 0.52027430160652943,
        "davies_lm_k10_two.sided_stat_02": 0.61431775587350523,
        "davies_lm_k10_two.sided_stat_03": -0.1927889195721412,
        "davies_lm_k10_two.sided_stat_04": 0.45348938466428973,
        "davies_lm_k10_two.sided_stat_05": 0.89922435066778339,
        "davies_lm_k10_two.sided_stat_06": 0.65392022674542694,
        "davies_lm_k10_two.sided_stat_07": 0.36713769261564788,
        "davies_lm_k10_two.sided_stat_08": 0.10146781138739024,
        "davies_lm_k10_two.sided_stat_09": -0.15706292872315381,
        "davies_lm_k10_two.sided_stat_10": -0.31417524070270492,
        "davies_lm_k10_less_p": 0.79323303345738827,
        "davies_lm_k10_less_best": 2013,
        "davies_lm_k10_greater_p": 0.48693571915198336,
        "davies_lm_k10_greater_best": 2000.7777777777778,
        "davies_lm_k25_two.sided_p": 1,
        "davies_lm_k25_two.sided_best": 2001.0833333333333,
        "davies_lm_k25_less_p": 1,
        "davies_lm_k25_less_best": 2013,
        "davies_lm_k25_greater_p": 0.64438068225660294,
        "davies_lm_k25_greater_best": 2001.0833333333333,
        "davies_glm_lrt_k10_two.sided_p": 1,
        "davies_glm_lrt_k10_two.sided_best": 2000.7777777777778,
        "davies_glm_lrt_k10_two.sided_stat_01": 0.52027432776368487,
        "davies_glm_lrt_k10_two.sided_stat_02": 0.6143177649011744,
        "davies_glm_lrt_k10_two.sided_stat_03": -0.19278891607960064,
        "davies_glm_lrt_k10_two.sided_stat_04": 0.4534893845911806,
        "davies_glm_lrt_k10_two.sided_stat_05": 0.89922434838150267,
        "davies_glm_lrt_k10_two.sided_stat_06": 0.65392022607252231,
        "davies_glm_lrt_k10_two.sided_stat_07": 0.36713769117519979,
        "davies_glm_lrt_k10_two.sided_stat_08": 0.10146781331061473,
        "davies_glm_lrt_k10_two.sided_stat_09": -0.15706292743173572,
        "davies_glm_lrt_k10_two.sided_stat_10": -0.31417523940140962,
        "davies_glm_lrt_k10_less_p": 0.98551001936485472,
        "davies_glm_lrt_k10_less_best": 2013,
        "davies_glm_lrt_k10_greater_p": 0.61117392738281495,
        "davies_glm_lrt_k10_greater_best": 2000.7777777777778,
        "davies_glm_wald_k10_two.sided_p": 1,
        "davies_glm_wald_k10_two.sided_best": 2000.7777777777778,
        "davies_glm_wald_k10_two.sided_stat_01": 0.52027432776347882,
        "davies_glm_wald_k10_two.sided_stat_02": 0.61431776490125589,
        "davies_glm_wald_k10_two.sided_stat_03": -0.19278891608041332,
        "davies_glm_wald_k10_two.sided_stat_04": 0.45348938459071092,
        "davies_glm_wald_k10_two.sided_stat_05": 0.89922434838121978,
        "davies_glm_wald_k10_two.sided_stat_06": 0.65392022607326972,
        "davies_glm_wald_k10_two.sided_stat_07": 0.36713769117599165,
        "davies_glm_wald_k10_two.sided_stat_08": 0.1014678133118031,
        "davies_glm_wald_k10_two.sided_stat_09": -0.15706292743631164,
        "davies_glm_wald_k10_two.sided_stat_10": -0.31417523940229825,
        "davies_glm_wald_k10_less_p": 0.98551001936478722,
        "davies_glm_wald_k10_less_best": 2013,
        "davies_glm_wald_k10_greater_p": 0.61117392738330734,
        "davies_glm_wald_k10_greater_best": 2000.7777777777778,
        "pscore_p": 0.64808650251371702,
        "seg_psi": 2000.9997204214731,
        "seg_psi_se": 8.2531343335804905,
        "confint_delta_low": 1983.8363879989599,
        "confint_delta_high": 2018.16305284398,
        "confint_score_low": 1990.48,
        "confint_score_high": 2013.52,
        "slope1": 9.4032228637241708,
        "slope1_se": 2.5617331992049501,
        "slope2": 12.07846419034,
        "slope2_se": 1.7813101342600199,
        "wald_se_at_-1e-07": 9.3586917431641812,
        "wald_se_at_0e+00": 7.9178244980837862,
        "wald_se_at_1e-07": 7.917824498083788,
        "profile_rss_min": 15159.303159345463,
        "profile_F95_low": 1991,
        "profile_F95_high": 2013,
        "strucchange_trend_rss_m0": 15732.435353799479,
        "strucchange_trend_rss_m1": 11478.783813819922,
        "strucchange_trend_rss_m2": 3196.4128431755603,
        "strucchange_mean_rss_m0": 170225.17931020638,
        "strucchange_mean_rss_m1": 46439.147409004945,
        "strucchange_mean_rss_m2": 18909.252641212999,
    },
    "edgar": {
        "davies_lm_k10_two.sided_p": 0.12482805674807454,
        "davies_lm_k10_two.sided_best": 2002.1111111111111,
        "davies_lm_k10_two.sided_stat_01": 1.0496396673301194,
        "davies_lm_k10_two.sided_stat_02": 1.4364920360499513,
        "davies_lm_k10_two.sided_stat_03": 0.99947902995440707,
        "davies_lm_k10_two.sided_stat_04": 1.6829906833237886,
        "davies_lm_k10_two.sided_stat_05": 2.4502635497094967,
        "davies_lm_k10_two.sided_stat_06": 2.6145120872644361,
        "davies_lm_k10_two.sided_stat_07": 2.1948394867478944,
        "davies_lm_k10_two.sided_stat_08": 1.2066833482218304,
        "davies_lm_k10_two.sided_stat_09": 0.3097607860570486,
        "davies_lm_k10_two.sided_stat_10": -0.028183585457990226,
        "davies_lm_k10_less_p": 1,
        "davies_lm_k10_less_best": 2011,
        "davies_lm_k10_greater_p": 0.06241402837403727,
        "davies_lm_k10_greater_best": 2002.1111111111111,
        "davies_lm_k25_two.sided_p": 0.11389005003142176,
        "davies_lm_k25_two.sided_best": 2001,
        "davies_lm_k25_less_p": 1,
        "davies_lm_k25_less_best": 2011,
        "davies_lm_k25_greater_p": 0.05694502501571088,
        "davies_lm_k25_greater_best": 2001,
        "davies_glm_lrt_k10_two.sided_p": 0.075395815167850863,
        "davies_glm_lrt_k10_two.sided_best": 2002.1111111111111,
        "davies_glm_lrt_k10_two.sided_stat_01": 1.0496396527930631,
        "davies_glm_lrt_k10_two.sided_stat_02": 1.4364920304918176,
        "davies_glm_lrt_k10_two.sided_stat_03": 0.99947904494463513,
        "davies_glm_lrt_k10_two.sided_stat_04": 1.6829906795066345,
        "davies_glm_lrt_k10_two.sided_stat_05": 2.4502635442306846,
        "davies_glm_lrt_k10_two.sided_stat_06": 2.6145120938150614,
        "davies_glm_lrt_k10_two.sided_stat_07": 2.1948394908381736,
        "davies_glm_lrt_k10_two.sided_stat_08": 1.2066833498657046,
        "davies_glm_lrt_k10_two.sided_stat_09": 0.30976078455692024,
        "davies_glm_lrt_k10_two.sided_stat_10": -0.028183576593029214,
        "davies_glm_lrt_k10_less_p": 1,
        "davies_glm_lrt_k10_less_best": 2011,
        "davies_glm_lrt_k10_greater_p": 0.037697907583925432,
        "davies_glm_lrt_k10_greater_best": 2002.1111111111111,
        "davies_glm_wald_k10_two.sided_p": 0.075395815167809244,
        "davies_glm_wald_k10_two.sided_best": 2002.1111111111111,
        "davies_glm_wald_k10_two.sided_stat_01": 1.0496396527929768,
        "davies_glm_wald_k10_two.sided_stat_02": 1.4364920304918065,
        "davies_glm_wald_k10_two.sided_stat_03": 0.99947904494410433,
        "davies_glm_wald_k10_two.sided_stat_04": 1.6829906795065597,
        "davies_glm_wald_k10_two.sided_stat_05": 2.4502635442301459,
        "davies_glm_wald_k10_two.sided_stat_06": 2.6145120938149384,
        "davies_glm_wald_k10_two.sided_stat_07": 2.1948394908386448,
        "davies_glm_wald_k10_two.sided_stat_08": 1.2066833498660843,
        "davies_glm_wald_k10_two.sided_stat_09": 0.30976078455560735,
        "davies_glm_wald_k10_two.sided_stat_10": -0.028183576587085701,
        "davies_glm_wald_k10_less_p": 1,
        "davies_glm_wald_k10_less_best": 2011,
        "davies_glm_wald_k10_greater_p": 0.037697907583904622,
        "davies_glm_wald_k10_greater_best": 2002.1111111111111,
        "pscore_p": 0.077611920027716275,
        "seg_psi": 2001.0000089960447,
        "seg_psi_se": 2.5766423937846588,
        "confint_delta_low": 1995.6070344862501,
        "confint_delta_high": 2006.39298350584,
        "confint_score_low": 1996.5150180903099,
        "confint_score_high": 2004.71741094817,
        "slope1": 9.7326004393444805,
        "slope1_se": 2.02062587145002,
        "slope2": 17.6514261460634,
        "slope2_se": 2.3038679619467501,
        "wald_se_at_-1e-07": 2.6543708043432943,
        "wald_se_at_0e+00": 2.5948985681252847,
        "wald_se_at_1e-07": 2.5948985622721241,
        "profile_rss_min": 11093.317331158789,
        "profile_F95_low": 1992.5555114393053,
        "profile_F95_high": 2005.9986663757907,
        "strucchange_trend_rss_m0": 15082.077637829543,
        "strucchange_trend_rss_m1": 9437.8899509184976,
        "strucchange_trend_rss_m2": 4691.2705375115065,
        "strucchange_mean_rss_m0": 204802.83162962444,
        "strucchange_mean_rss_m1": 47565.978439758823,
        "strucchange_mean_rss_m2": 14884.851466710235,
    },
    "synth": {
        "davies_lm_k10_two.sided_p": 5.6875300765763088e-10,
        "davies_lm_k10_two.sided_best": 2005.6666666666667,
        "davies_lm_k10_two.sided_stat_01": -0.77849334701718254,
        "davies_lm_k10_two.sided_stat_02": -2.1037819726206251,
        "davies_lm_k10_two.sided_stat_03": -2.9756401877430769,
        "davies_lm_k10_two.sided_stat_04": -4.2385953324505534,
        "davies_lm_k10_two.sided_stat_05": -6.1303553149769199,
        "davies_lm_k10_two.sided_stat_06": -9.6154593611534036,
        "davies_lm_k10_two.sided_stat_07": -12.862128404926514,
        "davies_lm_k10_two.sided_stat_08": -8.1718558515234339,
        "davies_lm_k10_two.sided_stat_09": -4.8967807847815461,
        "davies_lm_k10_two.sided_stat_10": -2.5785955232211402,
        "davies_lm_k10_less_p": 2.8437650382881544e-10,
        "davies_lm_k10_less_best": 2005.6666666666667,
        "davies_lm_k10_greater_p": 1,
        "davies_lm_k10_greater_best": 1991,
        "davies_lm_k25_two.sided_p": 3.1777919262857864e-10,
        "davies_lm_k25_two.sided_best": 2004.75,
        "davies_lm_k25_less_p": 1.5888959631428932e-10,
        "davies_lm_k25_less_best": 2004.75,
        "davies_lm_k25_greater_p": 1,
        "davies_lm_k25_greater_best": 1991,
        "davies_glm_lrt_k10_two.sided_p": 1.0712724210262378e-35,
        "davies_glm_lrt_k10_two.sided_best": 2005.6666666666667,
        "davies_glm_lrt_k10_two.sided_stat_01": -0.77849329541959966,
        "davies_glm_lrt_k10_two.sided_stat_02": -2.1037819523848462,
        "davies_glm_lrt_k10_two.sided_stat_03": -2.975640179099567,
        "davies_glm_lrt_k10_two.sided_stat_04": -4.2385953325788917,
        "davies_glm_lrt_k10_two.sided_stat_05": -6.1303553223746485,
        "davies_glm_lrt_k10_two.sided_stat_06": -9.6154593642562709,
        "davies_glm_lrt_k10_two.sided_stat_07": -12.862128413415439,
        "davies_glm_lrt_k10_two.sided_stat_08": -8.1718558437986157,
        "davies_glm_lrt_k10_two.sided_stat_09": -4.8967807810639785,
        "davies_glm_lrt_k10_two.sided_stat_10": -2.5785955202160951,
        "davies_glm_lrt_k10_less_p": 5.3563621051311889e-36,
        "davies_glm_lrt_k10_less_best": 2005.6666666666667,
        "davies_glm_lrt_k10_greater_p": 1,
        "davies_glm_lrt_k10_greater_best": 1991,
        "davies_glm_wald_k10_two.sided_p": 1.071272421038119e-35,
        "davies_glm_wald_k10_two.sided_best": 2005.6666666666667,
        "davies_glm_wald_k10_two.sided_stat_01": -0.77849329541796297,
        "davies_glm_wald_k10_two.sided_stat_02": -2.1037819523839745,
        "davies_glm_wald_k10_two.sided_stat_03": -2.9756401790987752,
        "davies_glm_wald_k10_two.sided_stat_04": -4.2385953325798695,
        "davies_glm_wald_k10_two.sided_stat_05": -6.1303553223763974,
        "davies_glm_wald_k10_two.sided_stat_06": -9.615459364256802,
        "davies_glm_wald_k10_two.sided_stat_07": -12.862128413414576,
        "davies_glm_wald_k10_two.sided_stat_08": -8.1718558437993387,
        "davies_glm_wald_k10_two.sided_stat_09": -4.8967807810638941,
        "davies_glm_wald_k10_two.sided_stat_10": -2.5785955202161923,
        "davies_glm_wald_k10_less_p": 5.3563621051905951e-36,
        "davies_glm_wald_k10_less_best": 2005.6666666666667,
        "davies_glm_wald_k10_greater_p": 1,
        "davies_glm_wald_k10_greater_best": 1991,
        "pscore_p": 0.00043743158561416345,
        "seg_psi": 2004.9999989622243,
        "seg_psi_se": 0.49547784112376902,
        "confint_delta_low": 2003.96959638407,
        "confint_delta_high": 2006.0304015403799,
        "confint_score_low": 2004.41032585327,
        "confint_score_high": 2005.97937510003,
        "slope1": 9.7371425017186599,
        "slope1_se": 0.25295458110740399,
        "slope2": 2.8992508638616998,
        "slope2_se": 0.46600930708487398,
        "wald_se_at_-1e-07": 0.4784345317421696,
        "wald_se_at_0e+00": 0.54352461303887167,
        "wald_se_at_1e-07": 0.54352460863191243,
        "profile_rss_min": 376.23773372551489,
        "profile_F95_low": 2004.284515325455,
        "profile_F95_high": 2005.9213608102282,
        "strucchange_trend_rss_m0": 3570.0845824387452,
        "strucchange_trend_rss_m1": 345.31810651452975,
        "strucchange_trend_rss_m2": 292.64721755453962,
        "strucchange_mean_rss_m0": 77241.655597911362,
        "strucchange_mean_rss_m1": 15395.29958035834,
        "strucchange_mean_rss_m2": 6174.135702273953,
    },
}

ALTS = ("two.sided", "less", "greater")
FAOSTAT = "faostat_china_extracts/ddf_unfao_faostat_gt_synthetic_fertilizers_emissions_n2o_china.csv"
EDGAR = "edgar_v432/edgar_v432_N2O_CHN_by_IPCC1996_1970_2012_Gg.csv"


def synth_series() -> tuple[np.ndarray, np.ndarray]:
    """The R script's synthetic series (deterministic 'noise' 6 sin(1.3 i^1.5))."""
    t = np.arange(1990, 2015, dtype=float)
    i = np.arange(1, t.size + 1, dtype=float)
    return t, 400 + 10 * (t - 1990) - 7 * np.maximum(t - 2004.5, 0) + 6 * np.sin(1.3 * i**1.5)


def load_series(name: str, shared) -> tuple[np.ndarray, np.ndarray]:
    if name == "synth":
        return synth_series()
    if name == "faostat":
        d = pd.read_csv(shared / FAOSTAT)
        d = d[(d["geo"] == 351) & d["year"].between(1990, 2014)].sort_values("year")
        return d["year"].to_numpy(float), d["gt_synthetic_fertilizers_emissions_n2o"].to_numpy(float)
    d = pd.read_csv(shared / EDGAR)
    row = d[d["IPCC"] == "4D1"].iloc[0]
    years = np.arange(1990, 2013)
    return years.astype(float), row[[str(y) for y in years]].to_numpy(float)


@pytest.fixture(params=["faostat", "edgar", "synth"])
def series(request):
    name = request.param
    shared = None if name == "synth" else request.getfixturevalue("shared_data")
    t, y = load_series(name, shared)
    return name, t, y


def close(a: float, b: float, rel: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0) or a == b


# --------------------------------------------------------------------------------- Davies ----
@pytest.mark.parametrize("k", [10, 25])
@pytest.mark.parametrize("alt", ALTS)
def test_davies_lm_route_matches_r(series, k, alt):
    name, t, y = series
    r = davies_test(t, y, k=k, alternative=alt)
    ref = R_REF[name]
    assert r["route"] == "lm" and r["n_points"] == k
    assert close(r["p_value"], ref[f"davies_lm_k{k}_{alt}_p"], 1e-6)
    assert r["best_at"] == pytest.approx(ref[f"davies_lm_k{k}_{alt}_best"], abs=1e-9)


@pytest.mark.parametrize("type_", ["lrt", "wald"])
@pytest.mark.parametrize("alt", ALTS)
def test_davies_glm_route_matches_r(series, type_, alt):
    name, t, y = series
    r = davies_test(t, y, alternative=alt, type=type_, route="glm")
    assert close(r["p_value"], R_REF[name][f"davies_glm_{type_}_k10_{alt}_p"], 1e-6)
    assert r["best_at"] == pytest.approx(R_REF[name][f"davies_glm_{type_}_k10_{alt}_best"], abs=1e-9)


def test_davies_process_and_grid_match_r(series):
    name, t, y = series
    r = davies_test(t, y)
    ref = np.array([R_REF[name][f"davies_lm_k10_two.sided_stat_{j:02d}"] for j in range(1, 11)])
    np.testing.assert_allclose(r["process"], ref, rtol=0, atol=1e-6)
    grid = davies_grid(t)
    assert grid[0] == t[1] and grid[-1] == t[-2] and grid.size == 10
    # the t process equals the glm Wald process (same statistic, R's routes differ by rounding only)
    np.testing.assert_allclose(r["process"], davies_test(t, y, route="glm", type="wald")["process"], atol=1e-9)


def test_davies_type_is_ignored_by_lm_route_and_lrt_equals_wald_for_gaussian():
    t, y = synth_series()
    assert davies_test(t, y, type="lrt") == davies_test(t, y, type="wald")
    lrt = davies_test(t, y, route="glm", type="lrt")
    wald = davies_test(t, y, route="glm", type="wald")
    np.testing.assert_allclose(lrt["process"], wald["process"], rtol=1e-10)
    # R's auto route for n > 300 is the glm route with type "wald"
    tt = np.arange(400, dtype=float)
    yy = 0.01 * tt + np.sin(tt)
    assert davies_test(tt, yy)["route"] == "glm" and davies_test(tt, yy)["type"] == "wald"


def test_davies_synthetic_kink_is_detected_one_sided():
    t, y = synth_series()
    assert davies_test(t, y)["p_value"] < 1e-8
    assert davies_test(t, y, alternative="less")["p_value"] < 1e-8  # the slope decreases
    assert davies_test(t, y, alternative="greater")["p_value"] == 1.0


def test_davies_rejects_bad_arguments():
    t, y = synth_series()
    with pytest.raises(ValueError):
        davies_test(t, y, k=1)
    with pytest.raises(ValueError):
        davies_test(t, y, alternative="two_sided")
    with pytest.raises(ValueError):
        davies_test(t, y, type="score")


def test_old_piecewise_regression_route_differs_from_r_on_faostat(shared_data):
    """The route the old ``_davies`` used: 0.3918 on FAOSTAT where R segmented gives 0.9739."""
    from piecewise_regression.davies import davies_test as pw_davies

    t, y = load_series("faostat", shared_data)
    old = float(min(1.0, pw_davies(t, y)))
    assert old == pytest.approx(0.39177, abs=5e-5)
    assert R_REF["faostat"]["davies_lm_k10_two.sided_p"] == pytest.approx(0.97387, abs=5e-5)
    assert davies_test(t, y)["p_value"] - old > 0.5


# ------------------------------------------------------------------------- kink interval ----
def test_fit_and_profile_interval_match_r(series):
    name, t, y = series
    ref = R_REF[name]
    f = fit_kink(t, y)
    assert f["rss"] == pytest.approx(ref["profile_rss_min"], rel=1e-9)
    # segmented stops just off the corner of RSS(psi) at the data year; both RSS agree to 2e-6
    assert abs(f["psi"] - ref["seg_psi"]) < 1e-3 and f["on_data_year"]
    iv = profile_kink_interval(t, y)
    assert iv["low"] == pytest.approx(ref["profile_F95_low"], abs=1e-6)
    assert iv["high"] == pytest.approx(ref["profile_F95_high"], abs=1e-6)


def test_profile_interval_flags_truncation_on_faostat(shared_data):
    t, y = load_series("faostat", shared_data)
    iv = profile_kink_interval(t, y)
    assert iv["truncated_low"] and iv["truncated_high"]  # the data do not locate the kink


@pytest.mark.parametrize("name", ["faostat", "edgar", "synth"])
def test_profile_interval_is_stable_when_psi_sits_on_a_data_year(name, request):
    shared = None if name == "synth" else request.getfixturevalue("shared_data")
    t, y = load_series(name, shared)
    year = float(round(fit_kink(t, y)["psi"]))
    ivs = [profile_kink_interval(t, y, psi_hat=year + h) for h in (-1e-7, 0.0, 1e-7)]
    for iv in ivs[::2]:
        assert abs(iv["low"] - ivs[1]["low"]) < 1e-3 and abs(iv["high"] - ivs[1]["high"]) < 1e-3
    # ... where the Muggeo (Wald) SE recorded from R jumps
    se_below, se_at = R_REF[name]["wald_se_at_-1e-07"], R_REF[name]["wald_se_at_0e+00"]
    assert abs(se_below - se_at) / se_at > 0.02


def test_slopes_match_r_segmented_slope(series):
    name, t, y = series
    ref = R_REF[name]
    s = broken_line_slopes(t, y, ref["seg_psi"])
    assert s["slope_before"]["estimate"] == pytest.approx(ref["slope1"], rel=1e-8)
    assert s["slope_after"]["estimate"] == pytest.approx(ref["slope2"], rel=1e-8)
    # SEs: our linearisation vs segmented's final one differ by up to 2 % at a corner optimum
    assert s["slope_before"]["se"] == pytest.approx(ref["slope1_se"], rel=0.02)
    assert s["slope_after"]["se"] == pytest.approx(ref["slope2_se"], rel=0.02)


def test_profile_rss_is_continuous_across_a_data_year():
    t, y = synth_series()
    r = profile_rss(t, y, [2005 - 1e-7, 2005.0, 2005 + 1e-7])
    assert np.ptp(r) < 1e-4


def _simulate(seed: int, sigma: float = 6.0) -> tuple[float, np.ndarray, np.ndarray]:
    """Own simulator: continuous broken line, n = 25, Gaussian noise, kink uniform in 1997-2008."""
    rng = np.random.default_rng(seed)
    t = np.arange(1990, 2015, dtype=float)
    psi = rng.uniform(1997, 2008)
    y = 400 + 10 * (t - 1990) - 8 * np.maximum(t - psi, 0) + rng.normal(0, sigma, t.size)
    return psi, t, y


def test_profile_interval_coverage_on_simulated_broken_lines():
    """200 seeds: coverage 0.925 with sigma = 6 (docs/validation_breakpoints.md has other sigmas)."""
    hits = 0
    for seed in range(200):
        psi, t, y = _simulate(seed)
        iv = profile_kink_interval(t, y)
        hits += iv["low"] <= psi <= iv["high"]
    coverage = hits / 200
    assert 0.90 <= coverage <= 0.99, coverage


def test_bootstrap_interval_is_reproducible_and_covers_the_synthetic_kink():
    t, y = synth_series()
    a = bootstrap_kink_interval(t, y, n_boot=199, seed=3)
    b = bootstrap_kink_interval(t, y, n_boot=199, seed=3)
    assert a["low"] == b["low"] and a["high"] == b["high"]
    assert a["low"] <= 2004.5 <= a["high"]


# ---------------------------------------------------------------- mean shift vs trend ----
@pytest.mark.parametrize("name", ["faostat", "edgar"])
def test_mean_shift_on_trending_series_finds_spurious_level_shifts(name, shared_data):
    t, y = load_series(name, shared_data)
    mean = mean_shift_breaks(t, y, "mean")
    trend = mean_shift_breaks(t, y, "trend")
    assert mean["significant"] and mean["n_breaks"] == 2  # level shifts of a trending series
    assert not trend["significant"] and trend["n_breaks"] == 0
    assert trend["existence_test"]["p_value"] > 0.05


@pytest.mark.parametrize("spec", ["mean", "trend"])
def test_mean_shift_partition_rss_matches_strucchange(series, spec):
    name, t, y = series
    r = mean_shift_breaks(t, y, spec, min_segment=0.15)  # h = floor(0.15 n) = 3, as strucchange
    rss = {m["n_breaks"]: m["rss"] for m in r["models"]}
    for m in range(3):
        assert rss[m] == pytest.approx(R_REF[name][f"strucchange_{spec}_rss_m{m}"], rel=1e-8)

"""The demo world's truth: true parameters, the national targets it is calibrated to, and the
expected emissions tests compare against (the pipeline never reads them). See docs/demo_world.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import DemoCalibration, DemoConfig
from pipeline.contract import CROPS
from pipeline.demo.spatial import (
    _gauss,
    _sig,
    crop_suitability,
    cropland_field,
    make_covariates,
    pet_proxy_mm,
)
from pipeline.errors import ConfigError
from pipeline.methods.slope_change import kink_year_draws
from pipeline.readers.boundaries import (
    NON_MAINLAND_PROVINCES,
    county_index,
)
from pipeline.units import MU_PER_HA, flux_to_kg_n2o_n_ha

# ---------------------------------------------------------------------------------------------
# True parameters of the world
# ---------------------------------------------------------------------------------------------
#: log E = a_crop + log f_crop(N) + sum_j gamma_j * x_j + delta_regime + u_site + eps (f: the Hill
#: response below; TRUE_B is the exponential it matches at 1.2 x the median N, not the truth),
#: E in kg N2O-N/ha per season, N in kg N/ha, water_input_mm = precip_mm + irrigation_mm.
TRUE_A = {"rice": -0.45, "wheat": -0.45, "maize": -0.15, "vegetables": -0.05, "other_upland": -0.45}


TRUE_B = {"rice": 0.0075, "wheat": 0.0080, "maize": 0.0080, "vegetables": 0.0055, "other_upland": 0.0080}


#: The TRUE N response is a Hill (sigmoid) curve, a form none of the fit's candidate forms has
#: (linear, exponential, log-quadratic, Mitscherlich, exponential with random slopes; issue 12
#: item 6): f(N) = 1 + A h(N), h(N) = (N/K)^2 / (1 + (N/K)^2), convex below the inflection
#: N = K/sqrt(3) and saturating above it. K = 1.5 x the crop's median county N rate of the
#: world (kg N/ha); A makes f equal the exponential exp(b N) of :data:`TRUE_B` at 1.2 x that
#: median, so the national level and kink stay in the published bands (docs/demo_world.md).
HILL_MEDIAN_N = {"rice": 139.0, "wheat": 153.0, "maize": 145.0, "vegetables": 266.0, "other_upland": 74.0}
HILL_POWER = 2.0
HILL_K = {c: 1.5 * n for c, n in HILL_MEDIAN_N.items()}


def _hill(crop: str, n_rate_kg_ha) -> np.ndarray:
    x = (np.asarray(n_rate_kg_ha, float) / HILL_K[crop]) ** HILL_POWER
    return x / (1.0 + x)


HILL_A = {c: float(np.expm1(TRUE_B[c] * 1.2 * n) / _hill(c, 1.2 * n)) for c, n in HILL_MEDIAN_N.items()}


def log_n_response(crop: str, n_rate_kg_ha) -> np.ndarray:
    """log f(N) of the true N response (0 at N = 0): ``log(1 + A h(N))``, :data:`HILL_A`,
    :data:`HILL_K`, :data:`HILL_POWER`; N in kg N/ha."""
    return np.log1p(HILL_A[crop] * _hill(crop, n_rate_kg_ha))


TRUE_GAMMA = {"water_input_mm": 0.0004, "mean_temp_c": 0.03, "soil_ph": -0.15, "soc_g_kg": 0.015, "clay_pct": 0.0}


#: Rice water regime effect on log E (single drainage = reference) and the national regime mix.
TRUE_REGIME = {"continuous_flooding": -0.30, "single_drainage": 0.0, "multiple_drainage": 0.15}


RICE_REGIME_SHARE = {"continuous_flooding": 0.2, "single_drainage": 0.6, "multiple_drainage": 0.2}


SIGMA_SITE = 0.45


SIGMA_RESID = 0.55


#: Additive measurement noise (kg N2O-N/ha) that makes a few small zero/negative fluxes.
SIGMA_MEASURE = 0.02


#: N-rate shape per crop before the yearly national scaling: base (kg N/ha, 1990), relative
#: slope per year up to the break year, relative slope per year after it.
N_SHAPE = {
    "rice": (150.0, 0.022, -0.008),
    "wheat": (160.0, 0.028, -0.010),
    "maize": (150.0, 0.028, -0.006),
    "vegetables": (260.0, 0.030, 0.012),
    "other_upland": (80.0, 0.020, 0.000),
}


#: Highest N rate of a field-trial treatment, kg N/ha.
MAX_TRIAL_N_KG_HA = 600.0


#: Relative SD of the national year-to-year noise (weather, reporting) around the smooth
#: national targets of area and N use (see :func:`national_targets`).
NATIONAL_NOISE_SD = 0.01


SEASON_DAYS = {"rice": 120.0, "wheat": 220.0, "maize": 120.0, "vegetables": 90.0, "other_upland": 150.0}


@dataclass(frozen=True)
class World:
    """Everything generated for all mainland counties (arrays indexed county x crop x year)."""

    counties: pd.DataFrame  # one row per mainland county, with covariates
    years: np.ndarray  # generation span
    area_ha: np.ndarray  # (K, C, Y)
    n_rate_kg_ha: np.ndarray  # (K, C, Y)
    n_scale: np.ndarray  # (Y,) national calibration factor of the N-rate shapes
    national_noise: np.ndarray  # (4, Y) year factors on the smooth rice/wheat/maize area and N use
    irrigation: pd.DataFrame  # prefecture x year
    events: pd.DataFrame  # county code changes


def interpolate_anchors(anchors: dict[int, float], years: np.ndarray) -> np.ndarray:
    """Linear interpolation (flat beyond the ends) of values given at anchor years."""
    ys = np.array(sorted(anchors), dtype=float)
    return np.interp(years.astype(float), ys, np.array([anchors[int(y)] for y in ys]))


def broken_line_fit(years: np.ndarray, values: np.ndarray, knot: float) -> tuple[np.ndarray, dict[str, float]]:
    """Continuous piecewise-linear least-squares fit with one kink at a fixed year.

    Parameters
    ----------
    years
        Time axis (yr), shape (Y,).
    values
        Series to fit, any unit, shape (Y,).
    knot
        Kink position on the year axis (the slope changes at ``t = knot``).

    Returns
    -------
    fitted, coefficients
        Fitted values (unit of ``values``) and ``level_at_knot``, ``slope_before`` and
        ``slope_after`` (unit of ``values`` per year).

    Notes
    -----
    OLS of y = c + b1 (t - knot) + d (t - knot)_+; slope before = b1, after = b1 + d.
    """
    t = np.asarray(years, float)
    X = np.column_stack([np.ones_like(t), t - knot, np.maximum(t - knot, 0.0)])
    beta = np.linalg.lstsq(X, np.asarray(values, float), rcond=None)[0]
    return X @ beta, {
        "level_at_knot": float(beta[0]),
        "slope_before": float(beta[1]),
        "slope_after": float(beta[1] + beta[2]),
    }


def _yearly(d: dict[int, float], name: str, years: np.ndarray) -> np.ndarray:
    missing = [int(y) for y in years if int(y) not in d]
    if missing:
        raise ConfigError(
            f"config: demo.calibration.{name} has no value for year {missing[0]}. "
            "Fix: add the year, or narrow demo.first_year/last_year"
        )
    return np.array([d[int(y)] for y in years], dtype=float)


def smooth_calibration(cal: DemoCalibration, years: np.ndarray, break_year: int) -> dict[str, dict]:
    """Smooth national targets: a broken line (kink at the break year) through each FAOSTAT series.

    Parameters
    ----------
    cal
        Calibration block (real FAOSTAT yearly figures: rice, wheat, maize area in ha and N use
        in t N).
    years
        Generation years; every one must be in the calibration.
    break_year
        ``demo.break_year``: the kink of the fitted broken lines.

    Returns
    -------
    dict
        Per series (``rice_area_ha``, ``wheat_area_ha``, ``maize_area_ha``, ``n_fertilizer_t``):
        ``real`` and ``smooth`` arrays (shape (Y,)), the broken line's ``level_at_knot``,
        ``slope_before``, ``slope_after`` (unit per year) and ``max_abs_dev_pct`` (largest
        |smooth - real| / real, %) with its year.

    Notes
    -----
    smooth(t) = c + b1 (t - B) + d (t - B)_+, least squares on the real yearly figures. The
    FAOSTAT year-to-year swings (1993 N dip, 1995-1996 peak, the 2001/2002 change of series)
    are thereby removed, so the demo world's national trend carries the designed kink at B.
    """
    out: dict[str, dict] = {}
    for name in ("rice_area_ha", "wheat_area_ha", "maize_area_ha", "n_fertilizer_t"):
        real = _yearly(getattr(cal, name), name, years)
        smooth, coef = broken_line_fit(years, real, float(break_year))
        dev = np.abs(smooth - real) / real
        i = int(np.argmax(dev))
        out[name] = {
            "real": real,
            "smooth": smooth,
            **coef,
            "max_abs_dev_pct": float(100 * dev[i]),
            "max_abs_dev_year": int(years[i]),
        }
    return out


def national_targets(
    cal: DemoCalibration, years: np.ndarray, break_year: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """National sown area per crop (ha, shape (C, Y)) and N use on the five crops (kg N, (Y,)).

    Returns
    -------
    area_ha, n_kg, noise
        Targets, and the national year noise factors (shape (4, Y): rice, wheat, maize area
        and N use).

    Notes
    -----
    X(t) = smooth_X(t) exp(s z_Xt), z ~ N(0, 1), s = ``NATIONAL_NOISE_SD``, for the rice,
    wheat and maize areas and N use, with smooth_X the broken line of
    :func:`smooth_calibration`; other_upland = assumed total sown area - rice - wheat - maize
    - vegetables; crop N (kg) = crop_n_share(t) x N(t) x 1000, crop_n_share interpolated
    between anchors.
    """
    sm = smooth_calibration(cal, years, break_year)
    noise = np.exp(NATIONAL_NOISE_SD * rng.standard_normal((4, len(years))))
    rice, wheat, maize, n_t = (
        sm[k]["smooth"] * noise[i]
        for i, k in enumerate(("rice_area_ha", "wheat_area_ha", "maize_area_ha", "n_fertilizer_t"))
    )
    veg = interpolate_anchors(cal.assumed_vegetables_area_ha, years)
    other = interpolate_anchors(cal.assumed_total_sown_area_ha, years) - rice - wheat - maize - veg
    if (other <= 0).any():
        raise ConfigError(
            "config: demo.calibration.assumed_total_sown_area_ha is smaller than the sum of the "
            "four named crops. Fix: raise it"
        )
    n_kg = n_t * 1000.0 * interpolate_anchors(cal.crop_n_share, years)
    return np.vstack([rice, wheat, maize, veg, other]), n_kg, noise


def n_rate_shape(years: np.ndarray, break_year: int) -> np.ndarray:
    """Unscaled national N-rate trajectory per crop, kg N/ha, shape (C, Y).

    Notes
    -----
    r_c(t) = base_c (1 + g1_c (min(t, B) - 1990)) (1 + g2_c max(t - B, 0)) with B the break
    year: cereals rise then fall slowly after B, vegetables keep rising.
    """
    t = years.astype(float)
    out = []
    for c in CROPS:
        base, g1, g2 = N_SHAPE[c]
        out.append(base * (1 + g1 * (np.minimum(t, break_year) - 1990.0)) * (1 + g2 * np.maximum(t - break_year, 0.0)))
    return np.vstack(out)


def make_activity(
    counties: pd.DataFrame,
    years: np.ndarray,
    targets: np.ndarray,
    n_kg: np.ndarray,
    break_year: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sown area and N rate per county x crop x year, calibrated to the national targets.

    Parameters
    ----------
    counties
        Output of :func:`county_table` for the mainland.
    years
        Generation years, shape (Y,).
    targets, n_kg
        National sown area per crop (ha, (C, Y)) and N on the five crops (kg N, (Y,)) from
        :func:`national_targets`.
    break_year
        ``demo.break_year``.
    rng
        Seeded generator.

    Returns
    -------
    area_ha, n_rate_kg_ha, n_scale, cropland_ha
        Arrays of shape (K, C, Y), (K, C, Y), (Y,) and (K,).

    Notes
    -----
    w_kc = cropland_k x MCI_k x s_kc / sum_c s_kc x LN(0, 0.3), drifting as exp(tau_kc (t - 2002)/12);
    area_kc(t) = A_c(t) w_kc(t) / sum_k w_kc(t), so sum_k area_kc(t) = A_c(t) exactly.
    n_kc(t) = k(t) r_c(t) m_kc (1 + d_kc max(t - B, 0)) LN(0, 0.04), with k(t) chosen so that
    sum_kc area x n = crop_n_share x national N use in every year.
    """
    lon, lat, land = counties["lon"].to_numpy(), counties["lat"].to_numpy(), counties["land_ha"].to_numpy()
    K, C, Y = len(counties), len(CROPS), len(years)
    crop_ha = land * cropland_field(lon, lat) * np.exp(0.25 * rng.standard_normal(K))
    crop_ha = np.minimum(crop_ha, 0.9 * land)
    mci = 1.0 + 0.9 * _sig((32.0 - lat) / 2.0)  # multiple cropping: double cropping in the south
    suit = crop_suitability(lon, lat)
    share = suit / suit.sum(axis=1, keepdims=True)
    w0 = (crop_ha * mci)[:, None] * share * np.exp(0.3 * rng.standard_normal((K, C)))
    tau = 0.15 * rng.standard_normal((K, C))
    tau[:, CROPS.index("maize")] += 0.3 * _gauss(lon, lat, 125.0, 45.0, 5.0, 4.0)
    drift = np.exp(tau[:, :, None] * ((years - 2002.0) / 12.0)[None, None, :])
    w = w0[:, :, None] * drift * np.exp(0.03 * rng.standard_normal((K, C, Y)))
    w[w0 < 1e-4 * w0.max()] = 0.0  # no crop statistics for (nearly) cropless urban districts
    area = w / w.sum(axis=0, keepdims=True) * targets[None, :, :]

    m = np.exp(0.2 * rng.standard_normal((K, C))) * (1 + 0.25 * _gauss(lon, lat, 116.0, 35.0, 5.0, 4.0))[:, None]
    d = 0.006 * rng.standard_normal((K, C))  # county departures from the national post-break slope
    after = np.maximum(years - break_year, 0.0)
    shape = n_rate_shape(years, break_year)
    n = shape[None] * m[:, :, None] * np.clip(1 + d[:, :, None] * after[None, None, :], 0.5, None)
    n = n * np.exp(0.04 * rng.standard_normal((K, C, Y)))
    k = n_kg / (area * n).sum(axis=(0, 1))
    # Cropland is scaled to physical area: mean total sown area / mean multiple-cropping index.
    crop_ha = crop_ha * (targets.sum(axis=0).mean() / (crop_ha * mci).sum())
    return area, n * k[None, None, :], k, np.minimum(crop_ha, 0.95 * land)


def make_irrigation(
    counties: pd.DataFrame, covariates: pd.DataFrame, years: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """Irrigated fraction and irrigation depth per prefecture x year.

    Notes
    -----
    f0 = clip(0.2 + 0.5 g_NCP + 0.35 sig((32 - lat)/1.5) + 0.6 sig((350 - P)/60), 0.05, 0.95),
    f(t) = clip(f0 + 0.004 (t - 1990) + N(0, 0.01), 0, 1); depth = clip(250 + 0.6 max(900 - P, 0),
    100, 1200) x LN(0, 0.1) x LN(0, 0.05) yearly, mm/yr, with P the prefecture mean precip_mm.
    """
    df = counties[["prefecture_code", "lon", "lat"]].assign(precip=covariates["precip_mm"].to_numpy())
    pref = df.groupby("prefecture_code", sort=True).mean()
    lon, lat, p = pref["lon"].to_numpy(), pref["lat"].to_numpy(), pref["precip"].to_numpy()
    P, Y = len(pref), len(years)
    f0 = np.clip(
        0.2
        + 0.5 * _gauss(lon, lat, 115.5, 36.0, 4.0, 3.5)
        + 0.35 * _sig((32.0 - lat) / 1.5)
        + 0.6 * _sig((350.0 - p) / 60.0),
        0.05,
        0.95,
    )
    f = np.clip(f0[:, None] + 0.004 * (years - 1990.0)[None, :] + 0.01 * rng.standard_normal((P, Y)), 0.0, 1.0)
    depth0 = np.clip(250.0 + 0.6 * np.maximum(900.0 - p, 0.0), 100.0, 1200.0) * np.exp(0.1 * rng.standard_normal(P))
    depth = depth0[:, None] * np.exp(0.05 * rng.standard_normal((P, Y)))
    return pd.DataFrame(
        {
            "prefecture_code": np.repeat(pref.index.to_numpy().astype(int), Y),
            "year": np.tile(years.astype(int), P),
            "irrigated_fraction": np.round(f.ravel(), 4),
            "irrigation_mm": np.round(depth.ravel(), 1),
        }
    )


def make_code_changes(
    counties: pd.DataFrame, all_codes: set[int], share: float, seed: int, first_year: int
) -> pd.DataFrame:
    """Merges (two retired codes -> one present code) and splits (one retired -> two present).

    Per province, round(share x n / 3) merges and as many splits (at least one of each when
    ``share`` > 0), so about ``share`` of present counties are affected. Retired codes are
    free codes of the same prefecture (suffix 99 downwards), never a present-day code.

    Returns
    -------
    pandas.DataFrame
        One row per retired code: ``retired_code``, ``kind`` (merge/split), ``year_changed``
        (first year under the present code), ``successors`` (tuple of present codes),
        ``weight`` (merge: share of the present county's area), ``rate_dev`` (merge: relative
        N-rate departure of the first part).
    """
    rows: list[tuple[int, str, int, tuple[int, ...], float, float]] = []
    if share <= 0:
        return pd.DataFrame(columns=["retired_code", "kind", "year_changed", "successors", "weight", "rate_dev"])
    used_codes = set(all_codes)
    eligible = counties[(counties["county_code"] % 100 != 0) & (counties["cropland_ha"] > 1000.0)]
    for prov, grp in eligible.groupby("province_code", sort=True):
        rng = np.random.default_rng([seed, 7, int(prov)])
        n_each = max(1, int(round(share * len(grp) / 3)))
        order = list(rng.permutation(grp["county_code"].to_numpy()))
        taken: set[int] = set()

        def free_code(pref: int) -> int | None:
            for suffix in range(99, 70, -1):
                c = pref * 100 + suffix
                if c not in used_codes:
                    used_codes.add(c)
                    return c
            return None

        pts = grp.set_index("county_code")[["lon", "lat", "prefecture_code"]]
        n_merge = n_split = 0
        for code in order:
            if code in taken:
                continue
            pref = int(code // 100)
            year = int(rng.integers(max(first_year, 1990) + 2, max(first_year, 1990) + 11))
            if n_merge < n_each:
                r1, r2 = free_code(pref), free_code(pref)
                if r1 is None or r2 is None:
                    continue
                f = float(rng.uniform(0.3, 0.7))
                dev = float(rng.uniform(-0.1, 0.1))
                rows.append((r1, "merge", year, (int(code),), f, dev))
                rows.append((r2, "merge", year, (int(code),), 1 - f, -dev * f / (1 - f)))
                taken.add(code)
                n_merge += 1
            elif n_split < n_each:
                same = pts[(pts["prefecture_code"] == pref) & ~pts.index.isin(list(taken | {code}))]
                if same.empty:
                    continue
                dist = np.hypot(same["lon"] - pts.at[code, "lon"], same["lat"] - pts.at[code, "lat"])
                other = int(same.index[int(np.argmin(dist.to_numpy()))])
                r = free_code(pref)
                if r is None:
                    continue
                rows.append((r, "split", year, tuple(sorted((int(code), other))), 1.0, 0.0))
                taken |= {code, other}
                n_split += 1
            if n_merge >= n_each and n_split >= n_each:
                break
    return pd.DataFrame(rows, columns=["retired_code", "kind", "year_changed", "successors", "weight", "rate_dev"])


def apply_split_history(
    area: np.ndarray, n_rate: np.ndarray, counties: pd.DataFrame, events: pd.DataFrame, years: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Before a split, give the two successors land-area shares of the joint area and one N rate.

    Notes
    -----
    For t < year_changed: A_i = (A_1 + A_2) L_i / (L_1 + L_2), n_i = (A_1 n_1 + A_2 n_2)/(A_1 + A_2),
    so allocating the retired county's statistics by land area recovers the truth exactly, and
    national area and N totals are unchanged.
    """
    area, n_rate = area.copy(), n_rate.copy()
    pos = {c: i for i, c in enumerate(counties["county_code"].to_numpy())}
    land = counties["land_ha"].to_numpy()
    for ev in events[events["kind"] == "split"].itertuples():
        i, j = pos[ev.successors[0]], pos[ev.successors[1]]
        before = years < ev.year_changed
        tot = area[i][:, before] + area[j][:, before]
        n_mean = np.divide(
            area[i][:, before] * n_rate[i][:, before] + area[j][:, before] * n_rate[j][:, before],
            tot,
            out=np.zeros_like(tot),
            where=tot > 0,
        )
        li = land[i] / (land[i] + land[j])
        area[i][:, before], area[j][:, before] = tot * li, tot * (1 - li)
        n_rate[i][:, before] = n_mean
        n_rate[j][:, before] = n_mean
    return area, n_rate


def build_world(counties_all: pd.DataFrame, demo: DemoConfig) -> World:
    """Generate the whole mainland world (pure: depends only on its arguments)."""
    if demo.calibration is None:
        raise ConfigError(
            "config: demo.calibration is missing. Fix: copy the `demo: calibration:` block from config/default.yaml"
        )
    counties = counties_all[~counties_all["province_code"].isin(NON_MAINLAND_PROVINCES)].reset_index(drop=True)
    cal_years = sorted(demo.calibration.rice_area_ha)
    years = np.arange(min(cal_years[0], demo.first_year), max(cal_years[-1], demo.last_year) + 1)
    years = years[(years >= cal_years[0]) & (years <= cal_years[-1])]
    if demo.first_year < years[0] or demo.last_year > years[-1] or demo.first_year > demo.last_year:
        raise ConfigError(
            f"config: demo.first_year/last_year {demo.first_year}-{demo.last_year} outside the "
            f"calibration years {cal_years[0]}-{cal_years[-1]}. Fix: narrow them or extend "
            "demo.calibration"
        )
    cov = make_covariates(counties, np.random.default_rng([demo.seed, 1]))
    targets, n_kg, noise = national_targets(
        demo.calibration, years, demo.break_year, np.random.default_rng([demo.seed, 10])
    )
    area, n_rate, k, crop_ha = make_activity(
        counties, years, targets, n_kg, demo.break_year, np.random.default_rng([demo.seed, 2])
    )
    counties = pd.concat([counties, cov.drop(columns="county_code")], axis=1).assign(cropland_ha=crop_ha)
    irr = make_irrigation(counties, cov, years, np.random.default_rng([demo.seed, 3]))
    events = make_code_changes(
        counties, set(county_index()["county_code"]), demo.retired_code_share, demo.seed, int(years[0])
    )
    area, n_rate = apply_split_history(area, n_rate, counties, events, years)
    return World(counties, years, area, n_rate, k, noise, irr, events)


# ---------------------------------------------------------------------------------------------
# Expected emissions (the truth the pipeline should recover)
# ---------------------------------------------------------------------------------------------
def log_mean(
    crop: str,
    n_rate_kg_ha,
    water_input_mm,
    mean_temp_c,
    soil_ph,
    soc_g_kg,
    clay_pct=0.0,
    water_regime: str | np.ndarray = "upland",
) -> np.ndarray:
    """Linear predictor of log E (E in kg N2O-N/ha per season) without site and residual terms.

    Notes
    -----
    eta = a_c + log f_c(N) + g_w W + g_T T + g_pH pH + g_soc SOC + g_clay clay + delta_regime,
    with the Hill response f of :func:`log_n_response`.
    """
    reg = np.vectorize(lambda r: TRUE_REGIME.get(r, 0.0), otypes=[float])(np.asarray(water_regime, dtype=object))
    return (
        TRUE_A[crop]
        + log_n_response(crop, n_rate_kg_ha)
        + TRUE_GAMMA["water_input_mm"] * np.asarray(water_input_mm, float)
        + TRUE_GAMMA["mean_temp_c"] * np.asarray(mean_temp_c, float)
        + TRUE_GAMMA["soil_ph"] * np.asarray(soil_ph, float)
        + TRUE_GAMMA["soc_g_kg"] * np.asarray(soc_g_kg, float)
        + TRUE_GAMMA["clay_pct"] * np.asarray(clay_pct, float)
        + reg
    )


def expected_emissions(world: World) -> tuple[np.ndarray, np.ndarray]:
    """Expected fertilizer-induced and background emission, kg N2O-N, per county x crop x year.

    Notes
    -----
    E(N) = exp(eta(N) + s_u^2/2 + s_e^2/2) (mean of the log-normal over site effects and
    residuals), averaged over irrigated (share f, water input P + I) and rain-fed (P) land and,
    for rice, over the national water-regime mix. Background = area x E(0); fertilizer-induced
    = area x (E(N) - E(0)).
    """
    c = world.counties
    irr = world.irrigation.set_index(["prefecture_code", "year"])
    idx = pd.MultiIndex.from_product([c["prefecture_code"].to_numpy(), world.years.astype(int)])
    f = irr["irrigated_fraction"].reindex(idx).to_numpy().reshape(len(c), -1)
    depth = irr["irrigation_mm"].reindex(idx).to_numpy().reshape(len(c), -1)
    P = c["precip_mm"].to_numpy()[:, None]
    water_mix = f * np.exp(TRUE_GAMMA["water_input_mm"] * (P + depth)) + (1 - f) * np.exp(
        TRUE_GAMMA["water_input_mm"] * P
    )
    smear = np.exp(SIGMA_SITE**2 / 2 + SIGMA_RESID**2 / 2)
    fert = np.zeros_like(world.area_ha)
    back = np.zeros_like(world.area_ha)
    for ci, crop in enumerate(CROPS):
        base = log_mean(
            crop,
            0.0,
            0.0,
            c["mean_temp_c"].to_numpy(),
            c["soil_ph"].to_numpy(),
            c["soc_g_kg"].to_numpy(),
            c["clay_pct"].to_numpy(),
        )
        regime = sum(s * np.exp(TRUE_REGIME[r]) for r, s in RICE_REGIME_SHARE.items()) if crop == "rice" else 1.0
        e0 = np.exp(base)[:, None] * water_mix * regime * smear
        eN = e0 * np.exp(log_n_response(crop, world.n_rate_kg_ha[:, ci, :]))
        back[:, ci, :] = world.area_ha[:, ci, :] * e0
        fert[:, ci, :] = world.area_ha[:, ci, :] * (eN - e0)
    return fert, back


def national_truth(world: World, fert: np.ndarray, back: np.ndarray) -> pd.DataFrame:
    """National (all mainland counties) expected values per year x crop."""
    rows = []
    for ci, crop in enumerate(CROPS):
        rows.append(
            pd.DataFrame(
                {
                    "year": world.years.astype(int),
                    "crop": crop,
                    "area_ha": world.area_ha[:, ci, :].sum(axis=0),
                    "n_applied_kg": (world.area_ha[:, ci, :] * world.n_rate_kg_ha[:, ci, :]).sum(axis=0),
                    "fert_induced_kg_n2o_n": fert[:, ci, :].sum(axis=0),
                    "background_kg_n2o_n": back[:, ci, :].sum(axis=0),
                }
            )
        )
    out = pd.concat(rows, ignore_index=True)
    out["n_rate_kg_ha"] = out["n_applied_kg"] / out["area_ha"]
    return out.sort_values(["year", "crop"]).reset_index(drop=True)


def national_break_truth(
    years: np.ndarray, fert_kg: np.ndarray, break_year: int, min_segment: int = 4
) -> dict[str, object]:
    """True break and slopes of the national fertilizer-induced series (for truth.json).

    Parameters
    ----------
    years
        Years of the series, shape (Y,).
    fert_kg
        TRUE national fertilizer-induced emission, kg N2O-N/yr, shape (Y,).
    break_year
        Design break (``demo.break_year``): the kink of the smooth targets and N-rate shapes.
    min_segment
        Shortest segment (years) either side of a searched kink.

    Returns
    -------
    dict
        ``design_break_year``; ``at_design_break``: broken-line slopes before/after (kg N2O-N/yr
        per year) with the kink fixed at the design year; ``least_squares``: the one-kink
        least-squares kink position (0.1-yr grid) and its slopes, or None when the series is
        shorter than ``2 min_segment + 1`` years.

    Notes
    -----
    y = c + b1 (t - psi) + d (t - psi)_+, slopes b1 and b1 + d; psi on the continuous year
    axis (``floor(psi)`` is the last year of the old regime).
    """

    t = np.asarray(years, float)
    y = np.asarray(fert_kg, float)
    _, at = broken_line_fit(t, y, float(break_year))
    out: dict[str, object] = {
        "design_break_year": int(break_year),
        "units": "kg N2O-N/yr per year",
        "year_convention": "kink position on the continuous year axis; last year of the old regime = floor",
        "at_design_break": {"slope_before_kg_yr2": at["slope_before"], "slope_after_kg_yr2": at["slope_after"]},
        "least_squares": None,
    }
    if t.size >= 2 * min_segment + 1:
        psi = float(np.round(kink_year_draws(t, y[None, :], min_segment)[0], 1))
        _, ls = broken_line_fit(t, y, psi)
        out["least_squares"] = {
            "break_year": psi,
            "slope_before_kg_yr2": ls["slope_before"],
            "slope_after_kg_yr2": ls["slope_after"],
        }
    return out


def make_observations(
    world: World, provinces: set[int], demo: DemoConfig, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Field observations with paired zero-N controls, in mixed units as published.

    Returns
    -------
    observations, truth
        ``observations`` has the OBSERVATIONS_RAW columns; ``truth`` has per record the
        generated flux in kg N2O-N/ha (``flux_kg_n2o_n_ha``), the linear predictor ``eta``,
        the site effect ``u_site`` and the residual ``eps``.

    Notes
    -----
    E = exp(eta + u_site + eps) + m, u_site ~ N(0, s_u^2), eps ~ N(0, s_e^2), m ~ N(0, 0.02^2)
    (measurement noise, kg N2O-N/ha); ~1.5 % of controls are replaced by noise around zero
    (zero and negative fluxes, flagged ``below_detection`` in the truth); water input
    = site precip + irrigation applied in that season (irrigated with the prefecture's share).
    Sites: counties drawn with probability proportional to cropland; each site has
    1 + Poisson(0.6) crop-years, each with one control and 1 + Poisson(l) N levels.
    """
    c = world.counties
    sel = c[c["province_code"].isin(provinces) & (c["cropland_ha"] > 0)].reset_index(drop=True)
    p = sel["cropland_ha"].to_numpy() / sel["cropland_ha"].sum()
    replace = demo.n_sites > len(sel)
    site_idx = rng.choice(len(sel), size=demo.n_sites, replace=replace, p=p)
    ymask = (world.years >= demo.first_year) & (world.years <= demo.last_year)
    yrs = world.years[ymask].astype(int)
    kpos = {code: i for i, code in enumerate(c["county_code"].to_numpy())}
    irr = world.irrigation.set_index(["prefecture_code", "year"])
    lam_exp = 0.6
    lam_trt = max(demo.records_per_site / (1 + lam_exp) - 2.0, 0.0)
    recs = []
    u_all = SIGMA_SITE * rng.standard_normal(demo.n_sites)
    for s, si in enumerate(site_idx):
        row = sel.iloc[si]
        k = kpos[int(row["county_code"])]
        site: dict[str, Any] = {  # one site's covariates, floats plus the str climate class
            "soil_ph": float(np.clip(row["soil_ph"] + 0.2 * rng.standard_normal(), 3.5, 10.0)),
            "soc_g_kg": float(row["soc_g_kg"] * np.exp(0.1 * rng.standard_normal())),
            "clay_pct": float(np.clip(row["clay_pct"] + 2.0 * rng.standard_normal(), 1.0, 90.0)),
            "mean_temp_c": float(row["mean_temp_c"] + 0.5 * rng.standard_normal()),
            "precip_mm": float(row["precip_mm"] * np.exp(0.05 * rng.standard_normal())),
            "lat": float(row["lat"] + 0.01 * rng.standard_normal()),
            "lon": float(row["lon"] + 0.01 * rng.standard_normal()),
        }
        site["climate"] = "wet" if site["precip_mm"] >= pet_proxy_mm(site["mean_temp_c"]) else "dry"
        irrigated_site = rng.random()
        done: set[tuple[int, str]] = set()
        for _ in range(1 + int(rng.poisson(lam_exp))):
            yi = int(rng.integers(0, len(yrs)))
            year = int(yrs[yi])
            area = world.area_ha[k][:, np.nonzero(ymask)[0][yi]]
            crop = CROPS[int(rng.choice(len(CROPS), p=area / area.sum()))] if area.sum() > 0 else "other_upland"
            if (year, crop) in done:  # one experiment (one control) per site x year x crop
                continue
            done.add((year, crop))
            ci = CROPS.index(crop)
            n_county = float(world.n_rate_kg_ha[k, ci, np.nonzero(ymask)[0][yi]])
            regime = (
                str(rng.choice(list(RICE_REGIME_SHARE), p=list(RICE_REGIME_SHARE.values())))
                if crop == "rice"
                else "upland"
            )
            f, depth = irr.loc[(int(row["prefecture_code"]), year), ["irrigated_fraction", "irrigation_mm"]]
            irrigation = float(depth * np.exp(0.1 * rng.standard_normal())) if irrigated_site < f else 0.0
            n_levels = np.sort(np.round(n_county * rng.uniform(0.3, 1.8, 1 + int(rng.poisson(lam_trt))) / 5.0) * 5.0)
            # Treatments stop at MAX_TRIAL_N_KG_HA: beyond it the exponential response makes season
            # fluxes (tens of kg N2O-N/ha) above the observation contract's plausible maximum.
            n_levels = np.minimum(n_levels, MAX_TRIAL_N_KG_HA)
            duration = float(np.round(SEASON_DAYS[crop] * rng.uniform(0.85, 1.15)))
            ftype = str(rng.choice(["synthetic", "mixed", "other"], p=[0.85, 0.10, 0.05]))
            for n in np.concatenate([[0.0], np.unique(np.maximum(n_levels, 5.0))]):
                recs.append(
                    {
                        "site": s,
                        "year": year,
                        "crop": crop,
                        "water_regime": regime,
                        "n_kg_ha": float(n),
                        "fertilizer_type": "synthetic" if n == 0 else ftype,
                        "irrigation_mm": irrigation,
                        "duration_days": duration,
                        **site,
                    }
                )
    obs = pd.DataFrame(recs)
    n = len(obs)
    eta = np.empty(n)
    for crop in CROPS:
        m = (obs["crop"] == crop).to_numpy()
        o = obs[m]
        eta[m] = log_mean(
            crop,
            o["n_kg_ha"],
            o["precip_mm"] + o["irrigation_mm"],
            o["mean_temp_c"],
            o["soil_ph"],
            o["soc_g_kg"],
            o["clay_pct"],
            o["water_regime"].to_numpy(),
        )
    u = u_all[obs["site"].to_numpy()]
    eps = SIGMA_RESID * rng.standard_normal(n)
    flux_kg = np.exp(eta + u + eps) + SIGMA_MEASURE * rng.standard_normal(n)
    # About 1.5 % of controls are reported "at detection limit": measurement noise around zero,
    # so the table has the small zero/negative fluxes real compilations have.
    below = (obs["n_kg_ha"].to_numpy() == 0) & (rng.random(n) < 0.015)
    flux_kg = np.where(below, np.round(SIGMA_MEASURE * rng.standard_normal(n), 3), flux_kg)
    # Mixed reporting: kg N2O-N/ha per season, g N2O-N/ha/d over the season, kg N2O/ha.
    unit = rng.choice(np.array(["kg N2O-N/ha", "g N2O-N/ha/d", "kg N2O/ha"]), size=n, p=[0.6, 0.25, 0.15])
    per_unit = flux_to_kg_n2o_n_ha(np.ones(n), unit, obs["duration_days"].to_numpy())
    value = np.round(flux_kg / per_unit, 5)
    mu_units = rng.random(n) < 0.1
    site_id = np.array([f"DEMO-S{s + 1:03d}" for s in obs["site"]])
    raw = pd.DataFrame(
        {
            "obs_id": [f"DEMO-{i + 1:04d}" for i in range(n)],
            "site_id": site_id,
            "study_id": [f"DEMO-P{(s // 2) + 1:03d}" for s in obs["site"]],  # two sites per publication
            "crop": obs["crop"],
            "water_regime": obs["water_regime"],
            "year": obs["year"],
            "n_rate": np.where(mu_units, np.round(obs["n_kg_ha"] / MU_PER_HA, 3), obs["n_kg_ha"]),
            "n_rate_unit": np.where(mu_units, "kg N/mu", "kg N/ha"),
            "fertilizer_type": obs["fertilizer_type"],
            "flux": value,
            "flux_unit": unit,
            "duration_days": obs["duration_days"],
            "soil_ph": obs["soil_ph"].round(2),
            "soc_g_kg": obs["soc_g_kg"].round(2),
            "clay_pct": obs["clay_pct"].round(1),
            "mean_temp_c": obs["mean_temp_c"].round(2),
            "precip_mm": obs["precip_mm"].round(1),
            "irrigation_mm": obs["irrigation_mm"].round(1),
            "climate": obs["climate"],
            "lat": obs["lat"].round(4),
            "lon": obs["lon"].round(4),
        }
    )
    truth = pd.DataFrame(
        {
            "obs_id": raw["obs_id"],
            "site_id": site_id,
            "crop": obs["crop"],
            "n_rate_kg_ha": obs["n_kg_ha"],
            "water_input_mm": obs["precip_mm"] + obs["irrigation_mm"],
            "flux_kg_n2o_n_ha": flux_kg,
            "eta": eta,
            "u_site": u,
            "eps": eps,
            "below_detection": below,
        }
    )
    return raw, truth

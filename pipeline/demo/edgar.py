"""SYNTHETIC reference-inventory fixtures for the demo world: EDGAR v8 ``emi_nc`` zips and a
FAOSTAT-layout Tier 1 series, so ``make all`` runs the compare stage without downloads.

EDGAR-like grid (one zip per year, as EDGAR ships them:
``v8.0_FT2022_GHG_N2O_{YYYY}_AGS_emi_nc.zip`` holding ``..._AGS_emi.nc``; variable ``emissions``,
``units = "Tonnes"`` per 0.1° cell per year, ``lat``/``lon`` cell centres ascending, China window
:data:`pipeline.readers.edgar.CHINA_BBOX`). It is made the way a Tier 1 inventory built from
national data is made:

    national N2O-N (kg) = N_use (kg N) x EF1 x (1 + OTHER_N_SHARE)
    N2O (t) = N2O-N x 44/28 / 1000

with N_use the demo calibration's national N fertilizer use (``demo.calibration.n_fertilizer_t``,
real FAOSTAT figures, step at 2001/2002 included), EF1 = 0.01 (IPCC 2006) and
:data:`OTHER_N_SHARE` = 0.5, a generator assumption standing for the manure-applied, crop-residue
and pasture-deposition N that EDGAR's AGS sector adds to synthetic N. The synthetic-N share of
the fixture is therefore 1 / 1.5 = 0.667 (``compare.edgar_synthetic_share`` in
config/default.yaml). Spatial proxy: each mainland county's share of the demo's (synthetic)
cropland area, spread evenly over the 0.1° cells whose centres fall in the county (a county
owning no centre gets the cell of its interior point).

FAOSTAT-like series (``faostat_synthetic_fertilizers_n2o.csv``, open-numbers DDF layout
``geo,year,gt_synthetic_fertilizers_emissions_n2o``, kt N2O): Tier 1 direct + indirect of the same
N use, N x (EF1 + FracGASF EF4 + FracLEACH EF5) x 44/28 with IPCC 2006 defaults.

The demo writer puts them in the demo folder (beside ``boundaries.gpkg``: ``edgar/`` and
``faostat_synthetic_fertilizers_n2o.csv``), where config/default.yaml's ``inputs.edgar`` and
``inputs.faostat`` point. Both are labelled SYNTHETIC in their attributes / file name and README; the pipeline treats them
exactly like real downloads (no code path knows they are synthetic).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import geopandas as gpd
import netCDF4
import numpy as np
import pandas as pd
from rasterio import features
from rasterio.transform import from_origin

from pipeline import io
from pipeline.config import DemoConfig
from pipeline.readers.edgar import CHINA_BBOX, EDGAR_RESOLUTION_DEG
from pipeline.units import KG_PER_KT, KG_PER_T, N2O_PER_N2O_N

#: IPCC 2006 EF1 (kg N2O-N per kg N).
EF1 = 0.01
#: Generator assumption: manure applied + crop residues + pasture deposition add this share of the
#: synthetic-N emission in the EDGAR-like AGS fixture.
OTHER_N_SHARE = 0.5
#: IPCC 2006 indirect-pathway defaults used for the FAOSTAT-like fixture.
FRAC_GASF, EF4, FRAC_LEACH, EF5 = 0.10, 0.01, 0.30, 0.0075
RELEASE_PREFIX = "v8.0_FT2022_GHG"
LABEL = "SYNTHETIC demo fixture in EDGAR v8.0 emi_nc layout - not EDGAR data"


def national_n_use_t(demo: DemoConfig) -> pd.Series:
    """National N fertilizer use (t N) per demo year, from the demo calibration (interpolated)."""
    assert demo.calibration is not None
    cal = pd.Series(demo.calibration.n_fertilizer_t, dtype=float).sort_index()
    years = np.arange(demo.first_year, demo.last_year + 1)
    return pd.Series(np.interp(years, cal.index.to_numpy(float), cal.to_numpy()), index=years)


def proxy_shares(gdf: gpd.GeoDataFrame, cropland_ha: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat centres, lon centres, share per cell) of the CHINA_BBOX 0.1° window; shares sum to 1.

    ``gdf``: county polygons (``county_code``, geometry, EPSG:4326); ``cropland_ha``: by county code.
    """
    w, s, e, n = CHINA_BBOX
    res = EDGAR_RESOLUTION_DEG
    nlon, nlat = round((e - w) / res), round((n - s) / res)
    crop = cropland_ha.reindex(gdf["county_code"].to_numpy()).fillna(0.0).to_numpy(float)
    share = crop / crop.sum()
    idx = np.arange(1, len(gdf) + 1)
    raster = features.rasterize(
        zip(gdf.geometry.values, idx),
        out_shape=(nlat, nlon),
        transform=from_origin(w, n, res, res),
        fill=0,
        dtype="int32",
    )
    raster = raster[::-1]  # rows south to north
    counts = np.bincount(raster.ravel(), minlength=len(gdf) + 1)[1:]
    field = np.zeros((nlat, nlon))
    owned = counts > 0
    per_cell = np.zeros(len(gdf) + 1)
    per_cell[1:][owned] = share[owned] / counts[owned]
    field += per_cell[raster]
    pts = gdf.geometry.representative_point()
    for k in np.flatnonzero(~owned & (share > 0)):
        iy = int(np.floor((pts.y.iloc[k] - s) / res))
        ix = int(np.floor((pts.x.iloc[k] - w) / res))
        if 0 <= iy < nlat and 0 <= ix < nlon:
            field[iy, ix] += share[k]
    field /= field.sum()
    lat = np.round(s + (np.arange(nlat) + 0.5) * res, 10)
    lon = np.round(w + (np.arange(nlon) + 0.5) * res, 10)
    return lat, lon, field


def _write_emi_nc(path: Path, year: int, lat: np.ndarray, lon: np.ndarray, t: np.ndarray) -> None:
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.title = f"{LABEL}: N2O {year} AGS"
        ds.synthetic = "true"
        ds.source = (
            "cropn2o demo world: national N use x EF1 0.01 x (1 + 0.5 other N), county cropland "
            "shares; see pipeline/demo/edgar.py"
        )
        ds.createDimension("lat", len(lat))
        ds.createDimension("lon", len(lon))
        la = ds.createVariable("lat", "f8", ("lat",))
        la.units, la.long_name = "degrees_north", "latitude of cell centre"
        la[:] = lat
        lo = ds.createVariable("lon", "f8", ("lon",))
        lo.units, lo.long_name = "degrees_east", "longitude of cell centre"
        lo[:] = lon
        v = ds.createVariable("emissions", "f4", ("lat", "lon"), zlib=True, complevel=4)
        v.units = "Tonnes"
        v.long_name = f"N2O emissions AGS {year} (SYNTHETIC)"
        v.comment = LABEL
        v[:] = t.astype(np.float32)


def write_edgar_fixture(demo: DemoConfig, gdf: gpd.GeoDataFrame, cropland_ha: pd.Series, folder: Path) -> list[Path]:
    """Write one EDGAR-format zip per demo year into ``folder``; return the paths (year order)."""
    lat, lon, share = proxy_shares(gdf, cropland_ha)
    n_use = national_n_use_t(demo)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for year, n_t in n_use.items():
        n2o_n_kg = n_t * KG_PER_T * EF1 * (1.0 + OTHER_N_SHARE)
        t = share * n2o_n_kg * N2O_PER_N2O_N / KG_PER_T
        stem = f"{RELEASE_PREFIX}_N2O_{int(year)}_AGS"
        target = folder / f"{stem}_emi_nc.zip"

        def writer(tmp: Path, year: int = int(year), t: np.ndarray = t, stem: str = stem) -> None:
            nc = tmp.with_name(tmp.name + ".nc")
            try:
                _write_emi_nc(nc, year, lat, lon, t)
                with zipfile.ZipFile(tmp, "w") as z:  # fixed member dates: byte-identical on rerun
                    for name, data in ((f"{stem}_emi.nc", nc.read_bytes()), ("_readme.txt", (LABEL + "\n").encode())):
                        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                        info.compress_type = zipfile.ZIP_DEFLATED
                        z.writestr(info, data)
            finally:
                nc.unlink(missing_ok=True)

        written.append(io.write_with(target, writer))
    return written


def write_faostat_fixture(demo: DemoConfig, path: Path) -> Path:
    """Write the FAOSTAT-layout (DDF) Tier 1 synthetic-fertilizer N2O series, kt N2O."""
    n_use = national_n_use_t(demo)
    kt = n_use.to_numpy() * KG_PER_T * (EF1 + FRAC_GASF * EF4 + FRAC_LEACH * EF5) * N2O_PER_N2O_N / KG_PER_KT
    df = pd.DataFrame({"geo": 351, "year": n_use.index.astype(int), "gt_synthetic_fertilizers_emissions_n2o": kt})
    return io.write_csv(df, path, float_format="%.6f")

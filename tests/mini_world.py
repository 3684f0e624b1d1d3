"""A hand-made world of five square counties, written in the input formats a user supplies.

Small enough to reason about every number: the tests know the answer without running the
pipeline's own code. Counties (present-day codes): 410101 (1x1 deg), 410102 (1x2 deg),
410201 (1x1), 430101 (1x1), 430102 (1x1). History in the crosswalk:

* 410199 (retired 1995) split into 410101 and 410102 -> allocated 1:2 by area;
* 430198 and 430199 (retired 1993) merged into 430101 -> summed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import geopandas as gpd
import yaml
from shapely.geometry import box

YEARS = list(range(1990, 2000))
CROPS = ["rice", "wheat"]
SQUARES = {
    410101: box(113.0, 34.0, 114.0, 35.0),
    410102: box(114.0, 34.0, 116.0, 35.0),
    410201: box(113.0, 35.0, 114.0, 36.0),
    430101: box(112.0, 28.0, 113.0, 29.0),
    430102: box(113.0, 28.0, 114.0, 29.0),
}


def write_csv(path: Path, header: list[str], rows: list[list], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def area_rows() -> list[list]:
    rows = []
    for y in YEARS:
        for crop in CROPS:
            base = 1000.0 if crop == "rice" else 500.0
            if y < 1995:
                rows.append([410199, "旧县", y, crop, 3 * base * 15, "mu"])  # reported in mu
            else:
                rows += [[410101, "甲", y, crop, base, "ha"], [410102, "乙", y, crop, 2 * base, "ha"]]
            rows.append([410201, "丙", y, crop, base, "ha"])
            if y < 1993:
                rows += [[430198, "丁", y, crop, base / 2, "ha"], [430199, "戊", y, crop, base / 2, "ha"]]
            else:
                rows.append([430101, "己", y, crop, base, "ha"])
            rows.append([430102, "庚", y, crop, base, "ha"])
    return rows


def n_rate_rows() -> list[list]:
    rows = []
    for y in YEARS:
        for crop in CROPS:
            rate = 150.0 + (y - 1990)
            if y < 1995:
                rows.append([410199, y, crop, rate / 15, "kg N/mu"])
            else:
                rows += [[410101, y, crop, rate, "kg N/ha"], [410102, y, crop, rate, "kg N/ha"]]
            rows.append([410201, y, crop, "" if (crop == "wheat" and y == 1996) else rate, "kg N/ha"])  # 1-yr gap
            if y < 1993:
                rows += [[430198, y, crop, 100.0, "kg N/ha"], [430199, y, crop, 200.0, "kg N/ha"]]
            else:
                rows.append([430101, y, crop, rate, "kg N/ha"])
            rows.append([430102, y, crop, rate, "kg N/ha"])
    return rows


def observation_rows(n: int = 40) -> list[list]:
    rows = []
    for i in range(n):
        site = f"S{i // 4}"
        crop = CROPS[i % 2]
        n_rate = 0.0 if i % 4 == 0 else 100.0 + 10 * (i % 4)
        unit, value, dur = ("kg N2O-N/ha", 1.0 + 0.01 * i, "")
        if i % 5 == 1:
            unit, value, dur = ("g N2O-N/ha/d", 10.0, 100)  # = 1.0 kg N2O-N/ha
        if i % 5 == 2:
            unit, value = ("kg N2O/ha", 44.0 / 28.0)  # = 1.0 kg N2O-N/ha
        rows.append([f"o{i:03d}", site, crop, 1995, n_rate, "kg N/ha", value, unit, dur, 6.5, 12.0, 25.0, 14.0, 900.0])
    return rows


OBS_HEADER = [
    "obs_id",
    "site_id",
    "crop",
    "year",
    "n_rate",
    "n_rate_unit",
    "flux",
    "flux_unit",
    "duration_days",
    "soil_ph",
    "soc_g_kg",
    "clay_pct",
    "mean_temp_c",
    "precip_mm",
]

CROSSWALK_HEADER = ["代码", "一级行政区", "二级行政区", "名称", "级别", "状态", "启用时间", "变更/弃用时间", "新代码"]


def build(root: Path) -> Path:
    """Write the mini world under ``root``; return the path of its config file."""
    raw = root / "raw"
    gdf = gpd.GeoDataFrame({"county_code": list(SQUARES)}, geometry=list(SQUARES.values()), crs="EPSG:4326")
    raw.mkdir(parents=True, exist_ok=True)
    gdf.to_file(raw / "boundaries.gpkg", engine="pyogrio")
    write_csv(
        raw / "sown_area" / "41.csv",
        ["county_code", "county_name", "year", "crop", "area", "unit"],
        [r for r in area_rows() if str(r[0]).startswith("41")],
        encoding="gbk",
    )
    write_csv(
        raw / "sown_area" / "43.csv",
        ["county_code", "county_name", "year", "crop", "area", "unit"],
        [r for r in area_rows() if str(r[0]).startswith("43")],
    )
    write_csv(raw / "n_rate.csv", ["county_code", "year", "crop", "n_rate", "unit"], n_rate_rows())
    write_csv(
        raw / "irrigation.csv",
        ["prefecture_code", "year", "irrigated_fraction", "irrigation_mm"],
        [[p, y, 0.5, 200.0] for p in (4101, 4102, 4301) for y in YEARS],
    )
    write_csv(
        raw / "covariates.csv",
        ["county_code", "soil_ph", "soc_g_kg", "clay_pct", "mean_temp_c", "precip_mm", "climate"],
        [[c, 7.0, 10.0, 20.0, 14.0, 600.0, "dry"] for c in SQUARES],
    )
    write_csv(
        raw / "crosswalk.csv",
        CROSSWALK_HEADER,
        [
            [410199, "河南省", "郑州市", "旧县", "县级", "弃用", 1981, 1995, "410101;410102"],
            [430198, "湖南省", "长沙市", "丁", "县级", "弃用", 1981, 1993, "430101"],
            [430199, "湖南省", "长沙市", "戊", "县级", "弃用", 1981, 1993, "430101"],
            *[[c, "", "", "", "县级", "在用", 1981, "", ""] for c in SQUARES],
        ],
        encoding="utf-8-sig",
    )
    write_csv(raw / "observations.csv", OBS_HEADER, observation_rows())
    cfg = {
        "root": str(root),
        "processed_dir": "processed",
        "inputs": {
            "observations": {"path": "raw/observations.csv"},
            "n_rate": {"path": "raw/n_rate.csv"},
            "sown_area": {"path": "raw/sown_area"},
            "irrigation": {"path": "raw/irrigation.csv"},
            "covariates": {"path": "raw/covariates.csv"},
            "boundaries": {"path": "raw/boundaries.gpkg"},
            "crosswalk": {"path": "raw/crosswalk.csv"},
        },
        "ingest": {"first_year": YEARS[0], "last_year": YEARS[-1], "max_gap_years": 2, "max_reject_fraction": 0.2},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path

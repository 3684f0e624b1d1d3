"""Ingest stage: validate user inputs, harmonise units and unit codes, write Parquet tables.

Inputs (see docs/data_contract.md): field observations, N rate and sown area per unit x crop x
year, irrigation per prefecture x year, unit covariates (optional), boundaries and a code
crosswalk (optional when every code is present-day). Units are counties, prefectures or
provinces (``inputs.unit_level``), keyed by their 6-digit code. Each input may list several
sources, each one file or a folder/glob of many, in CSV (UTF-8 or GBK), Parquet or XLSX, with
its own mapping, encoding, sheet and unit, or an NBS provincial export (``format: nbs``, read
by :mod:`pipeline.readers.nbs`; crop N rates then come from the top-down allocation of
``ingest.n_allocation``). Regional fertilizer-N totals in a plain contract table
(``inputs.fertilizer_n``) are allocated the same way (:func:`_allocated_n_rates`).

Outputs under ``<processed>/ingest/``: ``observations.parquet``, ``activity.parquet`` (present-day
codes, gaps of up to ``ingest.max_gap_years`` interpolated and flagged), ``quarantine.csv``
(every rejected row and why, with the row as read), ``violations.csv`` (every row over a
plausibility limit of ``ingest.limits``), ``code_mapping.csv`` (how each historical code was
re-keyed), ``n_allocation.csv`` (when N is allocated) and ``manifest.json`` (written last;
counts, unit level, input hashes, config).
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import contract as C
from pipeline import io, units
from pipeline.config import Config, InputSpec, load_mapping
from pipeline.errors import ConfigError, InputError
from pipeline.methods.allocation import REGION_DIVISORS, allocate_n, allocate_to_units, check_allocation, region_level
from pipeline.methods.crosswalk import resolve, successor_graph
from pipeline.methods.harmonise import (
    VIOLATION_COLUMNS,
    build_activity,
    check_rejections,
    harmonise_activity,
    harmonise_irrigation,
    harmonise_observations,
    n_rate_violations,
    sown_land_violations,
)
from pipeline.parallel import dask_context
from pipeline.readers import nbs
from pipeline.readers.boundaries import read_boundaries
from pipeline.readers.crosswalk import standardise_areacodes
from pipeline.readers.tables import apply_mapping, check_mapping, read_tables, source_names
from pipeline.stages.context import StageRun

log = logging.getLogger(__name__)

#: The inputs read as tables, in reading order.
TABULAR = ("observations", "n_rate", "sown_area", "fertilizer_n", "irrigation", "covariates", "crosswalk")
#: Inputs an NBS source may feed.
NBS_INPUTS = ("sown_area", "n_rate", "irrigation")


@dataclass
class Table:
    """One input read from all its sources: contract columns, the rows as read, user headers."""

    frame: pd.DataFrame
    originals: pd.DataFrame
    names: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The file(s) named in messages about the whole input."""
        return ", ".join(str(f) for f in self.files[:3]) + (" ..." if len(self.files) > 3 else "")


# ---------------------------------------------------------------------------------------------
# Reading the sources of one input
# ---------------------------------------------------------------------------------------------
def _read_source(cfg: Config, name: str, spec: InputSpec) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    schema = C.INPUT_SCHEMAS[name]
    mapping = load_mapping(cfg, spec)
    check_mapping(mapping, schema.names, str(cfg.path(spec.mapping)) if spec.mapping else f"inputs.{name}")
    if spec.unit is not None and "unit" not in schema.names:
        raise ConfigError(
            f"inputs.{name}: `unit:` sets the `unit` column of n_rate and sown_area only. Fix: for "
            "observations set `constants: {n_rate_unit: ..., flux_unit: ...}` in the mapping"
        )
    raw = read_tables(cfg.path(spec.path), encoding=spec.encoding, sheet=spec.sheet)
    mapped = (
        pd.concat([apply_mapping(g, mapping) for _, g in raw.groupby(C.SOURCE_FILE, sort=False)])
        if raw[C.SOURCE_FILE].nunique() > 1
        else apply_mapping(raw, mapping)
    )
    if spec.unit is not None:
        if "unit" in mapped.columns and mapped["unit"].notna().any() and "unit" not in mapping.constants:
            given = mapped["unit"].dropna().astype(str).str.strip()
            if not (given == spec.unit).all():
                i = given.index[given != spec.unit][0]
                raise InputError(
                    mapped.at[i, C.SOURCE_FILE],
                    f"the file's unit '{given[i]}' disagrees with `unit: {spec.unit}` of this input in the config",
                    "remove one of the two",
                    row=int(mapped.at[i, C.SOURCE_ROW]),
                    column="unit",
                )
        mapped["unit"] = spec.unit
    return mapped, raw, source_names(mapping)


def read_input(cfg: Config, name: str) -> Table | None:
    """Read every table-format source of input ``name`` (``None`` when it has none).

    Each source keeps its own mapping, encoding, sheet and unit; rows are concatenated.
    """
    specs = [s for s in cfg.inputs.sources(name) if s.format == "table"]
    if not specs:
        return None
    frames, originals, names, files = [], [], {}, []
    for spec in specs:
        mapped, raw, src_names = _read_source(cfg, name, spec)
        frames.append(mapped)
        originals.append(raw)
        names.update(src_names)
        files += io.expand_paths(cfg.path(spec.path))
    return Table(pd.concat(frames, ignore_index=True), pd.concat(originals, ignore_index=True), names, files)


def _validated(table: Table, name: str) -> pd.DataFrame:
    valid, _ = C.ensure_valid(table.frame, C.INPUT_SCHEMAS[name], on_error="raise", names=table.names)
    return valid


def _check_units(df: pd.DataFrame, checker, what: str, names: dict[str, str]) -> None:
    bad = ~df["unit"].map(checker).astype(bool)
    if bad.any():
        i = df.index[bad.to_numpy()][0]
        raise InputError(
            df.at[i, C.SOURCE_FILE],
            f"unknown {what} unit '{df.at[i, 'unit']}'",
            "use one of the units listed in docs/data_contract.md, or set `unit:` for this source in the config",
            row=int(df.at[i, C.SOURCE_ROW]),
            column=names.get("unit", "unit"),
        )


def _check_codes(
    df: pd.DataFrame, column: str, known: set[int], problem: str, fix: str, names: dict[str, str], divisor: int = 1
) -> None:
    """Raise for the first row whose code (// divisor) is not in ``known``."""
    bad = ~(df[column].astype(int) // divisor).isin(known)
    if bad.any():
        i = df.index[bad.to_numpy()][0]
        raise InputError(
            df.at[i, C.SOURCE_FILE],
            f"unknown {column.replace('_', ' ')} {df.at[i, column]} ({problem})",
            fix,
            row=int(df.at[i, C.SOURCE_ROW]),
            column=names.get(column, column),
        )


def _check_level(df: pd.DataFrame, level: str, names: dict[str, str]) -> None:
    """Codes of a province-level input end in 0000, of a prefecture-level input in 00."""
    divisor = {"province": 10_000, "prefecture": 100}.get(level)
    if divisor is None:
        return
    bad = df["county_code"].astype(int) % divisor != 0
    if bad.any():
        i = df.index[bad.to_numpy()][0]
        raise InputError(
            df.at[i, C.SOURCE_FILE],
            f"code {df.at[i, 'county_code']} is not a {level}-level code "
            f"(inputs.unit_level = {level}: codes end in {str(divisor)[1:]})",
            "use the unit's 6-digit code, or set inputs.unit_level to the level of the data",
            row=int(df.at[i, C.SOURCE_ROW]),
            column=names.get("county_code", "county_code"),
        )


def _observation_window(cfg: Config) -> tuple[int, int]:
    this_year = _dt.date.today().year
    w = cfg.ingest.observation_years
    last = this_year if w.last_year is None else w.last_year
    if last > this_year:
        raise ConfigError(
            f"ingest.observation_years.last_year ({last}) is in the future. Fix: leave it unset "
            f"(the current year, {this_year}) or give a past year"
        )
    if w.first_year > last:
        raise ConfigError(
            f"ingest.observation_years.first_year ({w.first_year}) is after last_year ({last}). Fix: swap them"
        )
    return w.first_year, last


def ingest_observations(
    cfg: Config, quarantine_to: Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Read, validate and harmonise the configured observations.

    Returns
    -------
    observations, quarantine, violations, n_read
        When more rows are quarantined than ``ingest.max_reject_fraction`` allows, the
        quarantine table is written to ``quarantine_to`` (if given) and
        :class:`~pipeline.errors.TooManyRejectionsError` raised.
    """
    table = read_input(cfg, "observations")
    if table is None:
        raise ConfigError("inputs.observations: an NBS source cannot hold field observations. Fix: give a table")
    lim = cfg.ingest.limits
    obs, quarantine, violations = harmonise_observations(
        table.frame,
        cfg.root,
        flux_limits=(
            lim.min_flux_kg_n2o_n_ha.value,
            lim.max_flux_kg_n2o_n_ha.value,
            lim.min_flux_kg_n2o_n_ha.action,
            lim.max_flux_kg_n2o_n_ha.action,
        ),
        max_n_rate_kg_ha=(lim.max_n_rate_kg_ha.value, lim.max_n_rate_kg_ha.action),
        years=_observation_window(cfg),
        names=table.names,
        originals=table.originals,
    )
    obs = _borrow_observations(obs, cfg.ingest.borrow_observations)
    n_read = len(table.frame)
    log.info("observations: %d rows read, %d accepted, %d quarantined", n_read, len(obs), len(quarantine))
    if quarantine_to is not None and len(quarantine) / max(n_read, 1) > cfg.ingest.max_reject_fraction:
        # The reasons are what the user needs to fix the input: write them (whole) before failing.
        io.write_csv(quarantine, quarantine_to)
    check_rejections(len(quarantine), n_read, cfg.ingest.max_reject_fraction, table.label)
    return obs, quarantine, violations, n_read


def _borrow_observations(obs: pd.DataFrame, borrow: dict[str, str]) -> pd.DataFrame:
    """Copies of a donor class's records for crops that have none (``ingest.borrow_observations``).

    A copy keeps every value and its source file and row; its ``obs_id`` gets ``@<crop>``.
    """
    if not borrow:
        return obs
    extra = []
    for crop, donor in sorted(borrow.items()):
        own = int((obs["crop"] == crop).sum())
        if own:
            raise ConfigError(
                f"ingest.borrow_observations.{crop}: {crop} has {own} observations of its own. "
                f"Fix: remove the entry, or use fit.pooling.{crop} to share slopes with {donor}"
            )
        rows = obs[obs["crop"] == donor].copy()
        if rows.empty:
            raise ConfigError(
                f"ingest.borrow_observations.{crop}: the donor class {donor} has no observations. "
                "Fix: name a class with observations"
            )
        rows["obs_id"] = rows["obs_id"].astype(str) + f"@{crop}"
        rows["crop"] = crop
        extra.append(rows)
        log.info("observations: %s has none of its own and uses the %d records of %s", crop, len(rows), donor)
    out = pd.concat([obs, *extra], ignore_index=True)
    return out.astype(obs.dtypes.to_dict()).sort_values("obs_id", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# NBS sources
# ---------------------------------------------------------------------------------------------
def _nbs_tables(cfg: Config, years: tuple[int, int]) -> tuple[dict[str, Table], pd.DataFrame | None, list[Path]]:
    """Contract tables built from every ``format: nbs`` source (read together: one indicator
    may serve several inputs, e.g. total sown area for the irrigated share)."""
    specs = {name: [s for s in cfg.inputs.sources(name) if s.format == "nbs"] for name in TABULAR}
    wrong = [n for n, s in specs.items() if s and n not in NBS_INPUTS]
    if wrong:
        raise ConfigError(f"inputs.{wrong[0]}: `format: nbs` is for {', '.join(NBS_INPUTS)} only. Fix: give a table")
    paths = sorted({p for n in NBS_INPUTS for s in specs[n] for p in io.expand_paths(cfg.path(s.path))})
    if not paths:
        return {}, None, []
    tidy = nbs.read_nbs(paths)
    lo, hi = years
    rows = tidy.set_index(["indicator", "adcode", "year"])[["source_file", "source_row"]]
    rows = rows[~rows.index.duplicated()]

    def where(indicators: list[str], frame: pd.DataFrame) -> pd.DataFrame:
        files, lines = [], []
        for ind, code, year in zip(indicators, frame["adcode"], frame["year"], strict=True):
            f, r = rows.loc[(ind, code, year)] if (ind, code, year) in rows.index else (str(paths[0]), 1)
            files.append(f)
            lines.append(int(r))
        return pd.DataFrame({C.SOURCE_FILE: files, C.SOURCE_ROW: lines}, index=frame.index)

    out: dict[str, Table] = {}
    area = nbs.crop_sown_area_ha(tidy, years=range(lo, hi + 1), blank_as_zero=True)
    area = area[area["crop"].isin(C.CROPS)].reset_index(drop=True)
    ind = [nbs.CROP_INDICATORS.get(c, nbs.TOTAL_SOWN) for c in area["crop"]]
    frame = pd.DataFrame(
        {
            "county_code": area["adcode"].astype(str),
            "year": area["year"].astype(str),
            "crop": area["crop"],
            "area": area["sown_area_ha"].astype(str),
            "unit": "ha",
        }
    )
    frame = frame.join(where(ind, area))
    if specs["sown_area"]:
        out["sown_area"] = Table(frame, frame, {}, paths)
    alloc = None
    if specs["n_rate"]:
        na = cfg.ingest.n_allocation
        if na is None:
            raise ConfigError(
                "inputs.n_rate is an NBS source, which gives fertilizer N per province, not per crop. "
                "Fix: set ingest.n_allocation (see config/examples/china_provinces_nbs.yaml)"
            )
        fert = nbs.fertilizer_n_kg(tidy, years=range(lo, hi + 1))
        missing = fert[fert[["n_straight_fert_kg", "n_compound_fert_kg"]].isna().any(axis=1)]
        if len(missing):
            r = missing.iloc[0]
            f, line = (
                rows.loc[("n_straight_fert_kg", r["adcode"], r["year"])]
                if ("n_straight_fert_kg", r["adcode"], r["year"]) in rows.index
                else (str(paths[0]), None)
            )
            raise InputError(
                f,
                f"no fertilizer N for {r['province']} {int(r['year'])}",
                "supply the value or narrow ingest.first_year-last_year to the years with data",
                row=line,
                column="数值",
            )
        weights = {c: s.weight for c, s in na.crop_n_intensity.items()}
        areas = area[area["crop"].isin(list(weights))]
        alloc = allocate_n(areas, fert, weights, compound_n_share=na.compound_n_share.value)
        check_allocation(alloc, rtol=na.rtol)
        nr = pd.DataFrame(
            {
                "county_code": alloc["adcode"].astype(str),
                "year": alloc["year"].astype(str),
                "crop": alloc["crop"].astype(str),
                "n_rate": alloc["n_rate_kg_ha"].astype(str),
                "unit": "kg N/ha",
            }
        )
        nr = nr.join(where(["n_straight_fert_kg"] * len(alloc), alloc))
        out["n_rate"] = Table(nr, nr, {}, paths)
    if specs["irrigation"]:
        irr = nbs.irrigated_fraction(tidy, years=range(lo, hi + 1))
        mm = cfg.ingest.defaults.irrigation_mm
        if mm is None:
            raise ConfigError(
                "inputs.irrigation is an NBS source, which gives no irrigation depth. Fix: set "
                "ingest.defaults.irrigation_mm (mm/yr on irrigated land) and irrigation_mm_source"
            )
        fr = pd.DataFrame(
            {
                "prefecture_code": (irr["adcode"] // 100).astype(str),
                "year": irr["year"].astype(str),
                "irrigated_fraction": irr["irrigated_fraction"].astype(str),
                "irrigation_mm": str(mm),
            }
        )
        fr = fr.join(where(["irrigated_area_ha"] * len(irr), irr))
        out["irrigation"] = Table(fr, fr, {}, paths)
    return out, alloc, paths


# ---------------------------------------------------------------------------------------------
# Regional fertilizer-N totals (inputs.fertilizer_n)
# ---------------------------------------------------------------------------------------------
def _row_error(df: pd.DataFrame, i: object, problem: str, fix: str, column: str, names: dict[str, str]) -> InputError:
    return InputError(
        df.at[i, C.SOURCE_FILE], problem, fix, row=int(df.at[i, C.SOURCE_ROW]), column=names.get(column, column)
    )


def _allocated_n_rates(cfg: Config, fert: Table, sown: Table, years: tuple[int, int]) -> tuple[Table, pd.DataFrame]:
    """Crop N rates of every unit from the regional totals of ``inputs.fertilizer_n``.

    Each total row gives ``n_fertilizer_kg`` (kg N) or ``n_straight_kg`` with ``n_compound_kg``;
    the region level is read from the codes (one level per input, not finer than the units);
    :func:`~pipeline.methods.allocation.allocate_to_units` does the allocation and
    :func:`~pipeline.methods.allocation.check_allocation` the sum-back check.
    """
    na = cfg.ingest.n_allocation
    if na is None:
        raise ConfigError(
            "inputs.fertilizer_n gives fertilizer N per region, not per crop. Fix: set ingest.n_allocation "
            "(relative crop N intensities with sources; see config/examples/nbs_crop_n_intensity.yaml)"
        )
    lo, hi = years
    totals = _validated(fert, "fertilizer_n")
    totals = totals[totals["year"].astype(int).between(lo, hi)].copy()
    if totals.empty:
        raise InputError(fert.label, f"no fertilizer N total in the years {lo}-{hi}", "supply totals for those years")
    for col in ("n_fertilizer_kg", "n_straight_kg", "n_compound_kg"):
        if col not in totals.columns:
            totals[col] = np.nan
    given = totals["n_fertilizer_kg"].notna()
    split = totals["n_straight_kg"].notna() | totals["n_compound_kg"].notna()
    header = {c: repr(fert.names.get(c, c)) for c in ("n_fertilizer_kg", "n_straight_kg", "n_compound_kg")}
    no_straight = split & totals["n_straight_kg"].isna()
    for bad, column, problem, fix in (
        (
            given & split,
            "n_fertilizer_kg",
            f"gives both a total N ({header['n_fertilizer_kg']}) and straight/compound N",
            "keep one of the two",
        ),
        (
            ~given & ~split,
            "n_fertilizer_kg",
            f"has no fertilizer N ({header['n_fertilizer_kg']}, or {header['n_straight_kg']} with "
            f"{header['n_compound_kg']})",
            "fill the total",
        ),
        (no_straight, "n_straight_kg", f"gives compound but no straight N {header['n_straight_kg']}", "give both"),
        (
            split & totals["n_compound_kg"].isna(),
            "n_compound_kg",
            f"gives straight but no compound fertilizer {header['n_compound_kg']}",
            "give both (0 when there is none)",
        ),
    ):
        if bad.any():
            i = totals.index[bad.to_numpy()][0]
            raise _row_error(totals, i, f"region {totals.at[i, 'region_code']}: {problem}", fix, column, fert.names)
    levels = region_level(totals["region_code"].to_numpy())
    level = str(levels[0])
    unit_divisor = {"province": 10_000, "prefecture": 100}.get(cfg.inputs.unit_level, 1)
    for bad, problem, fix in (
        (levels != level, f"is not a {level} code like the first row's", "give every total at one level"),
        (
            np.full(len(levels), REGION_DIVISORS[level] < unit_divisor),
            f"is a {level} code, finer than the {cfg.inputs.unit_level} units (inputs.unit_level)",
            "give totals for regions that contain whole units",
        ),
    ):
        if bad.any():
            i = totals.index[bad][0]
            raise _row_error(
                totals, i, f"region code {totals.at[i, 'region_code']} {problem}", fix, "region_code", fert.names
            )
    area = _validated(sown, "sown_area")
    _check_units(area, units.is_area_unit, "area", sown.names)
    area = area[area["year"].astype(int).between(lo, hi)].copy()
    empty = area["area"].isna()
    if empty.any():
        i = area.index[empty.to_numpy()][0]
        raise _row_error(
            area,
            i,
            "no sown area, which the top-down N allocation needs for every unit, crop and year",
            "fill the area (0 if the crop is not grown)",
            "area",
            sown.names,
        )
    area["area_ha"] = units.area_to_ha(area["area"].to_numpy(dtype=float), area["unit"].to_numpy(dtype=object))
    compound = totals["n_compound_kg"].fillna(0.0).astype(float)
    straight = totals["n_fertilizer_kg"].fillna(totals["n_straight_kg"]).astype(float)
    alloc, rates = allocate_to_units(
        area,
        totals.assign(n_straight_fert_kg=straight, n_compound_fert_kg=compound),
        {c: s.weight for c, s in na.crop_n_intensity.items()},
        compound_n_share=na.compound_n_share.value,
        divisor=REGION_DIVISORS[level],
    )
    check_allocation(alloc, keys=("region_code", "year"), rtol=na.rtol)
    src = totals.set_index([totals["region_code"].astype(int), totals["year"].astype(int)])
    at = pd.MultiIndex.from_arrays([rates["region_code"], rates["year"]])
    frame = pd.DataFrame(
        {
            "county_code": rates["county_code"].astype(str),
            "year": rates["year"].astype(str),
            "crop": rates["crop"].astype(str),
            "n_rate": rates["n_rate_kg_ha"].astype(str),
            "unit": "kg N/ha",
            C.SOURCE_FILE: src[C.SOURCE_FILE].reindex(at).to_numpy(),
            C.SOURCE_ROW: src[C.SOURCE_ROW].reindex(at).to_numpy(),
        }
    )
    return Table(frame, frame, {}, fert.files), alloc


def _merge(a: Table | None, b: Table | None) -> Table | None:
    if a is None or b is None:
        return a or b
    return Table(
        pd.concat([a.frame, b.frame], ignore_index=True),
        pd.concat([a.originals, b.originals], ignore_index=True),
        {**a.names, **b.names},
        [*a.files, *b.files],
    )


def _irrigation_defaults(table: Table, cfg: Config) -> Table:
    """Fill ``irrigated_fraction``/``irrigation_mm`` from ``ingest.defaults`` when a source lacks the column."""
    df = table.frame.copy()
    d = cfg.ingest.defaults
    for col, default, why in (
        ("irrigated_fraction", d.irrigated_fraction, "there is no neutral share: 0 would call irrigated land rain-fed"),
        ("irrigation_mm", d.irrigation_mm, "the depth sets the water input of irrigated land"),
    ):
        if col not in df.columns:
            df[col] = pd.NA
        empty = df[col].isna()
        if empty.all() and default is None and col not in table.names:
            raise InputError(
                table.label,
                f"no '{col}' column in the irrigation input ({why})",
                f"map your column to {col}, or set ingest.defaults.{col} (documented in docs/data_contract.md)",
                column=col,
            )
        if default is not None:
            df[col] = df[col].where(~empty, str(default))
    return Table(df, table.originals, table.names, table.files)


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------
def run(cfg: Config) -> list[Path]:
    """Run the ingest stage and return the files written."""
    with dask_context(cfg.dask):
        return _run(cfg)


def _limit_error(report: pd.DataFrame, limit: str, report_path: Path, root: Path) -> InputError:
    first = report.iloc[0]
    n = len(report)
    return InputError(
        first["file"],
        f"{n} row(s) over the plausibility limit {limit} = {first['limit_value']:g} "
        f"({first['value']:g} {first['unit']} here); every one is listed in "
        f"{_rel(report_path, root)}",
        "check the unit and the values, or set the limit's value or `action: warn` under ingest.limits",
        row=int(first["row"]),
        column=str(first["column"]),
    )


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _run(cfg: Config) -> list[Path]:
    stage = StageRun(cfg, "ingest")
    years = (cfg.ingest.first_year, cfg.ingest.last_year)
    level = cfg.inputs.unit_level
    lim = cfg.ingest.limits
    report_path = stage.output("violations")

    obs, quarantine, violations, n_obs_read = ingest_observations(cfg, stage.output("quarantine"))
    obs_errors = violations[violations["action"] == "error"]

    boundaries = read_boundaries(cfg.path(cfg.inputs.boundaries.path))
    present = set(boundaries["county_code"].astype(int))
    area_km2 = dict(
        zip(boundaries["county_code"].astype(int), boundaries.to_crs("EPSG:6933").area.to_numpy() / 1e6, strict=True)
    )

    nbs_tables, alloc, nbs_files = _nbs_tables(cfg, years)
    merged = {n: _merge(read_input(cfg, n), nbs_tables.get(n)) for n in ("n_rate", "sown_area", "irrigation")}
    alloc_keys = ("province_code", "year")
    fert = read_input(cfg, "fertilizer_n")
    if fert is not None and merged["sown_area"] is not None:
        if alloc is not None:
            raise ConfigError(
                "inputs.fertilizer_n and an NBS inputs.n_rate source both give regional N totals. "
                "Fix: keep one of the two"
            )
        allocated, alloc = _allocated_n_rates(cfg, fert, merged["sown_area"], years)
        alloc_keys = ("region_code", "year")
        merged["n_rate"] = _merge(merged["n_rate"], allocated)
    tables: dict[str, Table] = {}
    for n, t in merged.items():
        if t is None:
            also = " (or regional N totals in inputs.fertilizer_n)" if n == "n_rate" else ""
            raise ConfigError(f"inputs.{n}: no source configured. Fix: give at least one `path:`{also}")
        tables[n] = t

    crosswalk_table = read_input(cfg, "crosswalk")
    if crosswalk_table is not None:
        crosswalk, _ = C.ensure_valid(standardise_areacodes(crosswalk_table.frame), C.CROSSWALK_RAW, on_error="raise")
        graph = successor_graph(crosswalk)
    else:
        graph = {}
    n_rate = _validated(tables["n_rate"], "n_rate")
    sown_area = _validated(tables["sown_area"], "sown_area")
    names_n, names_a = tables["n_rate"].names, tables["sown_area"].names
    _check_units(n_rate, units.is_n_rate_unit, "N-rate", names_n)
    _check_units(sown_area, units.is_area_unit, "area", names_a)
    _check_level(n_rate, level, names_n)
    _check_level(sown_area, level, names_a)

    # Plausibility limits: every violation listed, then the error (if any) names the count.
    reports = [
        violations,
        n_rate_violations(
            n_rate, lim.max_n_rate_kg_ha.value, lim.max_n_rate_kg_ha.action, names_n.get("n_rate", "n_rate"), cfg.root
        ),
        sown_land_violations(
            sown_area,
            area_km2,
            lim.max_sown_per_land_area.value,
            lim.max_sown_per_land_area.action,
            names_a.get("area", "area"),
            cfg.root,
        ),
    ]
    report = (
        pd.concat([r for r in reports if len(r)], ignore_index=True)
        if any(len(r) for r in reports)
        else pd.DataFrame(columns=VIOLATION_COLUMNS)
    )
    report = report.sort_values(["table", "file", "row", "limit"], kind="stable").reset_index(drop=True)
    fatal = report[(report["action"] == "error") & (report["table"] != "observations")]
    if len(fatal):
        io.write_csv(report, report_path)
        limit = str(fatal["limit"].iloc[0])
        raise _limit_error(fatal[fatal["limit"] == limit].reset_index(drop=True), limit, report_path, cfg.root)

    codes = np.union1d(n_rate["county_code"].astype(int).unique(), sown_area["county_code"].astype(int).unique())
    weights = resolve(codes, present, graph, area_km2)
    resolvable = set(weights["code"])
    fix = (
        "correct the code, or add its history to the crosswalk file (inputs.crosswalk)"
        if graph
        else "correct the code, or configure inputs.crosswalk to re-key retired codes"
    )
    for table, names in ((n_rate, names_n), (sown_area, names_a)):
        _check_codes(
            table,
            "county_code",
            resolvable,
            f"not a {level} of the boundaries" + (", and no successor in the crosswalk" if graph else ""),
            fix,
            names,
        )
    core = harmonise_activity(
        n_rate, sown_area, weights, years, cfg.ingest.max_gap_years, tables["n_rate"].label, tables["sown_area"].label
    )

    irr_table = _irrigation_defaults(tables["irrigation"], cfg)
    irrigation_raw = _validated(irr_table, "irrigation")
    prefectures = np.unique(core["county_code"].to_numpy() // 100)
    # Any failed irrigation check is fatal (docs/data_contract.md): a code that matches no
    # prefecture of the boundaries is a wrong code, not a row to drop. A prefecture of the
    # boundaries without activity data (a statistics table covers more than the activity
    # inputs) is valid and unused: counted in the manifest, never silently.
    boundary_prefectures = {c // 100 for c in present}
    _check_codes(
        irrigation_raw,
        "prefecture_code",
        boundary_prefectures,
        "no present-day unit of the boundaries lies in this prefecture",
        "correct the code (the first four digits of a present-day code), or remove the row",
        irr_table.names,
    )
    irrigation, unused_pref = harmonise_irrigation(irrigation_raw, prefectures, years, cfg.ingest.max_gap_years)
    n_irrigation_unused = int(irrigation_raw["prefecture_code"].astype(int).isin(unused_pref).sum())
    if n_irrigation_unused:
        log.info(
            "irrigation: %d rows of %d prefecture(s) without activity data are not used",
            n_irrigation_unused,
            len(unused_pref),
        )

    cov_table = read_input(cfg, "covariates")
    covariates = None
    if cov_table is not None:
        covariates = _validated(cov_table, "covariates")
        _check_codes(
            covariates,
            "county_code",
            present,
            f"covariates must use the boundary file's present-day {level} codes",
            "use the present-day code of the unit",
            cov_table.names,
        )
    activity = build_activity(
        core,
        irrigation,
        covariates,
        cov_table.label if cov_table else "inputs.covariates",
        irr_table.label,
        cfg.ingest.defaults.climate,
    )

    mapping_log = weights[weights["code"] != weights["county_code"]].copy()
    written = [
        io.write_parquet(obs, stage.output("observations")),
        io.write_parquet(activity, stage.output("activity")),
        io.write_csv(quarantine.sort_values(["table", "file", "row"], kind="stable"), stage.output("quarantine")),
        io.write_csv(report, report_path),
        io.write_csv(mapping_log, stage.output("code_mapping")),
    ]
    extra: dict[str, object] = {}  # the unit level is in every manifest (StageRun)
    if alloc is not None:
        written.append(io.write_csv(alloc, stage.output("n_allocation")))
        summary = check_allocation(alloc, keys=alloc_keys, rtol=cfg.ingest.n_allocation.rtol)  # type: ignore[union-attr]
        extra["n_allocation"] = {
            "source": "inputs.fertilizer_n" if alloc_keys[0] == "region_code" else "inputs.n_rate (nbs)",
            "regions": len(summary),
            "max_rel_error": float(summary["rel_error"].max()),
            "rtol": cfg.ingest.n_allocation.rtol,  # type: ignore[union-attr]
            "compound_n_share": cfg.ingest.n_allocation.compound_n_share.value,  # type: ignore[union-attr]
            "n_total_kg_by_year": {int(y): float(v) for y, v in summary.groupby("year")["n_total_kg"].sum().items()},
        }
    input_files = [
        f
        for name in TABULAR
        for spec in cfg.inputs.sources(name)
        if spec.format == "table"
        for f in io.expand_paths(cfg.path(spec.path))
    ]
    input_files += nbs_files
    input_files.append(cfg.path(cfg.inputs.boundaries.path))
    stage.record_inputs(sorted(set(input_files)))
    counts = {
        "observations_read": n_obs_read,
        "observations_accepted": len(obs),
        "quarantined_rows": len(quarantine),
        "limit_violations": int(len(report)),
        "limit_violations_quarantined": int(len(obs_errors)),
        "activity_rows": len(activity),
        "units_with_activity": int(activity["county_code"].nunique()),
        "counties_with_activity": int(activity["county_code"].nunique()),
        "historical_codes_remapped": int(mapping_log["code"].nunique()),
        "area_cells_filled": int(activity["area_filled"].sum()),
        "n_rate_cells_filled": int(activity["n_rate_filled"].sum()),
        "irrigation_rows_unused_no_activity": n_irrigation_unused,
    }
    extra["counts"] = counts
    log.info("ingest: %s", counts)
    return stage.finish(written, extra)

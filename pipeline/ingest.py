"""Ingest stage: validate user inputs, harmonise units and county codes, write Parquet tables.

Inputs (see docs/data_contract.md): field observations, N rate and sown area per county x crop x
year, irrigation per prefecture x year, county covariates, boundaries and a code crosswalk. Each
may be one file or a folder/glob of many, in CSV (UTF-8 or GBK), Parquet or XLSX, read in
parallel with Dask.

Outputs under ``<processed>/ingest/``: ``observations.parquet``, ``activity.parquet`` (present-day
county codes, gaps of up to ``ingest.max_gap_years`` interpolated and flagged),
``quarantine.csv`` (every rejected row and why), ``code_mapping.csv`` (how each historical code
was re-keyed) and ``manifest.json`` (written last; counts, input hashes, config).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import contract as C
from pipeline import io, units
from pipeline.boundaries import read_boundaries
from pipeline.config import Config, InputSpec, load_mapping
from pipeline.crosswalk import apply_crosswalk, resolve, standardise_areacodes, successor_graph
from pipeline.errors import InputError, TooManyRejectionsError

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = C.QUARANTINE.names


# ---------------------------------------------------------------------------------------------
# Observations
# ---------------------------------------------------------------------------------------------
def _quarantine_rows(rejects: pd.DataFrame, table: str, root: Path | None = None) -> pd.DataFrame:
    """Rejected rows in the quarantine format (file, line, column, reason, the row as JSON)."""
    if rejects.empty:
        return pd.DataFrame(columns=QUARANTINE_COLUMNS)
    data_cols = [c for c in rejects.columns if c not in (*C.BOOKKEEPING, "reason", "column")]
    records = [json.dumps({k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v))
                           for k, v in row.items()}, ensure_ascii=False, sort_keys=True, default=str)
               for row in rejects[data_cols].to_dict(orient="records")]
    return pd.DataFrame({
        "table": table,
        "file": [_relative(f, root) for f in rejects[C.SOURCE_FILE]],
        "row": rejects[C.SOURCE_ROW].astype(int).to_numpy(),
        "column": rejects["column"].to_numpy(),
        "reason": rejects["reason"].to_numpy(),
        "record": records,
    })


def _relative(path: str, root: Path | None) -> str:
    """A path relative to the project root when inside it (outputs must not embed machine paths)."""
    if root is None:
        return Path(path).name
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return Path(path).name


def harmonise_observations(
    raw: pd.DataFrame,
    root: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate raw observation rows and convert them to the processed units.

    Parameters
    ----------
    raw
        Observations in contract column names (after the column mapping), as read by
        :func:`pipeline.io.read_tables` (every cell text, with ``_file``/``_row``).
    root
        Project root, to store source files as relative paths.

    Returns
    -------
    observations, quarantine
        ``observations`` follows :data:`pipeline.contract.OBSERVATIONS`; ``quarantine`` lists
        every rejected row with its reason. Zero and negative fluxes are kept: how a model
        treats them is the fit stage's documented rule.

    Notes
    -----
    Flux totals: kg N2O-N/ha over the measured period = value x unit factor (x duration in
    days for rate units); see :func:`pipeline.units.flux_to_kg_n2o_n_ha`.
    """
    valid, rejects = C.ensure_valid(raw, C.OBSERVATIONS_RAW, on_error="quarantine")
    # Unit strings and the duration they may need are row-level checks.
    bad_n_unit = ~valid["n_rate_unit"].map(units.is_n_rate_unit).astype(bool)
    bad_flux_unit = ~valid["flux_unit"].map(units.is_flux_unit).astype(bool)
    needs_duration = valid["flux_unit"].map(
        lambda u: units.is_flux_unit(u) and units.flux_needs_duration(u)).astype(bool)
    no_duration = needs_duration & valid["duration_days"].isna()
    problems = [
        (bad_n_unit, "n_rate_unit", lambda v: f"unknown N-rate unit '{v['n_rate_unit']}' (use kg N/ha or kg N/mu)"),
        (bad_flux_unit, "flux_unit", lambda v: f"unknown flux unit '{v['flux_unit']}' (accepted: {', '.join(units.FLUX_UNITS)})"),
        (no_duration, "duration_days", lambda v: f"flux unit '{v['flux_unit']}' is a rate and needs duration_days"),
    ]
    extra = []
    for mask, column, why in problems:
        rows = valid[mask.to_numpy()]
        if len(rows):
            r = rows.copy()
            r["column"] = column
            r["reason"] = [f"{column}: {why(v)}" for _, v in rows.iterrows()]
            extra.append(r)
    if extra:
        more = pd.concat(extra)
        more = more[~more.index.duplicated()]
        rejects = pd.concat([rejects, more])
        valid = valid.drop(index=more.index)

    obs = valid.copy()
    obs["study_id"] = obs["study_id"].fillna(obs["site_id"])
    rice_missing = (obs["crop"] == "rice") & obs["water_regime"].isna()
    if rice_missing.any():
        log.info("observations: %d rice rows report no water_regime (the fit assumes fit.rice_water_regime)",
                 int(rice_missing.sum()))
    obs.loc[obs["crop"] != "rice", "water_regime"] = obs.loc[obs["crop"] != "rice", "water_regime"].fillna("upland")
    obs["n_rate_kg_ha"] = units.n_rate_to_kg_ha(obs["n_rate"].to_numpy(dtype=float), obs["n_rate_unit"].to_numpy(dtype=object))
    obs["flux_kg_n2o_n_ha"] = units.flux_to_kg_n2o_n_ha(
        obs["flux"].to_numpy(dtype=float), obs["flux_unit"].to_numpy(dtype=object),
        obs["duration_days"].to_numpy(dtype=float, na_value=np.nan))
    obs, implausible = _implausible_after_conversion(obs)
    if len(implausible):
        rejects = pd.concat([rejects, implausible])
    obs["irrigation_mm"] = obs["irrigation_mm"].fillna(0.0)
    obs["water_input_mm"] = obs["precip_mm"] + obs["irrigation_mm"]
    obs["source_file"] = [_relative(f, root) for f in obs[C.SOURCE_FILE]]
    obs["source_row"] = obs[C.SOURCE_ROW].astype("Int64")
    out = _conform(obs, C.OBSERVATIONS)
    return out.sort_values("obs_id", kind="stable").reset_index(drop=True), _quarantine_rows(rejects, "observations", root)


def _implausible_after_conversion(obs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off rows whose converted N rate or flux is outside the contract's bounds."""
    checks = [
        ("n_rate_kg_ha", "n_rate_unit", C.OBSERVATIONS.column("n_rate_kg_ha")),
        ("flux_kg_n2o_n_ha", "flux_unit", C.OBSERVATIONS.column("flux_kg_n2o_n_ha")),
    ]
    bad = pd.Series(False, index=obs.index)
    reasons = pd.Series("", index=obs.index, dtype=object)
    columns = pd.Series("", index=obs.index, dtype=object)
    for converted, unit_col, col in checks:
        v = obs[converted]
        out = ((v < col.minimum) | (v > col.maximum)) & ~bad
        reasons[out] = [f"{converted}: {x:g} {col.unit} after conversion is outside [{col.minimum:g}, "
                        f"{col.maximum:g}] (check {unit_col} '{u}')" for x, u in zip(v[out], obs.loc[out, unit_col])]
        columns[out] = unit_col
        bad |= out
    rejected = obs[bad].copy()
    rejected["reason"] = reasons[bad]
    rejected["column"] = columns[bad]
    return obs[~bad].copy(), rejected


def _conform(df: pd.DataFrame, schema: C.TableSchema) -> pd.DataFrame:
    """Select the schema's columns in order with stable dtypes (Parquet bytes must not vary)."""
    out = pd.DataFrame(index=df.index)
    for col in schema.columns:
        s = df[col.name]
        if col.kind == "str":
            out[col.name] = s.astype("string")
        elif col.kind == "int":
            out[col.name] = pd.to_numeric(s).astype("Int64") if col.nullable else pd.to_numeric(s).astype("int64")
        elif col.kind == "bool":
            out[col.name] = s.astype(bool)
        else:
            out[col.name] = pd.to_numeric(s).astype("float64")
    return out


def check_rejections(n_rejected: int, n_total: int, max_fraction: float, file: str) -> None:
    """Fail when the share of quarantined rows exceeds the configured threshold."""
    if n_total and n_rejected / n_total > max_fraction:
        raise TooManyRejectionsError(
            file, f"{n_rejected} of {n_total} rows ({n_rejected / n_total:.1%}) were quarantined, more than "
            f"ingest.max_reject_fraction = {max_fraction:.1%}",
            "read quarantine.csv in the ingest output folder for the reasons; fix the inputs or raise the threshold")


# ---------------------------------------------------------------------------------------------
# Activity
# ---------------------------------------------------------------------------------------------
def _nan_run_lengths(m: np.ndarray) -> np.ndarray:
    """For each cell of a 2-D array, the length of the run of NaNs it belongs to (0 if not NaN)."""
    isnan = np.isnan(m)
    fwd = np.zeros(m.shape, dtype=int)
    bwd = np.zeros(m.shape, dtype=int)
    for j in range(m.shape[1]):
        fwd[:, j] = np.where(isnan[:, j], (fwd[:, j - 1] if j else 0) + 1, 0)
    for j in range(m.shape[1] - 1, -1, -1):
        bwd[:, j] = np.where(isnan[:, j], (bwd[:, j + 1] if j < m.shape[1] - 1 else 0) + 1, 0)
    return np.where(isnan, fwd + bwd - 1, 0)


def fill_gaps(wide: pd.DataFrame, max_gap: int, edges: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interpolate short gaps in annual series (rows = series, columns = consecutive years).

    Parameters
    ----------
    wide
        One row per series, one column per year, NaN for missing.
    max_gap
        Longest run of missing years that is filled.
    edges
        Also fill runs at the start or end of a series (with the nearest value); otherwise
        only interior gaps are filled (linearly).

    Returns
    -------
    filled, flag
        The filled frame (long gaps stay NaN) and a boolean frame marking filled cells.
    """
    m = wide.to_numpy(dtype=float)
    runs = _nan_run_lengths(m)
    interior = wide.interpolate(axis=1, method="linear", limit_area="inside").to_numpy()
    fill = np.isnan(m) & (runs <= max_gap) & ~np.isnan(interior)
    out = np.where(fill, interior, m)
    if edges:
        nearest = wide.ffill(axis=1).bfill(axis=1).to_numpy()
        edge_fill = np.isnan(out) & (runs <= max_gap) & ~np.isnan(nearest)
        out = np.where(edge_fill, nearest, out)
        fill = fill | edge_fill
    return (pd.DataFrame(out, index=wide.index, columns=wide.columns),
            pd.DataFrame(fill, index=wide.index, columns=wide.columns))


def _fill_raw_series(df: pd.DataFrame, value: str, keys: list[str], max_gap: int) -> pd.DataFrame:
    """Interior gap filling of one value column within each historical code's own year span."""
    wide = df.pivot(index=keys, columns="year", values=value)
    filled, flag = fill_gaps(wide, max_gap, edges=False)
    long = filled.stack(future_stack=True).rename(value).to_frame()
    long[f"{value}_filled"] = flag.stack(future_stack=True)
    # Keep only years inside each series' reported span (a retired code's series simply ends).
    # The span counts rows present even with an empty value: those are gaps, not absences.
    observed = df.assign(_present=True).pivot(index=keys, columns="year", values="_present").notna()
    first = observed.idxmax(axis=1)
    last = observed.iloc[:, ::-1].idxmax(axis=1)
    long = long.reset_index()
    span = pd.DataFrame({"first": first, "last": last}).reset_index()
    long = long.merge(span, on=keys)
    long = long[(long["year"] >= long["first"]) & (long["year"] <= long["last"])]
    return long.drop(columns=["first", "last"])


def _in_years(df: pd.DataFrame, years: tuple[int, int], what: str) -> pd.DataFrame:
    """Rows inside the inventory period; the number left out is logged (they are valid data,
    outside the configured ``ingest.first_year``-``last_year``, not errors)."""
    inside = (df["year"] >= years[0]) & (df["year"] <= years[1])
    if not inside.all():
        log.info("%s: %d rows outside %d-%d not used", what, int((~inside).sum()), *years)
    return df[inside].copy()


def _absent_crops_as_zero(mapped: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Add zero-area rows for crops a county-year does not list although it lists others.

    Statistical yearbooks omit crops that are not sown; a county-year that reports some crops
    and has no row at all for another therefore did not sow it. A row that is present with an
    empty value is a gap, not a zero, and is left to gap filling.
    """
    county_years = mapped[["county_code", "year"]].drop_duplicates()
    pairs = mapped[keys].drop_duplicates()
    grid = pairs.merge(county_years, on="county_code")
    absent = grid.merge(mapped[[*keys, "year"]], how="left", indicator=True)
    absent = absent[absent["_merge"] == "left_only"].drop(columns="_merge")
    if absent.empty:
        return mapped
    log.info("activity: %d county-year-crop rows absent from reported county-years taken as not sown (0 ha)",
             len(absent))
    zeros = absent.assign(area_ha=0.0, n_mass_kg=0.0, rate_weight_ha=0.0, area_filled=0.0, n_rate_filled=0.0)
    return pd.concat([mapped, zeros[mapped.columns]], ignore_index=True)


def harmonise_activity(
    n_rate: pd.DataFrame,
    sown_area: pd.DataFrame,
    weights: pd.DataFrame,
    years: tuple[int, int],
    max_gap: int,
    n_rate_file: str = "n_rate",
    area_file: str = "sown_area",
) -> pd.DataFrame:
    """N rate and sown area on present-day codes, complete over ``years``, gaps flagged.

    Parameters
    ----------
    n_rate, sown_area
        Validated :data:`~pipeline.contract.N_RATE_RAW` and :data:`~pipeline.contract.SOWN_AREA_RAW`
        frames (any code vintage, mixed units).
    weights
        :func:`pipeline.crosswalk.resolve` output for every code in the two tables.
    years
        First and last year of the inventory (inclusive).
    max_gap
        Longest gap (years) that is interpolated; longer gaps are an error.

    Returns
    -------
    pandas.DataFrame
        ``county_code, year, crop, area_ha, n_rate_kg_ha, area_filled, n_rate_filled``.

    Notes
    -----
    Units are converted first (mu -> ha, kg/mu -> kg/ha). Interior gaps are filled within each
    historical series; codes are then re-keyed, summing area and N mass (area x rate), and the
    present-day rate is N mass / area (an area-weighted mean). Gaps that remain at the ends of
    the period are filled with the nearest year when short enough.
    """
    keys = ["county_code", "crop"]
    lo, hi = years
    n = _in_years(n_rate, years, n_rate_file)
    a = _in_years(sown_area, years, area_file)
    n["n_rate_kg_ha"] = units.n_rate_to_kg_ha(n["n_rate"].to_numpy(dtype=float, na_value=np.nan),
                                              n["unit"].to_numpy(dtype=object))
    too_high = n["n_rate_kg_ha"] > C.MAX_N_RATE_KG_HA
    if too_high.any():
        i = n.index[too_high.to_numpy()][0]
        raise InputError(n.at[i, C.SOURCE_FILE] if C.SOURCE_FILE in n.columns else n_rate_file,
                         f"N rate {n.at[i, 'n_rate']:g} {n.at[i, 'unit']} = {n.at[i, 'n_rate_kg_ha']:g} kg N/ha "
                         f"is above the plausible maximum {C.MAX_N_RATE_KG_HA:g} kg N/ha",
                         "check the unit column (kg N/ha vs kg N/mu) and the value",
                         row=int(n.at[i, C.SOURCE_ROW]) if C.SOURCE_ROW in n.columns else None, column="n_rate")
    a["area_ha"] = units.area_to_ha(a["area"].to_numpy(dtype=float, na_value=np.nan), a["unit"].to_numpy(dtype=object))
    a = _fill_raw_series(a[[*keys, "year", "area_ha"]], "area_ha", keys, max_gap)
    n = _fill_raw_series(n[[*keys, "year", "n_rate_kg_ha"]], "n_rate_kg_ha", keys, max_gap)
    both = a.merge(n, on=[*keys, "year"], how="outer")
    no_area = both["area_ha"] == 0
    both.loc[no_area & both["n_rate_kg_ha"].isna(), "n_rate_kg_ha"] = 0.0
    both["n_mass_kg"] = both["area_ha"] * both["n_rate_kg_ha"]
    both["rate_weight_ha"] = np.where(both["n_rate_kg_ha"].notna(), both["area_ha"], np.nan)
    both["area_filled"] = both["area_ha_filled"].fillna(False).astype(float)
    both["n_rate_filled"] = both["n_rate_kg_ha_filled"].fillna(False).astype(float)
    mapped = apply_crosswalk(both, weights, ["area_ha", "n_mass_kg", "rate_weight_ha"], [*keys, "year"])
    flags = apply_crosswalk(both[[*keys, "year", "area_filled", "n_rate_filled"]], weights,
                            ["area_filled", "n_rate_filled"], [*keys, "year"])
    mapped = mapped.merge(flags, on=[*keys, "year"])
    mapped = _absent_crops_as_zero(mapped, keys)
    with np.errstate(invalid="ignore", divide="ignore"):
        mapped["n_rate_kg_ha"] = np.where(mapped["rate_weight_ha"] > 0,
                                          mapped["n_mass_kg"] / mapped["rate_weight_ha"],
                                          np.where(mapped["area_ha"] == 0, 0.0, np.nan))

    out_cols = []
    for value, flag, file, col in (("area_ha", "area_filled", area_file, "area"),
                                   ("n_rate_kg_ha", "n_rate_filled", n_rate_file, "n_rate")):
        wide = mapped.pivot(index=keys, columns="year", values=value).reindex(columns=range(lo, hi + 1))
        filled, flagged = fill_gaps(wide, max_gap, edges=True)
        missing = filled.isna()
        if missing.to_numpy().any():
            (code, crop), row = next((idx, r) for idx, r in missing.iterrows() if r.any())
            gap_years = [int(y) for y in row.index[row.to_numpy()]]
            raise InputError(
                file, f"county {code}, crop {crop}: no {col} for {len(gap_years)} year(s) "
                f"({gap_years[0]}-{gap_years[-1]}), more than ingest.max_gap_years = {max_gap}",
                "supply the missing years (0 where the crop is not grown) or raise ingest.max_gap_years",
                column=col)
        prior = mapped.pivot(index=keys, columns="year", values=flag).reindex(columns=range(lo, hi + 1))
        flag_frame = flagged | (prior.fillna(0) > 0)
        long = filled.stack(future_stack=True).rename(value).to_frame()
        long[flag] = flag_frame.stack(future_stack=True).to_numpy()
        out_cols.append(long)
    activity = out_cols[0].join(out_cols[1], how="outer").reset_index()
    for col in ("area_ha", "n_rate_kg_ha"):
        if activity[col].isna().any():
            first = activity[activity[col].isna()].iloc[0]
            other = n_rate_file if col == "n_rate_kg_ha" else area_file
            raise InputError(other, f"county {first['county_code']}, crop {first['crop']}: "
                             f"{'N rate' if col == 'n_rate_kg_ha' else 'sown area'} missing for every year",
                             "supply the series (0 where the crop is not grown)", column=col)
    return activity[["county_code", "year", "crop", "area_ha", "n_rate_kg_ha", "area_filled", "n_rate_filled"]]


def harmonise_irrigation(irr: pd.DataFrame, prefectures: np.ndarray, years: tuple[int, int],
                         max_gap: int) -> tuple[pd.DataFrame, list[int]]:
    """Irrigation per present-day prefecture x year, gaps filled; prefectures without data
    take their province's mean (flagged).

    Returns the table and the irrigation prefecture codes that match no present-day prefecture.
    """
    lo, hi = years
    irr = _in_years(irr, years, "irrigation")
    unknown = sorted(set(irr["prefecture_code"].astype(int)) - set(int(p) for p in prefectures))
    pieces = []
    for value in ("irrigated_fraction", "irrigation_mm"):
        wide = irr.pivot(index="prefecture_code", columns="year", values=value).astype(float)
        wide = wide.reindex(index=sorted(set(int(p) for p in prefectures)), columns=range(lo, hi + 1))
        filled, flag = fill_gaps(wide, max_gap, edges=True)
        province = filled.groupby(filled.index // 100).transform("mean")
        from_province = filled.isna() & province.notna()
        filled = filled.where(~from_province, province)
        long = filled.stack(future_stack=True).rename(value).to_frame()
        long[f"{value}_filled"] = (flag | from_province).stack(future_stack=True).to_numpy()
        pieces.append(long)
    out = pieces[0].join(pieces[1]).reset_index().rename(columns={"level_0": "prefecture_code"})
    out.columns = ["prefecture_code", "year", *out.columns[2:]]
    out["irrigation_filled"] = out["irrigated_fraction_filled"] | out["irrigation_mm_filled"]
    return out[["prefecture_code", "year", "irrigated_fraction", "irrigation_mm", "irrigation_filled"]], unknown


def check_sown_vs_land(core: pd.DataFrame, area_km2: dict[int, float], file: str) -> None:
    """Fail when a county-year's sown area (all crops) exceeds ``MAX_SOWN_PER_LAND_AREA`` x its
    land area: the sign of a unit mix-up (1000 ha read as ha, ha labelled mu, ...)."""
    sown = core.groupby(["county_code", "year"])["area_ha"].sum().reset_index()
    land_ha = sown["county_code"].map(area_km2).to_numpy(dtype=float) * 100.0
    ratio = sown["area_ha"].to_numpy() / land_ha
    bad = ratio > C.MAX_SOWN_PER_LAND_AREA
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(file, f"county {sown['county_code'].iloc[i]}, {sown['year'].iloc[i]}: sown area "
                         f"{sown['area_ha'].iloc[i]:,.0f} ha is {ratio[i]:.1f} x its land area",
                         "check the area unit (ha, mu, km2, 1000 ha) and the values", column="area")


def build_activity(core: pd.DataFrame, irrigation: pd.DataFrame, covariates: pd.DataFrame,
                   covariates_file: str, irrigation_file: str) -> pd.DataFrame:
    """Join activity, irrigation and covariates into the :data:`~pipeline.contract.ACTIVITY` table.

    Notes
    -----
    Water input (mm/yr) = precip_mm + irrigated_fraction x irrigation_mm: the irrigation water of
    the irrigated share is spread over the sown area of the county.
    """
    df = core.copy()
    df["prefecture_code"] = df["county_code"] // 100
    df["province_code"] = df["county_code"] // 10_000
    df = df.merge(irrigation, on=["prefecture_code", "year"], how="left")
    if df["irrigation_mm"].isna().any() or df["irrigated_fraction"].isna().any():
        bad = df[df["irrigation_mm"].isna() | df["irrigated_fraction"].isna()].iloc[0]
        raise InputError(irrigation_file, f"no irrigation for prefecture {bad['prefecture_code']} "
                         f"(nor any prefecture of province {bad['province_code']}) in {bad['year']}",
                         "add the prefecture's series to the irrigation input", column="prefecture_code")
    cov = covariates.drop(columns=[c for c in C.BOOKKEEPING if c in covariates.columns])
    df = df.merge(cov, on="county_code", how="left")
    if df["soil_ph"].isna().any():
        code = int(df.loc[df["soil_ph"].isna(), "county_code"].iloc[0])
        raise InputError(covariates_file, f"no covariates for county {code}, which has activity data",
                         "add a row for it to the covariates input", column="county_code")
    df["water_input_mm"] = df["precip_mm"] + df["irrigated_fraction"] * df["irrigation_mm"]
    return _conform(df, C.ACTIVITY).sort_values(["county_code", "crop", "year"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------
def read_input(cfg: Config, name: str, spec: InputSpec | None = None) -> pd.DataFrame:
    """Read a configured tabular input with its column mapping."""
    spec = spec or getattr(cfg.inputs, name)
    mapping = load_mapping(cfg, spec)
    return io.read_tables(cfg.path(spec.path), encoding=spec.encoding, sheet=spec.sheet, mapping=mapping)


def ingest_observations(cfg: Config, quarantine_to: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Read, validate and harmonise the configured observations; returns (obs, quarantine, n_read).

    When more rows are quarantined than ``ingest.max_reject_fraction`` allows, the quarantine
    table is written to ``quarantine_to`` (if given) and :class:`TooManyRejectionsError` raised.
    """
    raw = read_input(cfg, "observations")
    obs, quarantine = harmonise_observations(raw, cfg.root)
    log.info("observations: %d rows read, %d accepted, %d quarantined", len(raw), len(obs), len(quarantine))
    if quarantine_to is not None and len(quarantine) / max(len(raw), 1) > cfg.ingest.max_reject_fraction:
        # The reasons are what the user needs to fix the input: write them (whole) before failing.
        io.write_csv(quarantine, quarantine_to)
    check_rejections(len(quarantine), len(raw), cfg.ingest.max_reject_fraction, cfg.inputs.observations.path)
    return obs, quarantine, len(raw)


def _validated(cfg: Config, name: str) -> pd.DataFrame:
    raw = read_input(cfg, name)
    valid, _ = C.ensure_valid(raw, C.INPUT_SCHEMAS[name], on_error="raise")
    return valid


def _check_units(df: pd.DataFrame, checker, what: str) -> None:
    bad = ~df["unit"].map(checker).astype(bool)
    if bad.any():
        i = df.index[bad.to_numpy()][0]
        raise InputError(df.at[i, C.SOURCE_FILE], f"unknown {what} unit '{df.at[i, 'unit']}'",
                         "use one of the units listed in docs/data_contract.md, or set `constants: {unit: ...}` in the mapping",
                         row=int(df.at[i, C.SOURCE_ROW]), column="unit")


def _check_codes(df: pd.DataFrame, known: set[int], problem: str, fix: str) -> None:
    """Raise for the first row whose county_code is not in ``known``."""
    bad = ~df["county_code"].isin(known)
    if bad.any():
        i = df.index[bad.to_numpy()][0]
        raise InputError(df.at[i, C.SOURCE_FILE], f"unknown county code {df.at[i, 'county_code']} ({problem})",
                         fix, row=int(df.at[i, C.SOURCE_ROW]), column="county_code")


def run(cfg: Config) -> list[Path]:
    """Run the ingest stage and return the files written."""
    from pipeline.parallel import dask_context

    with dask_context(cfg.dask):
        return _run(cfg)


def _run(cfg: Config) -> list[Path]:
    out_dir = cfg.processed / "ingest"
    io.invalidate(out_dir / "manifest.json")
    years = (cfg.ingest.first_year, cfg.ingest.last_year)

    obs, quarantine, n_obs_read = ingest_observations(cfg, out_dir / "quarantine.csv")

    boundaries = read_boundaries(cfg.path(cfg.inputs.boundaries.path))
    present = set(boundaries["county_code"].astype(int))
    area_km2 = dict(zip(boundaries["county_code"].astype(int),
                        boundaries.to_crs("EPSG:6933").area.to_numpy() / 1e6))

    crosswalk_raw = read_input(cfg, "crosswalk")
    crosswalk, _ = C.ensure_valid(standardise_areacodes(crosswalk_raw), C.CROSSWALK_RAW, on_error="raise")
    n_rate = _validated(cfg, "n_rate")
    sown_area = _validated(cfg, "sown_area")
    _check_units(n_rate, units.is_n_rate_unit, "N-rate")
    _check_units(sown_area, units.is_area_unit, "area")
    codes = np.union1d(n_rate["county_code"].astype(int).unique(), sown_area["county_code"].astype(int).unique())
    weights = resolve(codes, present, successor_graph(crosswalk), area_km2)
    resolvable = set(weights["code"])
    for table in (n_rate, sown_area):
        _check_codes(table, resolvable, "not in the boundaries, and no successor in the crosswalk",
                     "correct the code, or add its history to the crosswalk file (inputs.crosswalk)")
    core = harmonise_activity(n_rate, sown_area, weights, years, cfg.ingest.max_gap_years,
                              str(cfg.inputs.n_rate.path), str(cfg.inputs.sown_area.path))

    check_sown_vs_land(core, area_km2, str(cfg.inputs.sown_area.path))

    irrigation_raw = _validated(cfg, "irrigation")
    prefectures = np.unique(core["county_code"].to_numpy() // 100)
    irrigation, unknown_pref = harmonise_irrigation(irrigation_raw, prefectures, years, cfg.ingest.max_gap_years)
    if unknown_pref:
        rows = irrigation_raw[irrigation_raw["prefecture_code"].isin(unknown_pref)].copy()
        rows["column"] = "prefecture_code"
        rows["reason"] = "prefecture_code: no present-day county with activity data in this prefecture"
        quarantine = pd.concat([quarantine, _quarantine_rows(rows, "irrigation", cfg.root)], ignore_index=True)
    covariates = _validated(cfg, "covariates")
    _check_codes(covariates, present, "covariates must use the boundary file's present-day codes",
                 "use the present-day code of the county")
    activity = build_activity(core, irrigation, covariates, str(cfg.inputs.covariates.path),
                              str(cfg.inputs.irrigation.path))

    mapping_log = weights[weights["code"] != weights["county_code"]].copy()
    written = [
        io.write_parquet(obs, out_dir / "observations.parquet"),
        io.write_parquet(activity, out_dir / "activity.parquet"),
        io.write_csv(quarantine.sort_values(["table", "file", "row"], kind="stable"), out_dir / "quarantine.csv"),
        io.write_csv(mapping_log, out_dir / "code_mapping.csv"),
    ]
    input_files = [f for name in ("observations", "n_rate", "sown_area", "irrigation", "covariates", "crosswalk")
                   for f in io.expand_paths(cfg.path(getattr(cfg.inputs, name).path))]
    input_files.append(cfg.path(cfg.inputs.boundaries.path))
    manifest = {
        "stage": "ingest",
        "label": cfg.inputs.label,
        "outputs": {p.name: io.file_sha256(p) for p in written},
        "inputs": io.inputs_sha256(input_files),
        "counts": {
            "observations_read": n_obs_read,
            "observations_accepted": len(obs),
            "quarantined_rows": len(quarantine),
            "activity_rows": len(activity),
            "counties_with_activity": int(activity["county_code"].nunique()),
            "historical_codes_remapped": int(mapping_log["code"].nunique()),
            "area_cells_filled": int(activity["area_filled"].sum()),
            "n_rate_cells_filled": int(activity["n_rate_filled"].sum()),
        },
        "config": cfg.model_dump(mode="json", include={"ingest", "inputs"}),
    }
    written.append(io.write_json(manifest, out_dir / "manifest.json"))
    log.info("ingest: %s", manifest["counts"])
    return written

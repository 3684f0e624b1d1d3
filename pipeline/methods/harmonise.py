"""Harmonising validated inputs: units, present-day codes, gap filling and the activity table.

Pure functions of frames used by the ingest stage (:mod:`pipeline.stages.ingest`): observation
harmonisation and quarantine records, N-rate and sown-area tables re-keyed through the code
crosswalk (extensive quantities allocated, N rates re-derived), short gaps interpolated and
flagged, irrigation per prefecture, and the joined activity table. The rules are in
docs/data_contract.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import contract as C
from pipeline import units
from pipeline.errors import InputError, TooManyRejectionsError
from pipeline.methods.crosswalk import apply_crosswalk

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = C.QUARANTINE.names


# ---------------------------------------------------------------------------------------------
# Observations
# ---------------------------------------------------------------------------------------------
def quarantine_rows(
    rejects: pd.DataFrame, table: str, root: Path | None = None, originals: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Rejected rows in the quarantine format (file, line, column, reason, the row as JSON).

    Parameters
    ----------
    rejects
        Rejected rows with ``_file``, ``_row``, ``column`` and ``reason``.
    table
        Input name written in the ``table`` column.
    root
        Project root (file names are written relative to it).
    originals
        The rows as read, before the column mapping, with ``_file`` and ``_row``: the
        ``record`` then holds the user's own columns and values (text, as in the file).
        Without it, the record is the row in contract columns.
    """
    if rejects.empty:
        return pd.DataFrame(columns=QUARANTINE_COLUMNS)
    if originals is not None and len(originals):
        orig = originals.drop_duplicates(list(C.BOOKKEEPING)).set_index(list(C.BOOKKEEPING))
        data_cols = [c for c in orig.columns if c not in C.BOOKKEEPING]
        keys = list(zip(rejects[C.SOURCE_FILE].astype(str), rejects[C.SOURCE_ROW].astype(int), strict=True))
        rows = [orig.loc[k, data_cols].to_dict() if k in orig.index else {} for k in keys]
    else:
        data_cols = [c for c in rejects.columns if c not in (*C.BOOKKEEPING, "reason", "column")]
        rows = rejects[data_cols].to_dict(orient="records")
    records = [
        json.dumps(
            {k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in row.items()},
            ensure_ascii=False,
            sort_keys=False,
            default=str,
        )
        for row in rows
    ]
    return pd.DataFrame(
        {
            "table": table,
            "file": [_relative(f, root) for f in rejects[C.SOURCE_FILE]],
            "row": rejects[C.SOURCE_ROW].astype(int).to_numpy(),
            "column": rejects["column"].to_numpy(),
            "reason": rejects["reason"].to_numpy(),
            "record": records,
        }
    )


VIOLATION_COLUMNS = ["table", "file", "row", "column", "value", "unit", "limit", "limit_value", "action"]


def violations_frame(
    rows: pd.DataFrame,
    table: str,
    column: str,
    values: np.ndarray,
    unit: str,
    limit: str,
    limit_value: float,
    action: str,
    root: Path | None = None,
) -> pd.DataFrame:
    """Rows over a plausibility limit in the violation-report format (:data:`VIOLATION_COLUMNS`).

    ``rows`` carries ``_file``/``_row``; ``column`` is the user's header of the checked value.
    """
    return pd.DataFrame(
        {
            "table": table,
            "file": [_relative(f, root) for f in rows[C.SOURCE_FILE]],
            "row": rows[C.SOURCE_ROW].astype(int).to_numpy(),
            "column": column,
            "value": np.asarray(values, dtype=float),
            "unit": unit,
            "limit": limit,
            "limit_value": float(limit_value),
            "action": action,
        },
        columns=VIOLATION_COLUMNS,
    )


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
    *,
    flux_limits: tuple[float, float, str, str] = (-10.0, 200.0, "error", "error"),
    max_n_rate_kg_ha: tuple[float, str] = (1500.0, "error"),
    years: tuple[int, int] = (1950, 2100),
    names: dict[str, str] | None = None,
    originals: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Validate raw observation rows and convert them to the processed units.

    Parameters
    ----------
    raw
        Observations in contract column names (after the column mapping), as read by
        :func:`pipeline.io.read_tables` (every cell text, with ``_file``/``_row``).
    root
        Project root, to store source files as relative paths.
    flux_limits
        (min, max, action of min, action of max) of the converted flux, kg N2O-N/ha
        (``ingest.limits``); ``error`` quarantines the row, ``warn`` keeps it.
    max_n_rate_kg_ha
        (value, action) of the converted N rate.
    years
        First and last year an observation may be dated (``ingest.observation_years``);
        rows outside are quarantined.
    names
        Contract column -> the user's header, for the quarantine's ``column``.
    originals
        The rows as read (before the mapping), for the quarantine records.

    Returns
    -------
    observations, quarantine, violations
        ``observations`` follows :data:`pipeline.contract.OBSERVATIONS`; ``quarantine`` lists
        every rejected row with its reason; ``violations`` every row over a plausibility limit
        (:data:`VIOLATION_COLUMNS`). Zero and negative fluxes are kept: how a model treats
        them is the fit stage's documented rule.

    Notes
    -----
    Flux totals: kg N2O-N/ha over the measured period = value x unit factor (x duration in
    days for rate units); see :func:`pipeline.units.flux_to_kg_n2o_n_ha`.
    """
    names = dict(names or {})
    valid, rejects = C.ensure_valid(raw, C.OBSERVATIONS_RAW, on_error="quarantine", names=names)
    lo_year, hi_year = years
    out_of_window = valid["year"].notna() & ((valid["year"] < lo_year) | (valid["year"] > hi_year))
    out_of_window = out_of_window.fillna(False).astype(bool)
    # Unit strings and the duration they may need are row-level checks.
    bad_n_unit = ~valid["n_rate_unit"].map(units.is_n_rate_unit).astype(bool)
    bad_flux_unit = ~valid["flux_unit"].map(units.is_flux_unit).astype(bool)
    needs_duration = (
        valid["flux_unit"].map(lambda u: units.is_flux_unit(u) and units.flux_needs_duration(u)).astype(bool)
    )
    no_duration = needs_duration & valid["duration_days"].isna()
    problems = [
        (bad_n_unit, "n_rate_unit", lambda v: f"unknown N-rate unit '{v['n_rate_unit']}' (use kg N/ha or kg N/mu)"),
        (
            bad_flux_unit,
            "flux_unit",
            lambda v: f"unknown flux unit '{v['flux_unit']}' (accepted: {', '.join(units.FLUX_UNITS)})",
        ),
        (no_duration, "duration_days", lambda v: f"flux unit '{v['flux_unit']}' is a rate and needs duration_days"),
        (
            out_of_window,
            "year",
            lambda v: (
                f"year {v['year']} is outside the measurement window {lo_year}-{hi_year} "
                "(ingest.observation_years; never after the current year)"
            ),
        ),
    ]
    extra = []
    for mask, column, why in problems:
        rows = valid[mask.to_numpy()]
        if len(rows):
            r = rows.copy()
            r["column"] = names.get(column, column)
            r["reason"] = [f"{names.get(column, column)}: {why(v)}" for _, v in rows.iterrows()]
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
        log.info(
            "observations: %d rice rows report no water_regime (the fit assumes fit.rice_water_regime)",
            int(rice_missing.sum()),
        )
    obs.loc[obs["crop"] != "rice", "water_regime"] = obs.loc[obs["crop"] != "rice", "water_regime"].fillna("upland")
    obs["n_rate_kg_ha"] = units.n_rate_to_kg_ha(
        obs["n_rate"].to_numpy(dtype=float), obs["n_rate_unit"].to_numpy(dtype=object)
    )
    obs["flux_kg_n2o_n_ha"] = units.flux_to_kg_n2o_n_ha(
        obs["flux"].to_numpy(dtype=float),
        obs["flux_unit"].to_numpy(dtype=object),
        obs["duration_days"].to_numpy(dtype=float, na_value=np.nan),
    )
    obs, implausible, violations = _implausible_after_conversion(obs, flux_limits, max_n_rate_kg_ha, names, root)
    if len(implausible):
        rejects = pd.concat([rejects, implausible])
    obs["irrigation_mm"] = obs["irrigation_mm"].fillna(0.0)
    reported = pd.to_numeric(obs["water_input_mm"], errors="coerce").astype("Float64")
    obs["water_input_mm"] = reported.where(reported.notna(), obs["precip_mm"] + obs["irrigation_mm"])
    obs["source_file"] = [_relative(f, root) for f in obs[C.SOURCE_FILE]]
    obs["source_row"] = obs[C.SOURCE_ROW].astype("Int64")
    out = _conform(obs, C.OBSERVATIONS)
    return (
        out.sort_values("obs_id", kind="stable").reset_index(drop=True),
        quarantine_rows(rejects, "observations", root, originals),
        violations,
    )


def _implausible_after_conversion(
    obs: pd.DataFrame,
    flux_limits: tuple[float, float, str, str],
    max_n: tuple[float, str],
    names: dict[str, str],
    root: Path | None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Rows whose converted N rate or flux is outside the plausibility limits.

    Returns the kept rows, the rows quarantined (limits with action ``error``) and the
    violation report of every row over a limit (both actions).
    """
    lo, hi, lo_action, hi_action = flux_limits
    checks = [
        (
            "n_rate_kg_ha",
            "n_rate",
            "n_rate_unit",
            "kg N/ha",
            "max_n_rate_kg_ha",
            obs["n_rate_kg_ha"] > max_n[0],
            max_n[0],
            max_n[1],
            "above",
        ),
        (
            "flux_kg_n2o_n_ha",
            "flux",
            "flux_unit",
            "kg N2O-N/ha",
            "min_flux_kg_n2o_n_ha",
            obs["flux_kg_n2o_n_ha"] < lo,
            lo,
            lo_action,
            "below",
        ),
        (
            "flux_kg_n2o_n_ha",
            "flux",
            "flux_unit",
            "kg N2O-N/ha",
            "max_flux_kg_n2o_n_ha",
            obs["flux_kg_n2o_n_ha"] > hi,
            hi,
            hi_action,
            "above",
        ),
    ]
    bad = pd.Series(False, index=obs.index)
    reasons = pd.Series("", index=obs.index, dtype=object)
    columns = pd.Series("", index=obs.index, dtype=object)
    reports = []
    for converted, raw_col, unit_col, unit, limit, mask, value, action, side in checks:
        mask = mask.fillna(False).astype(bool)
        if not mask.any():
            continue
        user = names.get(raw_col, raw_col)
        reports.append(
            violations_frame(
                obs[mask],
                "observations",
                user,
                obs.loc[mask, converted].to_numpy(float),
                unit,
                f"ingest.limits.{limit}",
                value,
                action,
                root,
            )
        )
        if action != "error":
            continue
        new = mask & ~bad
        reasons[new] = [
            f"{user}: {x:g} {unit} after conversion is {side} the limit {value:g} {unit} "
            f"(ingest.limits.{limit}; check {names.get(unit_col, unit_col)} '{u}')"
            for x, u in zip(obs.loc[new, converted], obs.loc[new, unit_col], strict=True)
        ]
        columns[new] = user
        bad |= new
    rejected = obs[bad].copy()
    rejected["reason"] = reasons[bad]
    rejected["column"] = columns[bad]
    report = pd.concat(reports, ignore_index=True) if reports else pd.DataFrame(columns=VIOLATION_COLUMNS)
    return obs[~bad].copy(), rejected, report


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
            file,
            f"{n_rejected} of {n_total} rows ({n_rejected / n_total:.1%}) were quarantined, more than "
            f"ingest.max_reject_fraction = {max_fraction:.1%}",
            "read quarantine.csv in the ingest output folder for the reasons; fix the inputs or raise the threshold",
        )


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
    return (
        pd.DataFrame(out, index=wide.index, columns=wide.columns),
        pd.DataFrame(fill, index=wide.index, columns=wide.columns),
    )


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
    log.info(
        "activity: %d county-year-crop rows absent from reported county-years taken as not sown (0 ha)", len(absent)
    )
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
    n["n_rate_kg_ha"] = units.n_rate_to_kg_ha(
        n["n_rate"].to_numpy(dtype=float, na_value=np.nan), n["unit"].to_numpy(dtype=object)
    )
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
    flags = apply_crosswalk(
        both[[*keys, "year", "area_filled", "n_rate_filled"]],
        weights,
        ["area_filled", "n_rate_filled"],
        [*keys, "year"],
    )
    mapped = mapped.merge(flags, on=[*keys, "year"])
    mapped = _absent_crops_as_zero(mapped, keys)
    with np.errstate(invalid="ignore", divide="ignore"):
        mapped["n_rate_kg_ha"] = np.where(
            mapped["rate_weight_ha"] > 0,
            mapped["n_mass_kg"] / mapped["rate_weight_ha"],
            np.where(mapped["area_ha"] == 0, 0.0, np.nan),
        )

    out_cols = []
    for value, flag, file, col in (
        ("area_ha", "area_filled", area_file, "area"),
        ("n_rate_kg_ha", "n_rate_filled", n_rate_file, "n_rate"),
    ):
        wide = mapped.pivot(index=keys, columns="year", values=value).reindex(columns=range(lo, hi + 1))
        filled, flagged = fill_gaps(wide, max_gap, edges=True)
        missing = filled.isna()
        if missing.to_numpy().any():
            (code, crop), row = next((idx, r) for idx, r in missing.iterrows() if r.any())
            gap_years = [int(y) for y in row.index[row.to_numpy()]]
            raise InputError(
                file,
                f"county {code}, crop {crop}: no {col} for {len(gap_years)} year(s) "
                f"({gap_years[0]}-{gap_years[-1]}), more than ingest.max_gap_years = {max_gap}",
                "supply the missing years (0 where the crop is not grown) or raise ingest.max_gap_years",
                column=col,
            )
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
            raise InputError(
                other,
                f"county {first['county_code']}, crop {first['crop']}: "
                f"{'N rate' if col == 'n_rate_kg_ha' else 'sown area'} missing for every year",
                "supply the series (0 where the crop is not grown)",
                column=col,
            )
    return activity[["county_code", "year", "crop", "area_ha", "n_rate_kg_ha", "area_filled", "n_rate_filled"]]


def harmonise_irrigation(
    irr: pd.DataFrame, prefectures: np.ndarray, years: tuple[int, int], max_gap: int
) -> tuple[pd.DataFrame, list[int]]:
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


def n_rate_violations(
    n_rate: pd.DataFrame, limit_kg_ha: float, action: str, column: str, root: Path | None = None
) -> pd.DataFrame:
    """Rows of an N-rate input whose rate, converted to kg N/ha, is above ``limit_kg_ha``.

    Notes
    -----
    kg N/mu x 15 = kg N/ha (:func:`pipeline.units.n_rate_to_kg_ha`), so a rate in kg/ha
    labelled kg/mu shows up here whatever unit the file used.
    """
    kg_ha = units.n_rate_to_kg_ha(
        n_rate["n_rate"].to_numpy(dtype=float, na_value=np.nan), n_rate["unit"].to_numpy(dtype=object)
    )
    bad = np.nan_to_num(kg_ha, nan=-np.inf) > limit_kg_ha
    return violations_frame(
        n_rate[bad],
        "n_rate",
        column,
        kg_ha[bad],
        "kg N/ha",
        "ingest.limits.max_n_rate_kg_ha",
        limit_kg_ha,
        action,
        root,
    )


def sown_land_violations(
    sown_area: pd.DataFrame,
    area_km2: dict[int, float],
    limit_ratio: float,
    action: str,
    column: str,
    root: Path | None = None,
) -> pd.DataFrame:
    """Every input row of a unit-year whose sown area (all crops) exceeds ``limit_ratio`` x its land area.

    Parameters
    ----------
    sown_area
        Validated sown-area rows (any unit) with ``_file``/``_row``. Rows whose code is not in
        ``area_km2`` (retired codes, re-keyed later) are not checked here.
    area_km2
        Land area of each present-day unit, km2 (from the boundaries, equal-area projection).

    Notes
    -----
    ratio = sum over crops of area_ha / (100 x land area km2); double and triple cropping make
    it exceed 1, a unit mix-up (1000 ha read as ha, ha labelled mu) makes it exceed the limit.
    The reported value of each row is its unit-year's ratio.
    """
    df = sown_area.copy()
    df["_area_ha"] = units.area_to_ha(
        df["area"].to_numpy(dtype=float, na_value=np.nan), df["unit"].to_numpy(dtype=object)
    )
    df = df[df["county_code"].astype(int).isin(list(area_km2))]
    total = df.groupby(["county_code", "year"])["_area_ha"].transform("sum")
    land_ha = df["county_code"].astype(int).map(area_km2).to_numpy(dtype=float) * 100.0
    ratio = total.to_numpy(dtype=float) / land_ha
    bad = ratio > limit_ratio
    return violations_frame(
        df[bad],
        "sown_area",
        column,
        ratio[bad],
        "sown ha per ha of land",
        "ingest.limits.max_sown_per_land_area",
        limit_ratio,
        action,
        root,
    )


def build_activity(
    core: pd.DataFrame,
    irrigation: pd.DataFrame,
    covariates: pd.DataFrame | None,
    covariates_file: str,
    irrigation_file: str,
    climate_default: str | None = None,
) -> pd.DataFrame:
    """Join activity, irrigation and covariates into the :data:`~pipeline.contract.ACTIVITY` table.

    Parameters
    ----------
    covariates
        Validated covariates per present-day unit, or ``None`` (no covariates input: the
        soil and weather columns stay empty).
    climate_default
        IPCC climate class for units whose covariates give none (``ingest.defaults.climate``);
        ``None`` makes a missing class an error.

    Notes
    -----
    Water input (mm/yr) = precip_mm + irrigated_fraction x irrigation_mm: the irrigation water of
    the irrigated share is spread over the sown area of the unit.
    """
    df = core.copy()
    df["prefecture_code"] = df["county_code"] // 100
    df["province_code"] = df["county_code"] // 10_000
    df = df.merge(irrigation, on=["prefecture_code", "year"], how="left")
    if df["irrigation_mm"].isna().any() or df["irrigated_fraction"].isna().any():
        bad = df[df["irrigation_mm"].isna() | df["irrigated_fraction"].isna()].iloc[0]
        raise InputError(
            irrigation_file,
            f"no irrigation for prefecture {bad['prefecture_code']} "
            f"(nor any prefecture of province {bad['province_code']}) in {bad['year']}",
            "add the prefecture's series to the irrigation input",
            column="prefecture_code",
        )
    if covariates is not None:
        cov = covariates.drop(columns=[c for c in C.BOOKKEEPING if c in covariates.columns])
        df = df.merge(cov, on="county_code", how="left")
        if df["soil_ph"].isna().any():
            code = int(df.loc[df["soil_ph"].isna(), "county_code"].iloc[0])
            raise InputError(
                covariates_file,
                f"no covariates for unit {code}, which has activity data",
                "add a row for it to the covariates input",
                column="county_code",
            )
    else:
        for col in ("soil_ph", "soc_g_kg", "clay_pct", "mean_temp_c", "precip_mm", "climate"):
            df[col] = np.nan
    df["climate"] = df["climate"].astype(object).where(df["climate"].notna(), climate_default)
    if df["climate"].isna().any():
        code = int(df.loc[df["climate"].isna(), "county_code"].iloc[0])
        why = (
            "the covariates give no climate class for unit"
            if covariates is not None
            else "there is no covariates input, so no climate class for unit"
        )
        raise InputError(
            covariates_file if covariates is not None else "inputs.covariates",
            f"{why} {code} (the disaggregated IPCC Tier 1 EF depends on it)",
            "add a `climate` column (wet or dry), or set ingest.defaults.climate",
            column="climate",
        )
    df["water_input_mm"] = df["precip_mm"] + df["irrigated_fraction"] * df["irrigation_mm"]
    return _conform(df, C.ACTIVITY).sort_values(["county_code", "crop", "year"]).reset_index(drop=True)

"""The data contract: every input and intermediate table, its columns, units, keys and ranges.

Each table is a :class:`TableSchema`. :func:`ensure_valid` checks a frame against it at a stage
boundary and either raises one :class:`~pipeline.errors.InputError` naming file, row and column
(``on_error="raise"``) or moves the failing rows to a quarantine frame with the reason
(``on_error="quarantine"``). ``docs/data_contract.md`` embeds :func:`render_markdown` of every
schema; a test keeps the two identical.

Frames read by :mod:`pipeline.io` carry two bookkeeping columns, ``_file`` and ``_row`` (the
line a user sees in an editor, header = 1), so every message can point at the cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.errors import InputError

CROPS: tuple[str, ...] = ("rice", "wheat", "maize", "vegetables", "other_upland")
WATER_REGIMES: tuple[str, ...] = ("continuous_flooding", "single_drainage", "multiple_drainage", "upland")
FERTILIZER_TYPES: tuple[str, ...] = ("synthetic", "other", "mixed")
CLIMATES: tuple[str, ...] = ("wet", "dry")

#: Plausibility limits checked after unit conversion live in the config (``ingest.limits``,
#: each a value with ``warn`` or ``error``; defaults in :class:`pipeline.config.PlausibilityLimits`):
#: N rate above 1,500 kg N/ha (the highest rates reported for Chinese vegetables are around
#: 1,000-1,400), sown area over 3 x the land area of a unit, fluxes outside [-10, 200]
#: kg N2O-N/ha over the measured period. Every violation is listed in ``ingest/violations.csv``.

#: Administrative levels of activity units and how a 6-digit code of that level looks.
UNIT_LEVELS: tuple[str, ...] = ("county", "prefecture", "province")

SOURCE_FILE = "_file"
SOURCE_ROW = "_row"
BOOKKEEPING = (SOURCE_FILE, SOURCE_ROW)


@dataclass(frozen=True)
class Column:
    """One column of a table.

    ``kind`` is ``"str"``, ``"int"``, ``"float"`` or ``"bool"``. ``unit`` is ``""`` for
    dimensionless or categorical columns. Bounds are inclusive.
    """

    name: str
    kind: Literal["str", "int", "float", "bool"]
    unit: str = ""
    description: str = ""
    required: bool = True
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] | None = None
    digits: int | None = None  # exact number of decimal digits of an integer code


@dataclass(frozen=True)
class TableSchema:
    """A table of the contract: its columns and key."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    fix_hint: str = "correct the value or map the column in the config's column mapping"
    extra: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> Column:
        """The column called ``name``."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        """Column names in contract order."""
        return [c.name for c in self.columns]


def _c(*args, **kwargs) -> Column:
    return Column(*args, **kwargs)


_COVARIATE_COLUMNS = (
    _c("soil_ph", "float", "pH units", "topsoil pH (H2O)", minimum=3.0, maximum=10.5),
    _c("soc_g_kg", "float", "g C/kg", "topsoil organic carbon", minimum=0.0, maximum=600.0),
    _c("clay_pct", "float", "%", "topsoil clay fraction", minimum=0.0, maximum=100.0),
    _c("mean_temp_c", "float", "degC", "mean annual air temperature", minimum=-25.0, maximum=35.0),
    _c("precip_mm", "float", "mm/yr", "mean annual precipitation", minimum=0.0, maximum=6000.0),
)

# ---------------------------------------------------------------------------------------------
# Inputs as a user supplies them (after the optional column mapping of the config)
# ---------------------------------------------------------------------------------------------
OBSERVATIONS_RAW = TableSchema(
    name="observations (input)",
    description=(
        "Field N2O flux measurements, one row per treatment x site x season or year. Zero-N "
        "control plots are rows with `n_rate` = 0 at the same site and year. Rows that fail a "
        "check are quarantined with the reason, not dropped."
    ),
    key=("obs_id",),
    columns=(
        _c("obs_id", "str", "", "unique record id (a mapping may build it from the row number)"),
        _c("site_id", "str", "", "field site; records at one site share a random effect"),
        _c("study_id", "str", "", "publication or experiment; defaults to `site_id`", required=False, nullable=True),
        _c("crop", "str", "", "crop class", allowed=CROPS),
        _c(
            "water_regime",
            "str",
            "",
            "rice water management; `upland` for other crops",
            required=False,
            nullable=True,
            allowed=WATER_REGIMES,
        ),
        _c(
            "year",
            "int",
            "yr",
            "harvest year of the season measured; inside `ingest.observation_years` (never after the current year)",
            required=False,
            nullable=True,
        ),
        _c("n_rate", "float", "see `n_rate_unit`", "N applied; bounded after conversion (`n_rate_kg_ha`)", minimum=0.0),
        _c("n_rate_unit", "str", "", "`kg N/ha` or `kg N/mu`"),
        _c(
            "fertilizer_type",
            "str",
            "",
            "synthetic, other (organic) or mixed N",
            required=False,
            nullable=True,
            allowed=FERTILIZER_TYPES,
        ),
        _c(
            "flux",
            "float",
            "see `flux_unit`",
            "measured N2O emission; zero and negative kept; bounded after conversion (`flux_kg_n2o_n_ha`)",
        ),
        _c("flux_unit", "str", "", "one of the flux units listed below"),
        _c(
            "duration_days",
            "float",
            "d",
            "length of the measured period; needed for rate units",
            required=False,
            nullable=True,
            minimum=1.0,
            maximum=1100.0,
        ),
        *(
            _c(
                c.name,
                c.kind,
                c.unit,
                c.description,
                required=False,
                nullable=True,
                minimum=c.minimum,
                maximum=c.maximum,
            )
            for c in _COVARIATE_COLUMNS
        ),
        _c(
            "irrigation_mm",
            "float",
            "mm",
            "irrigation water over the period; 0 if rain-fed",
            required=False,
            nullable=True,
            minimum=0.0,
            maximum=5000.0,
        ),
        _c(
            "water_input_mm",
            "float",
            "mm",
            "total water input (rain + irrigation) when reported as one "
            "figure; wins over `precip_mm` + `irrigation_mm`",
            required=False,
            nullable=True,
            minimum=0.0,
            maximum=11000.0,
        ),
        _c("climate", "str", "", "IPCC 2019 climate class (wet/dry)", required=False, nullable=True, allowed=CLIMATES),
        _c(
            "lat", "float", "degrees_north", "site latitude", required=False, nullable=True, minimum=-90.0, maximum=90.0
        ),
        _c(
            "lon",
            "float",
            "degrees_east",
            "site longitude",
            required=False,
            nullable=True,
            minimum=-180.0,
            maximum=180.0,
        ),
    ),
)

N_RATE_RAW = TableSchema(
    name="n_rate (input)",
    description="Synthetic N applied per sown hectare, per county x crop x year (pure nutrient, 折纯).",
    key=("county_code", "year", "crop"),
    columns=(
        _c("county_code", "int", "", "6-digit county code of any vintage 1981-2025", digits=6),
        _c("year", "int", "yr", "harvest year (winter wheat sown in t-1 counts in t)", minimum=1949, maximum=2100),
        _c("crop", "str", "", "crop class", allowed=CROPS),
        _c(
            "n_rate",
            "float",
            "see `unit`",
            "N applied per sown area; bounded after conversion",
            nullable=True,
            minimum=0.0,
        ),
        _c("unit", "str", "", "`kg N/ha` or `kg N/mu` (kg/mu x 15 = kg/ha)"),
    ),
)

SOWN_AREA_RAW = TableSchema(
    name="sown_area (input)",
    description="Sown area per county x crop x year.",
    key=("county_code", "year", "crop"),
    columns=(
        _c("county_code", "int", "", "6-digit county code of any vintage 1981-2025", digits=6),
        _c("year", "int", "yr", "harvest year (winter wheat sown in t-1 counts in t)", minimum=1949, maximum=2100),
        _c("crop", "str", "", "crop class", allowed=CROPS),
        _c("area", "float", "see `unit`", "sown area", nullable=True, minimum=0.0, maximum=5e7),
        _c("unit", "str", "", "`ha`, `mu`, `km2` or `1000 ha`"),
    ),
)

FERTILIZER_N_RAW = TableSchema(
    name="fertilizer_n (input)",
    description=(
        "Fertilizer N per region x year (statistics give provincial totals, not crop rates), "
        "allocated to crop N rates by `ingest.n_allocation` from the sown areas of the units inside "
        "each region. Each row gives `n_fertilizer_kg` or `n_straight_kg` with `n_compound_kg`; "
        "scale other units to kg with the mapping's `scale:` (t: 1000, 万吨: 1e7)."
    ),
    key=("region_code", "year"),
    columns=(
        _c(
            "region_code",
            "int",
            "",
            "6-digit code of a province (xx0000), prefecture (xxxx00) or unit; one level per table, "
            "not finer than `inputs.unit_level`; a unit is in the region whose digits it starts with",
            digits=6,
        ),
        _c("year", "int", "yr", "statistical year", minimum=1949, maximum=2100),
        _c(
            "n_fertilizer_kg",
            "float",
            "kg N",
            "total fertilizer N (pure N)",
            required=False,
            nullable=True,
            minimum=0.0,
        ),
        _c(
            "n_straight_kg",
            "float",
            "kg N",
            "straight N fertilizer (pure N, NBS 氮肥折纯量)",
            required=False,
            nullable=True,
            minimum=0.0,
        ),
        _c(
            "n_compound_kg",
            "float",
            "kg N+P2O5+K2O",
            "compound fertilizer, pure nutrient (NBS 复合肥折纯量); N = `ingest.n_allocation.compound_n_share` x this",
            required=False,
            nullable=True,
            minimum=0.0,
        ),
    ),
)

IRRIGATION_RAW = TableSchema(
    name="irrigation (input)",
    description="Irrigation per prefecture (first four digits of the county code) x year.",
    key=("prefecture_code", "year"),
    columns=(
        _c("prefecture_code", "int", "", "4-digit prefecture code", digits=4),
        _c("year", "int", "yr", "statistical year", minimum=1949, maximum=2100),
        _c("irrigated_fraction", "float", "1", "share of sown area irrigated", nullable=True, minimum=0.0, maximum=1.0),
        _c(
            "irrigation_mm",
            "float",
            "mm/yr",
            "water applied on irrigated land",
            nullable=True,
            minimum=0.0,
            maximum=3000.0,
        ),
    ),
)

COVARIATES_RAW = TableSchema(
    name="covariates (input)",
    description="Time-invariant soil and climate covariates per present-day county.",
    key=("county_code",),
    columns=(
        _c("county_code", "int", "", "6-digit county code", digits=6),
        *_COVARIATE_COLUMNS,
        _c(
            "climate",
            "str",
            "",
            "IPCC 2019 climate class (wet/dry); default `ingest.defaults.climate`",
            required=False,
            nullable=True,
            allowed=CLIMATES,
        ),
    ),
)

CROSSWALK_RAW = TableSchema(
    name="county code crosswalk (input)",
    description=(
        "Administrative code history in the format of yescallop/areacodes `result.csv` "
        "(Chinese headers 代码, 名称, 级别, 状态, 启用时间, 变更/弃用时间, 新代码)."
    ),
    key=(),
    columns=(
        _c("code", "int", "", "6-digit code (代码)", digits=6),
        _c("name", "str", "", "name (名称)", nullable=True),
        _c("level", "str", "", "level (级别): 省级, 地级 or 县级"),
        _c("status", "str", "", "status (状态): 在用 in use, 弃用 retired"),
        _c("start_year", "int", "yr", "first year (启用时间)"),
        _c("end_year", "int", "yr", "year retired or changed (变更/弃用时间)", nullable=True),
        _c("successors", "str", "", "successor codes (新代码), `;`-separated", nullable=True),
    ),
)

# ---------------------------------------------------------------------------------------------
# Tables the pipeline writes under data_processed/
# ---------------------------------------------------------------------------------------------
OBSERVATIONS = TableSchema(
    name="ingest/observations.parquet",
    description="Validated observations with harmonised units; input to `fit`.",
    key=("obs_id",),
    columns=(
        _c("obs_id", "str"),
        _c("site_id", "str"),
        _c("study_id", "str"),
        _c("crop", "str", allowed=CROPS),
        _c(
            "water_regime",
            "str",
            "",
            "`upland` for crops other than rice; empty for rice that reports "
            "none (the fit stage assumes `fit.rice_water_regime`)",
            allowed=WATER_REGIMES,
            nullable=True,
        ),
        _c("year", "int", "yr", nullable=True),
        _c("n_rate_kg_ha", "float", "kg N/ha", "bounded by `ingest.limits.max_n_rate_kg_ha`", minimum=0.0),
        _c("fertilizer_type", "str", allowed=FERTILIZER_TYPES, nullable=True),
        _c(
            "flux_kg_n2o_n_ha",
            "float",
            "kg N2O-N/ha",
            "emission over the measured period; bounded by `ingest.limits.min_flux_kg_n2o_n_ha`/`max_flux_kg_n2o_n_ha`",
        ),
        _c("duration_days", "float", "d", nullable=True),
        *(_c(c.name, c.kind, c.unit, c.description, nullable=True) for c in _COVARIATE_COLUMNS),
        _c("irrigation_mm", "float", "mm", "0 when not reported"),
        _c(
            "water_input_mm",
            "float",
            "mm",
            "the reported total water input, else precip_mm + irrigation_mm",
            nullable=True,
        ),
        _c("climate", "str", allowed=CLIMATES, nullable=True),
        _c("lat", "float", "degrees_north", nullable=True),
        _c("lon", "float", "degrees_east", nullable=True),
        _c("source_file", "str", "", "file the record came from"),
        _c("source_row", "int", "", "line in that file"),
    ),
)

ACTIVITY = TableSchema(
    name="ingest/activity.parquet",
    description=(
        "County x crop x year activity on present-day county codes, with the covariates the "
        "emission models need; input to `estimate`."
    ),
    key=("county_code", "year", "crop"),
    columns=(
        _c("county_code", "int", "", "present-day 6-digit code", digits=6),
        _c("prefecture_code", "int", "", "first four digits", digits=4),
        _c("province_code", "int", "", "first two digits"),
        _c("year", "int", "yr"),
        _c("crop", "str", allowed=CROPS),
        _c("area_ha", "float", "ha", minimum=0.0),
        _c("n_rate_kg_ha", "float", "kg N/ha", "bounded by `ingest.limits.max_n_rate_kg_ha`", minimum=0.0),
        _c("area_filled", "bool", "", "area interpolated over a short gap"),
        _c("n_rate_filled", "bool", "", "N rate interpolated over a short gap"),
        _c("irrigated_fraction", "float", "1", minimum=0.0, maximum=1.0),
        _c("irrigation_mm", "float", "mm/yr", minimum=0.0),
        _c("irrigation_filled", "bool", "", "irrigation interpolated over a short gap, or a default"),
        *(
            _c(
                c.name,
                c.kind,
                c.unit,
                c.description + "; empty without a covariates input",
                nullable=True,
                minimum=c.minimum,
                maximum=c.maximum,
            )
            for c in _COVARIATE_COLUMNS
        ),
        _c("water_input_mm", "float", "mm/yr", "precip_mm + irrigated_fraction x irrigation_mm", nullable=True),
        _c("climate", "str", "", "from the covariates, else `ingest.defaults.climate`", allowed=CLIMATES),
    ),
)

QUARANTINE = TableSchema(
    name="ingest/quarantine.csv",
    description="Every rejected input row, with the file, line, column and reason.",
    columns=(
        _c("table", "str"),
        _c("file", "str"),
        _c("row", "int"),
        _c("column", "str"),
        _c("reason", "str"),
        _c("record", "str", "", "the rejected row as JSON"),
    ),
)

INPUT_SCHEMAS: dict[str, TableSchema] = {
    "observations": OBSERVATIONS_RAW,
    "n_rate": N_RATE_RAW,
    "sown_area": SOWN_AREA_RAW,
    "fertilizer_n": FERTILIZER_N_RAW,
    "irrigation": IRRIGATION_RAW,
    "covariates": COVARIATES_RAW,
    "crosswalk": CROSSWALK_RAW,
}
PROCESSED_SCHEMAS: dict[str, TableSchema] = {
    "observations": OBSERVATIONS,
    "activity": ACTIVITY,
    "quarantine": QUARANTINE,
}


@dataclass(frozen=True)
class Rejection:
    """One failed check on one row."""

    index: object
    column: str
    reason: str


def _unit(col: Column) -> str:
    """' <unit>' for a fixed unit; for a column whose unit is in another column, that column."""
    if not col.unit or col.unit == "1":
        return ""
    if col.unit.startswith("see "):
        return f" (in the unit of column {col.unit.removeprefix('see ')})"
    return f" {col.unit}"


#: A number written with thousands separators, as spreadsheets export them: 2,650.4 or -1,000.
_THOUSANDS = r"^\s*[-+]?\d{1,3}(,\d{3})+(\.\d*)?\s*$"


def _where(df: pd.DataFrame, index: object) -> tuple[str, int | None]:
    if SOURCE_FILE in df.columns:
        return str(df.at[index, SOURCE_FILE]), int(df.at[index, SOURCE_ROW])
    return "<table>", None


def _coerce(series: pd.Series, col: Column) -> tuple[pd.Series, pd.Series]:
    """Coerce to the column kind; return the coerced series and a mask of cells that failed."""
    missing = series.isna() | (series.astype("string").str.strip() == "")
    if col.kind == "str":
        out = series.astype("string").str.strip()
        return out.where(~missing, pd.NA), pd.Series(False, index=series.index)
    if col.kind == "bool":
        mapped = series.map(
            lambda v: (
                {"true": True, "false": False, "1": True, "0": False}.get(str(v).strip().lower())
                if not pd.isna(v)
                else None
            )
        )
        bad = mapped.isna() & ~missing
        return mapped.astype("boolean"), bad
    text = series.where(~missing).astype("string")
    grouped = text.str.match(_THOUSANDS).fillna(False).astype(bool)
    if grouped.any():
        text = text.where(~grouped, text.str.replace(",", "", regex=False))
    numeric = pd.to_numeric(text, errors="coerce")
    bad = numeric.isna() & ~missing
    if col.kind == "int":
        frac = numeric.notna() & (numeric != np.floor(numeric))
        bad = bad | frac
        numeric = numeric.where(~frac).astype("Int64")
    else:
        numeric = numeric.astype("Float64")
    return numeric, bad


def ensure_valid(
    df: pd.DataFrame,
    schema: TableSchema,
    on_error: Literal["raise", "quarantine"] = "raise",
    source: str | None = None,
    names: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check ``df`` against ``schema``; coerce dtypes; raise or quarantine on failure.

    Parameters
    ----------
    df
        Table to check. Columns ``_file`` and ``_row`` (from :mod:`pipeline.io`) locate rows.
    schema
        The contract table.
    on_error
        ``"raise"``: the first failing cell raises :class:`InputError`. ``"quarantine"``: each
        failing row moves to the returned rejects frame with its reason; structural problems
        (a missing required column, duplicate keys) still raise.
    source
        File name used in messages when ``df`` has no ``_file`` column.
    names
        Contract column -> the user's own header (from the column mapping): messages and the
        ``column`` of rejects name the user's header.

    Returns
    -------
    valid, rejects
        ``valid`` has the contract's columns with coerced dtypes (plus bookkeeping columns);
        ``rejects`` has the failing rows, a ``reason`` and a ``column`` column.
    """
    fallback = source or "<table>"
    names = dict(names or {})

    def user(col: str) -> str:
        src = names.get(col, col)
        return col if src == col else f"{src}"

    file_name = str(df[SOURCE_FILE].iloc[0]) if SOURCE_FILE in df.columns and len(df) else fallback
    if len(df) == 0:
        raise InputError(
            file_name,
            f"no data rows for table '{schema.name}'",
            "supply a file with a header line and at least one data row",
        )
    missing_cols = [c.name for c in schema.columns if c.required and c.name not in df.columns]
    if missing_cols:
        raise InputError(
            file_name,
            f"required column missing for table '{schema.name}' "
            f"(columns present: {', '.join(str(c) for c in df.columns if c not in BOOKKEEPING)})",
            "add the column, or map your column name to it under `columns:` in the input's mapping in the config",
            column=user(missing_cols[0]),
        )

    out = df.copy()
    rejections: list[Rejection] = []
    for col in schema.columns:
        if col.name not in out.columns:
            out[col.name] = pd.Series(pd.NA, index=out.index, dtype="object")
        coerced, bad = _coerce(out[col.name], col)
        for idx in out.index[bad.to_numpy()]:
            rejections.append(Rejection(idx, col.name, f"'{out.at[idx, col.name]}' is not a valid {col.kind}"))
        out[col.name] = coerced
        values = coerced
        null = values.isna() & ~bad
        if not col.nullable:
            for idx in out.index[null.to_numpy()]:
                rejections.append(Rejection(idx, col.name, "value is missing"))
        if col.allowed is not None:
            bad_cat = values.notna() & ~values.isin(col.allowed)
            for idx in out.index[bad_cat.fillna(False).to_numpy(dtype=bool)]:
                rejections.append(
                    Rejection(idx, col.name, f"'{values.at[idx]}' is not one of {', '.join(col.allowed)}")
                )
        if col.minimum is not None:
            low = (values < col.minimum).fillna(False).to_numpy(dtype=bool)
            for idx in out.index[low]:
                rejections.append(
                    Rejection(idx, col.name, f"{values.at[idx]:g} is below the minimum {col.minimum:g}{_unit(col)}")
                )
        if col.maximum is not None:
            high = (values > col.maximum).fillna(False).to_numpy(dtype=bool)
            for idx in out.index[high]:
                rejections.append(
                    Rejection(idx, col.name, f"{values.at[idx]:g} is above the maximum {col.maximum:g}{_unit(col)}")
                )
        if col.digits is not None:
            lo, hi = 10 ** (col.digits - 1), 10**col.digits - 1
            wrong = ((values < lo) | (values > hi)).fillna(False).to_numpy(dtype=bool)
            for idx in out.index[wrong]:
                rejections.append(Rejection(idx, col.name, f"{values.at[idx]} is not a {col.digits}-digit code"))

    if rejections and on_error == "raise":
        first = min(rejections, key=lambda r: _where(out, r.index)[1] or 0)
        file, row = _where(out, first.index)
        raise InputError(
            file if file != "<table>" else fallback, first.reason, schema.fix_hint, row=row, column=user(first.column)
        )

    bad_index = {r.index for r in rejections}
    rejects = out.loc[[i for i in out.index if i in bad_index]].copy()
    reasons: dict[object, list[Rejection]] = {}
    for r in rejections:
        reasons.setdefault(r.index, []).append(r)
    rejects["column"] = [user(reasons[i][0].column) for i in rejects.index]
    rejects["reason"] = ["; ".join(f"{user(r.column)}: {r.reason}" for r in reasons[i]) for i in rejects.index]
    valid = out.drop(index=list(bad_index))

    if schema.key:
        dup = valid.duplicated(subset=list(schema.key), keep="first")
        if dup.any():
            idx = valid.index[dup.to_numpy()][0]
            file, row = _where(valid, idx)
            key = ", ".join(f"{k}={valid.at[idx, k]}" for k in schema.key)
            raise InputError(
                file if file != "<table>" else fallback,
                f"duplicate key ({key}) for table '{schema.name}'",
                "keep one row per key, or sum the duplicates before ingest",
                row=row,
                column=user(schema.key[0]),
            )
    keep = schema.names + [c for c in BOOKKEEPING if c in valid.columns]
    return valid[keep], rejects


def render_markdown(schema: TableSchema) -> str:
    """The schema as a Markdown section (used in docs/data_contract.md)."""
    lines = [f"### `{schema.name}`", "", schema.description, ""]
    if schema.key:
        lines += [f"Key: {', '.join(f'`{k}`' for k in schema.key)}", ""]
    lines += ["| column | type | unit | required | nullable | allowed | description |", "|---|---|---|---|---|---|---|"]
    for c in schema.columns:
        if c.allowed:
            allowed = ", ".join(c.allowed)
        elif c.digits:
            allowed = f"{c.digits} digits"
        elif c.minimum is not None or c.maximum is not None:
            lo = "" if c.minimum is None else f"{c.minimum:g}"
            hi = "" if c.maximum is None else f"{c.maximum:g}"
            allowed = f"[{lo}, {hi}]"
        else:
            allowed = ""
        lines.append(
            f"| `{c.name}` | {c.kind} | {c.unit} | {'yes' if c.required else 'no'} | "
            f"{'yes' if c.nullable else 'no'} | {allowed} | {c.description} |"
        )
    return "\n".join(lines) + "\n"


def render_all() -> str:
    """Every schema of the contract as Markdown, inputs first (``python -m pipeline.contract``)."""
    parts = ["## Inputs\n"] + [render_markdown(s) for s in INPUT_SCHEMAS.values()]
    parts += ["## Processed tables\n"] + [render_markdown(s) for s in PROCESSED_SCHEMAS.values()]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_all())

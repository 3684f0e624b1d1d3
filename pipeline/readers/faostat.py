"""Readers for the FAOSTAT national extracts (China): Tier-1 N2O from synthetic fertilizers and
the activity series the comparison needs.

Two layouts are recognised from the header line (anything else is refused in one line):

``ddf``
    open-numbers DDF datapoints: ``geo,year,<indicator>``, e.g.
    ``gt_synthetic_fertilizers_emissions_n2o`` (kt N2O) or ``qcl_rice_area_harvested`` (ha).
    The unit is implied by the indicator (FAOSTAT element), listed in :data:`DDF_INDICATORS`.
``faostat``
    FAOSTAT bulk/normalised export: ``Domain Code, Domain, Area Code (or Country Code), Area
    (or Country), Element Code, Element, Item Code, Item, Year Code, Year, Unit, Value, Flag,
    Flag Description``, with an explicit ``Unit`` column that is checked.

FAOSTAT area codes: 351 = "China" (aggregate: mainland, Hong Kong, Macao, Taiwan), 41 =
"China, mainland". The RA fertilizer archive has only 351, so the joined N series uses 351 by
default.

Scope (:data:`FAOSTAT_SCOPE`): FAOSTAT's "Synthetic Fertilizers" N2O is the IPCC Tier 1 direct
plus indirect N2O from synthetic N applied to soils (EF1 and the volatilisation/leaching
pathways), reported in kt N2O, not N2O-N.

Notes
-----
N2O-N mass from N2O mass: n2o_n_kg = n2o_kt × 1e6 / (44/28), with 44/28 =
:data:`pipeline.units.N2O_PER_N2O_N`.

References
----------
FAOSTAT (2024), Emissions from Crops / Synthetic Fertilizers domain (GT), Fertilizers by Nutrient
(RFN), Fertilizers archive (RA), Crops and livestock products (QCL), Land Use (EL).
FAO (2022) Methods for estimating greenhouse gas emissions from agriculture (Tier 1, IPCC 2006).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline.units import N2O_PER_N2O_N

#: kg per kt.
KG_PER_KT = 1e6
#: FAOSTAT area codes.
AREA_CHINA = 351
AREA_CHINA_MAINLAND = 41

#: DDF indicators: unit and quantity name in the normalised frame.
DDF_INDICATORS: dict[str, tuple[str, str]] = {
    "gt_synthetic_fertilizers_emissions_n2o": ("kt N2O", "n2o_kt"),
    "qcl_rice_area_harvested": ("ha", "area_ha"),
    "qcl_wheat_area_harvested": ("ha", "area_ha"),
    "qcl_maize_corn_area_harvested": ("ha", "area_ha"),
}

FAOSTAT_SCOPE = (
    "FAOSTAT Tier 1 N2O from synthetic fertilizers (direct + indirect, IPCC 2006 defaults) "
    "on FAOSTAT national N use; kt N2O"
)

_FAO_COLUMNS = ["Element", "Item", "Year", "Unit", "Value"]
_LONG_COLUMNS = ["area_code", "area", "domain", "element", "item", "year", "unit", "value", "flag"]


def _read_raw(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(path, "file not found", "check the FAOSTAT path in the config")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read as CSV ({type(e).__name__})", "supply the FAOSTAT CSV unchanged") from None
    if len(df) == 0:
        raise InputError(path, "the file has no data rows", "supply a FAOSTAT extract with data")
    return df


def _numbers(series: pd.Series, path: Path, column: str, offset: int = 2) -> np.ndarray:
    s = series.astype(str).str.strip()
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna()
    if bad.any():
        k = int(np.argmax(bad.to_numpy()))
        raise InputError(
            path, f"'{s.iloc[k]}' is not a number", "supply the FAOSTAT CSV unchanged", row=k + offset, column=column
        )
    return num.to_numpy(dtype=np.float64)


def layout(path: str | Path) -> str:
    """``"ddf"`` or ``"faostat"``; :class:`~pipeline.errors.InputError` for anything else."""
    path = Path(path)
    cols = list(_read_raw(path).columns)
    return _layout(cols, path)


def _layout(cols: list[str], path: Path) -> str:
    if len(cols) == 3 and cols[0] == "geo" and cols[1] == "year":
        return "ddf"
    if set(_FAO_COLUMNS) <= set(cols) and (
        {"Area Code", "Area"} <= set(cols) or {"Country Code", "Country"} <= set(cols)
    ):
        return "faostat"
    raise InputError(
        path,
        f"unknown FAOSTAT layout (columns {cols[:6]})",
        "supply a FAOSTAT bulk CSV (Area Code, Element, Item, Year, Unit, Value) or a DDF geo,year,<indicator> file",
    )


def read_faostat(path: str | Path) -> pd.DataFrame:
    """Read one FAOSTAT extract (either layout) into a long frame.

    Returns
    -------
    pandas.DataFrame
        ``area_code`` (int), ``area``, ``domain``, ``element``, ``item``, ``year`` (int),
        ``unit`` (as FAOSTAT writes it, e.g. ``tonnes``, ``ha``, ``%``, ``kt N2O``), ``value``
        (float), ``flag``. For DDF files ``element`` is the indicator name and the unit comes from
        :data:`DDF_INDICATORS`. ``attrs["source_file"]`` is the file name.
    """
    path = Path(path)
    df = _read_raw(path)
    kind = _layout(list(df.columns), path)
    if kind == "ddf":
        ind = df.columns[2]
        if ind not in DDF_INDICATORS:
            raise InputError(
                path,
                f"unknown DDF indicator '{ind}' (its unit is not known)",
                f"use one of {sorted(DDF_INDICATORS)}, or a FAOSTAT bulk CSV with a Unit column",
                column=ind,
            )
        unit = DDF_INDICATORS[ind][0]
        out = pd.DataFrame(
            {
                "area_code": _numbers(df["geo"], path, "geo").astype(np.int64),
                "area": "",
                "domain": ind.split("_", 1)[0].upper(),
                "element": ind,
                "item": ind,
                "year": _numbers(df["year"], path, "year").astype(np.int64),
                "unit": unit,
                "value": _numbers(df[ind], path, ind),
                "flag": "",
            }
        )
    else:
        code = "Area Code" if "Area Code" in df.columns else "Country Code"
        name = "Area" if "Area" in df.columns else "Country"
        out = pd.DataFrame(
            {
                "area_code": _numbers(df[code], path, code).astype(np.int64),
                "area": df[name].str.strip(),
                "domain": df["Domain Code"].str.strip() if "Domain Code" in df.columns else "",
                "element": df["Element"].str.strip(),
                "item": df["Item"].str.strip(),
                "year": _numbers(df["Year"], path, "Year").astype(np.int64),
                "unit": df["Unit"].str.strip(),
                "value": _numbers(df["Value"], path, "Value"),
                "flag": df["Flag"].str.strip() if "Flag" in df.columns else "",
            }
        )
    out.attrs = {"source_file": path.name, "layout": kind}
    return out[_LONG_COLUMNS]


def _one_area(df: pd.DataFrame, area_code: int, path: Path) -> pd.DataFrame:
    sub = df[df["area_code"] == area_code]
    if sub.empty:
        raise InputError(
            path,
            f"no rows for FAOSTAT area code {area_code} (codes: {sorted(set(df['area_code']))})",
            "pass area_code= one of the codes present",
        )
    if sub["year"].duplicated().any():
        y = int(sub.loc[sub["year"].duplicated(), "year"].iloc[0])
        raise InputError(path, f"year {y} appears twice for area {area_code}", "supply one series per file")
    return sub.sort_values("year").reset_index(drop=True)


def _projection_years(years: np.ndarray) -> np.ndarray:
    """Years after the first gap in the annual sequence (FAOSTAT appends 2030 and 2050 projections)."""
    years = np.sort(years)
    gaps = np.nonzero(np.diff(years) > 1)[0]
    return years[gaps[0] + 1 :] if len(gaps) else years[:0]


def read_synthetic_fertilizer_n2o(
    path: str | Path, area_code: int = AREA_CHINA, include_projections: bool = False
) -> pd.DataFrame:
    """FAOSTAT Tier 1 N2O from synthetic fertilizers, one country, per year.

    Parameters
    ----------
    path
        DDF ``gt_synthetic_fertilizers_emissions_n2o`` file, or a FAOSTAT GT bulk CSV (item
        ``Synthetic Fertilizers``, element ``Emissions (N2O)``, unit ``kt``).
    area_code
        351 China (default), 41 China mainland.
    include_projections
        FAOSTAT appends projection years (2030, 2050) after a gap; they are dropped unless True.

    Returns
    -------
    pandas.DataFrame
        ``year``, ``n2o_kt`` (kt N2O), ``n2o_n_kg`` (kg N2O-N), ``is_projection``; attrs carry the
        scope, source file and area code.

    Notes
    -----
    n2o_n_kg = n2o_kt × 1e6 / (44/28).
    """
    path = Path(path)
    df = read_faostat(path)
    if df.attrs["layout"] == "ddf":
        if df["element"].iloc[0] != "gt_synthetic_fertilizers_emissions_n2o":
            raise InputError(
                path,
                f"indicator '{df['element'].iloc[0]}' is not synthetic-fertilizer N2O",
                "supply ddf--datapoints--gt_synthetic_fertilizers_emissions_n2o",
            )
        kt = 1.0
    else:
        df = df[
            df["item"].str.lower().eq("synthetic fertilizers")
            & df["element"].str.contains("N2O")
            & df["element"].str.lower().str.startswith("emissions")
        ]
        if df.empty:
            raise InputError(
                path,
                "no 'Synthetic Fertilizers' / 'Emissions (N2O)' rows",
                "supply the FAOSTAT GT (Emissions from crops) extract",
            )
        units = set(df["unit"].str.lower())
        factors = {"kt": 1.0, "gigagrams": 1.0, "gg": 1.0, "t": 1e-3, "tonnes": 1e-3}
        if len(units) != 1 or next(iter(units)) not in factors:
            raise InputError(
                path, f"unit {sorted(units)}, expected kt", "supply FAOSTAT's GT extract unchanged", column="Unit"
            )
        kt = factors[next(iter(units))]
    sub = _one_area(df, area_code, path)
    proj = set(_projection_years(sub["year"].to_numpy()).tolist())
    out = pd.DataFrame({"year": sub["year"].to_numpy(), "n2o_kt": sub["value"].to_numpy() * kt})
    out["n2o_n_kg"] = out["n2o_kt"] * KG_PER_KT / N2O_PER_N2O_N
    out["is_projection"] = out["year"].isin(proj)
    if not include_projections:
        out = out[~out["is_projection"]].reset_index(drop=True)
    out.attrs = {"source_file": path.name, "area_code": area_code, "scope": FAOSTAT_SCOPE, "unit": "kt N2O"}
    return out


def read_n_fertilizer(ra_path: str | Path, rfn_path: str | Path, area_code: int = AREA_CHINA) -> pd.DataFrame:
    """National N fertilizer 1961-2017: RA archive (to 2001) joined to RFN (from 2002).

    Parameters
    ----------
    ra_path
        FAOSTAT RA (Fertilizers archive): element ``Consumption``, item ``Nitrogenous
        fertilizers``, tonnes N.
    rfn_path
        FAOSTAT RFN (Fertilizers by Nutrient): element ``Agricultural Use``, item ``Nutrient
        nitrogen N (total)``, tonnes N.
    area_code
        351 (default; the only area in RA).

    Returns
    -------
    pandas.DataFrame
        ``year``, ``n_fertilizer_t`` (t N), ``series`` (``RA consumption`` / ``RFN agricultural
        use``), ``flag``; ``attrs["step_2001_2002"]`` = RFN(first year) / RA(last year).

    Notes
    -----
    The two series measure different things (apparent consumption vs agricultural use, with
    different country sources), so the join is a definitional break, not a trend: values are
    concatenated without splicing, RFN wins in any overlapping year, and the ratio at the seam is
    recorded so breakpoint analyses can test for it.
    """
    ra_path, rfn_path = Path(ra_path), Path(rfn_path)
    ra = read_faostat(ra_path)
    rfn = read_faostat(rfn_path)
    ra_n = ra[(ra["item"] == "Nitrogenous fertilizers") & (ra["element"] == "Consumption")]
    if ra_n.empty:
        raise InputError(ra_path, "no 'Nitrogenous fertilizers' / 'Consumption' rows", "supply the FAOSTAT RA extract")
    rfn_n = rfn[(rfn["item"] == "Nutrient nitrogen N (total)") & (rfn["element"] == "Agricultural Use")]
    if rfn_n.empty:
        raise InputError(
            rfn_path, "no 'Nutrient nitrogen N (total)' / 'Agricultural Use' rows", "supply the FAOSTAT RFN extract"
        )
    for p, d in ((ra_path, ra_n), (rfn_path, rfn_n)):
        units = set(d["unit"])
        if units != {"tonnes"}:
            raise InputError(
                p, f"unit {sorted(units)}, expected tonnes", "supply the FAOSTAT extract unchanged", column="Unit"
            )
    a = _one_area(ra_n, area_code, ra_path)
    b = _one_area(rfn_n, area_code, rfn_path)
    a = a[a["year"] < b["year"].min()]
    out = pd.concat(
        [
            pd.DataFrame(
                {"year": a["year"], "n_fertilizer_t": a["value"], "series": "RA consumption", "flag": a["flag"]}
            ),
            pd.DataFrame(
                {"year": b["year"], "n_fertilizer_t": b["value"], "series": "RFN agricultural use", "flag": b["flag"]}
            ),
        ],
        ignore_index=True,
    )
    step = float(b["value"].iloc[0] / a["value"].iloc[-1]) if len(a) else float("nan")
    out.attrs = {
        "source_files": f"{ra_path.name}; {rfn_path.name}",
        "area_code": area_code,
        "unit": "t N",
        "step_2001_2002": step,
        "join": f"RA to {int(a['year'].max()) if len(a) else '-'}, RFN from {int(b['year'].min())}, no splicing",
    }
    return out


_CROP_RE = re.compile(r"qcl_(.+)_area_harvested")


def read_harvested_area(paths: Sequence[str | Path] | str | Path, area_code: int = AREA_CHINA) -> pd.DataFrame:
    """Harvested area per crop and year from DDF ``qcl_<crop>_area_harvested`` files (or a folder).

    Returns
    -------
    pandas.DataFrame
        ``crop`` (``rice``, ``wheat``, ``maize``), ``year``, ``area_ha`` (ha).
    """
    if isinstance(paths, (str, Path)) and Path(paths).is_dir():
        files = sorted(Path(paths).glob("*qcl_*_area_harvested*.csv"))
    elif isinstance(paths, (str, Path)):
        files = [Path(paths)]
    else:
        files = [Path(p) for p in paths]
    if not files:
        raise InputError(str(paths), "no qcl_*_area_harvested files", "check the FAOSTAT folder")
    frames = []
    for f in files:
        df = read_faostat(f)
        m = _CROP_RE.fullmatch(df["element"].iloc[0]) if df.attrs["layout"] == "ddf" else None
        if m is None:
            raise InputError(f, "not a DDF qcl_<crop>_area_harvested file", "supply the DDF harvested-area extract")
        crop = {"maize_corn": "maize"}.get(m.group(1), m.group(1))
        sub = _one_area(df, area_code, f)
        frames.append(pd.DataFrame({"crop": crop, "year": sub["year"], "area_ha": sub["value"]}))
    return pd.concat(frames, ignore_index=True).sort_values(["crop", "year"]).reset_index(drop=True)


def read_irrigation_share(path: str | Path, area_code: int = AREA_CHINA) -> pd.DataFrame:
    """Share of agricultural land equipped for irrigation (FAOSTAT EL), %.

    Returns
    -------
    pandas.DataFrame
        ``year``, ``irrigation_equipped_share_pct`` (% of agricultural land).
    """
    path = Path(path)
    df = read_faostat(path)
    df = df[df["item"].eq("Land area equipped for irrigation") & df["element"].eq("Share in Agricultural land")]
    if df.empty:
        raise InputError(
            path,
            "no 'Land area equipped for irrigation' / 'Share in Agricultural land' rows",
            "supply the FAOSTAT EL extract",
        )
    if set(df["unit"]) != {"%"}:
        raise InputError(
            path,
            f"unit {sorted(set(df['unit']))}, expected %",
            "supply the FAOSTAT EL extract unchanged",
            column="Unit",
        )
    sub = _one_area(df, area_code, path)
    return pd.DataFrame({"year": sub["year"], "irrigation_equipped_share_pct": sub["value"]})


def read_china_extracts(folder: str | Path, area_code: int = AREA_CHINA) -> dict[str, pd.DataFrame]:
    """All FAOSTAT China extracts of ``../shared/data/faostat_china_extracts`` by their usual names.

    Returns a dict with ``synthetic_fertilizer_n2o``, ``n_fertilizer``, ``harvested_area`` and
    ``irrigation_share`` frames.
    """
    d = Path(folder)

    def one(pattern: str) -> Path:
        hits = sorted(d.glob(pattern))
        if len(hits) != 1:
            raise InputError(
                d / pattern, f"{len(hits)} files match", "keep one FAOSTAT file of each kind in the folder"
            )
        return hits[0]

    return {
        "synthetic_fertilizer_n2o": read_synthetic_fertilizer_n2o(
            one("*synthetic_fertilizers_emissions_n2o*.csv"), area_code
        ),
        "n_fertilizer": read_n_fertilizer(one("*RA_fertilizer*.csv"), one("*RFN_fertilizer*.csv"), area_code),
        "harvested_area": read_harvested_area(d, area_code),
        "irrigation_share": read_irrigation_share(one("*irrigation*.csv"), area_code),
    }

"""Top-down allocation of a regional fertilizer-N total to crop N rates.

Statistics give fertilizer per province (NBS: straight N and compound fertilizer in pure
nutrient), not per crop. Inventory compilers turn the total into crop N rates with the sown
area of each crop and a *relative* N intensity per crop (how many kg N a sown hectare of the crop
gets compared with the others), so that the rates are consistent with the total:

    rate_c = N_total x w_c / sum_k (w_k x A_k),   hence   sum_c rate_c x A_c = N_total.

Pure functions: frames in, frames out, no file I/O. The parameters (relative intensities, the
N share of compound fertilizer) come from configuration with their sources
(``config/examples/nbs_crop_n_intensity.yaml``); :func:`check_allocation` verifies that the
allocated N sums back to the totals.

References
----------
See ``docs/nbs.md`` for the sources of the default parameters and which were verified.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.errors import AllocationError, ConfigError


@dataclass(frozen=True)
class CropIntensity:
    """Relative N intensity of one crop class.

    Attributes
    ----------
    crop
        Pipeline crop class.
    weight
        Relative N rate per sown hectare (dimensionless, any scale; only ratios matter).
    source
        Where the value comes from.
    verified
        Whether the value was checked against the primary text.
    """

    crop: str
    weight: float
    source: str = ""
    verified: bool = False


def n_total_kg(
    n_straight_fert_kg: np.ndarray | float, n_compound_fert_kg: np.ndarray | float, compound_n_share: float
) -> np.ndarray:
    """Fertilizer N of a region from straight N and compound fertilizer.

    Parameters
    ----------
    n_straight_fert_kg
        Straight N fertilizer, kg N (NBS 农用氮肥施用折纯量).
    n_compound_fert_kg
        Compound fertilizer, kg of pure nutrient N + P2O5 + K2O (NBS 农用复合肥施用折纯量).
    compound_n_share
        Mass fraction of N in the compound fertilizer's pure nutrient, in [0, 1].

    Returns
    -------
    numpy.ndarray
        kg N.

    Notes
    -----
    ``N_total = N_straight + s x C_compound``. For a 15-15-15 product s = 15/45 = 1/3; products
    richer in P (diammonium phosphate 18-46-0: s = 0.28) lower it.
    """
    if not 0.0 <= compound_n_share <= 1.0 or math.isnan(compound_n_share):
        raise ConfigError(
            f"compound_n_share {compound_n_share} is outside [0, 1]. Fix: give the mass fraction of N "
            "in compound fertilizer's pure nutrient (1/3 for 15-15-15)"
        )
    return np.asarray(n_straight_fert_kg, dtype=float) + compound_n_share * np.asarray(n_compound_fert_kg, dtype=float)


def _weights(intensities: Mapping[str, float] | Sequence[CropIntensity]) -> dict[str, float]:
    if isinstance(intensities, Mapping):
        w = {str(k): float(v) for k, v in intensities.items()}
    else:
        w = {ci.crop: float(ci.weight) for ci in intensities}
    if not w:
        raise ConfigError("no crop N intensities given. Fix: list a relative N intensity per crop")
    bad = {k: v for k, v in w.items() if not (v >= 0.0 and math.isfinite(v))}
    if bad:
        k, v = next(iter(bad.items()))
        raise ConfigError(
            f"crop N intensity of '{k}' is {v}; intensities must be finite and >= 0. "
            "Fix: correct the value in the intensity table"
        )
    if not any(v > 0 for v in w.values()):
        raise ConfigError("every crop N intensity is 0. Fix: give at least one crop a positive intensity")
    return w


def _where(keys: Sequence[str], rec: Mapping[str, object]) -> str:
    return ", ".join(f"{k} {rec[k]}" for k in keys)


def allocate_n(
    areas: pd.DataFrame,
    totals: pd.DataFrame,
    intensities: Mapping[str, float] | Sequence[CropIntensity],
    *,
    compound_n_share: float,
    keys: Sequence[str] = ("province_code", "year"),
    area_col: str = "sown_area_ha",
    straight_col: str = "n_straight_fert_kg",
    compound_col: str = "n_compound_fert_kg",
) -> pd.DataFrame:
    """Allocate regional fertilizer-N totals to crop N rates.

    Parameters
    ----------
    areas
        One row per region x crop: ``keys``, ``crop`` and ``area_col`` (sown area, ha). Every
        region must list every crop of ``intensities`` (0 ha when not sown).
    totals
        One row per region: ``keys``, ``straight_col`` (kg N) and ``compound_col`` (kg pure
        nutrient of compound fertilizer).
    intensities
        Relative N intensity per crop (mapping crop -> weight, or :class:`CropIntensity`).
    compound_n_share
        N share of compound fertilizer's pure nutrient (see :func:`n_total_kg`).
    keys
        Columns that identify a region (default province code and year).
    area_col, straight_col, compound_col
        Column names.

    Returns
    -------
    pandas.DataFrame
        One row per region x crop with the inputs beside the result, for audit: ``keys``,
        ``crop``, ``sown_area_ha``, ``intensity``, ``n_straight_fert_kg``,
        ``n_compound_fert_kg``, ``compound_n_share``, ``n_total_kg``, ``weighted_area_ha``
        (sum_k w_k A_k of the region), ``n_rate_kg_ha`` and ``n_crop_kg`` (rate x area).

    Raises
    ------
    AllocationError
        A total is negative or missing, a crop area is missing or negative, a region has N but
        no weighted area, or a region is in one frame and not the other.
    ConfigError
        An intensity is negative or not finite, or ``compound_n_share`` is outside [0, 1].

    Notes
    -----
    With ``N_total = N_straight + s x C`` (``s`` = ``compound_n_share``),

    ``rate_c = N_total x w_c / sum_k (w_k x A_k)``  [kg N/ha],

    so that ``sum_c rate_c x A_c = N_total``: the intensities fix the ratios between crops, the
    total fixes the level. A region with ``N_total = 0`` gets rates of 0. The rate is per sown
    hectare (per crop season), as NBS sown area counts every season.
    """
    keys = list(keys)
    w = _weights(intensities)
    for frame, cols, what in (
        (areas, [*keys, "crop", area_col], "areas"),
        (totals, [*keys, straight_col, compound_col], "totals"),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise AllocationError(
                f"the {what} frame has no column(s) {', '.join(missing)}. Fix: give {', '.join(cols)}"
            )
    a = areas[[*keys, "crop", area_col]].rename(columns={area_col: "sown_area_ha"}).copy()
    t = (
        totals[[*keys, straight_col, compound_col]]
        .rename(columns={straight_col: "n_straight_fert_kg", compound_col: "n_compound_fert_kg"})
        .copy()
    )

    unknown = sorted(set(a["crop"]) - set(w))
    if unknown:
        raise ConfigError(
            f"no N intensity for crop(s) {', '.join(map(str, unknown))}. Fix: add them to the "
            f"intensity table (it has {', '.join(w)})"
        )
    if a.duplicated([*keys, "crop"]).any():
        r = a[a.duplicated([*keys, "crop"])].iloc[0]
        raise AllocationError(
            f"{_where(keys, r)}: crop {r['crop']} has two area rows. Fix: one row per region and crop"
        )
    if t.duplicated(keys).any():
        r = t[t.duplicated(keys)].iloc[0]
        raise AllocationError(f"{_where(keys, r)}: two fertilizer totals. Fix: one total per region")
    for col in ("n_straight_fert_kg", "n_compound_fert_kg"):
        v = pd.to_numeric(t[col], errors="coerce")
        bad = v.isna() | (v < 0) | ~np.isfinite(v.fillna(0))
        if bad.any():
            r = t[bad].iloc[0]
            raise AllocationError(
                f"{_where(keys, r)}: fertilizer total column '{col}' is {r[col]}; it must be a "
                "number >= 0. Fix: correct or fill the total for that region and year"
            )
        t[col] = v.astype(float)
    area = pd.to_numeric(a["sown_area_ha"], errors="coerce")
    bad = area.isna() | (area < 0) | ~np.isfinite(area.fillna(0))
    if bad.any():
        r = a[bad].iloc[0]
        raise AllocationError(
            f"{_where(keys, r)}: sown area of crop {r['crop']} (column '{area_col}') is "
            f"{r['sown_area_ha']}; the allocation needs every crop's area. Fix: fill the area "
            "(0 if the crop is not grown)"
        )
    a["sown_area_ha"] = area.astype(float)

    # every region has every crop, and the same regions in both frames
    regions_a = a[keys].drop_duplicates()
    grid = regions_a.merge(pd.DataFrame({"crop": list(w)}), how="cross")
    have = grid.merge(a, on=[*keys, "crop"], how="left", indicator=True)
    if (have["_merge"] == "left_only").any():
        r = have[have["_merge"] == "left_only"].iloc[0]
        raise AllocationError(
            f"{_where(keys, r)}: no sown-area row for crop {r['crop']}. Fix: add the row "
            "(0 ha if the crop is not grown)"
        )
    both = regions_a.merge(t[keys], on=keys, how="outer", indicator=True)
    if (both["_merge"] != "both").any():
        r = both[both["_merge"] != "both"].iloc[0]
        side = (
            "sown areas but no fertilizer total"
            if r["_merge"] == "left_only"
            else "a fertilizer total but no sown areas"
        )
        raise AllocationError(f"{_where(keys, r)}: region has {side}. Fix: give both for every region and year")

    out = a.merge(t, on=keys, how="left", validate="many_to_one")
    out["intensity"] = out["crop"].map(w).astype(float)
    out["compound_n_share"] = float(compound_n_share)
    out["n_total_kg"] = n_total_kg(
        out["n_straight_fert_kg"].to_numpy(), out["n_compound_fert_kg"].to_numpy(), compound_n_share
    )
    out["_wa"] = out["intensity"] * out["sown_area_ha"]
    out["weighted_area_ha"] = out.groupby(keys)["_wa"].transform("sum")
    empty = (out["weighted_area_ha"] <= 0) & (out["n_total_kg"] > 0)
    if empty.any():
        r = out[empty].iloc[0]
        raise AllocationError(
            f"{_where(keys, r)}: {r['n_total_kg']:.6g} kg N but no sown area with a positive "
            "intensity to carry it. Fix: check the areas and intensities of that region"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(
            out["weighted_area_ha"] > 0, out["n_total_kg"] * out["intensity"] / out["weighted_area_ha"], 0.0
        )
    out["n_rate_kg_ha"] = rate
    out["n_crop_kg"] = out["n_rate_kg_ha"] * out["sown_area_ha"]
    cols = [
        *keys,
        "crop",
        "sown_area_ha",
        "intensity",
        "n_straight_fert_kg",
        "n_compound_fert_kg",
        "compound_n_share",
        "n_total_kg",
        "weighted_area_ha",
        "n_rate_kg_ha",
        "n_crop_kg",
    ]
    extra = [c for c in areas.columns if c not in (*keys, "crop", area_col) and c not in cols]
    out = out.drop(columns="_wa")
    if extra:  # carry identifying columns such as adcode, province, area_blank
        out = out.merge(areas[[*keys, "crop", *extra]], on=[*keys, "crop"], how="left")
    return out[[*cols, *extra]].sort_values([*keys, "crop"], ignore_index=True)


def check_allocation(
    alloc: pd.DataFrame, *, keys: Sequence[str] = ("province_code", "year"), rtol: float = 1e-9
) -> pd.DataFrame:
    """Check that allocated crop N sums back to each region's total.

    Parameters
    ----------
    alloc
        :func:`allocate_n` output (``n_crop_kg`` per crop, ``n_total_kg`` per region).
    keys
        Region columns.
    rtol
        Relative tolerance (default 1e-9).

    Returns
    -------
    pandas.DataFrame
        Per region: ``n_total_kg``, ``n_allocated_kg`` and ``rel_error``.

    Raises
    ------
    AllocationError
        Naming the first region whose ``|sum_c rate_c A_c - N_total| > rtol x N_total``
        and how many regions fail.

    Notes
    -----
    ``rel_error = |sum_c n_crop_kg - N_total| / N_total`` (0 when both are 0).
    """
    keys = list(keys)
    g = alloc.groupby(keys, sort=True)
    summary = pd.DataFrame({"n_total_kg": g["n_total_kg"].first(), "n_allocated_kg": g["n_crop_kg"].sum()})
    spread = g["n_total_kg"].max() - g["n_total_kg"].min()
    if (spread > 0).any():
        r = summary[spread > 0].index[0]
        raise AllocationError(f"region {r}: rows disagree on n_total_kg. Fix: one total per region")
    diff = (summary["n_allocated_kg"] - summary["n_total_kg"]).abs()
    denom = summary["n_total_kg"].abs()
    summary["rel_error"] = np.where(denom > 0, diff / denom.where(denom > 0, 1.0), np.where(diff > 0, np.inf, 0.0))
    bad = ~(summary["rel_error"] <= rtol)
    if bad.any():
        r = summary[bad].iloc[0]
        where = ", ".join(f"{k} {v}" for k, v in zip(keys, np.atleast_1d(summary[bad].index[0]), strict=True))
        raise AllocationError(
            f"{where}: allocated N {r['n_allocated_kg']:.10g} kg differs from the total "
            f"{r['n_total_kg']:.10g} kg (relative error {r['rel_error']:.3g} > {rtol:g}; "
            f"{int(bad.sum())} region(s) fail). Fix: this is a bug or an edited allocation table; "
            "rerun allocate_n on the inputs"
        )
    return summary.reset_index()


def intensities_from_config(section: Mapping[str, object]) -> tuple[list[CropIntensity], float]:
    """Parse the ``nbs_allocation`` config fragment (``config/examples/nbs_crop_n_intensity.yaml``).

    Returns
    -------
    tuple of (list of CropIntensity, float)
        The per-crop intensities and the compound N share.
    """
    try:
        crops = section["crop_n_intensity"]
        share = float(section["compound_n_share"]["value"])  # type: ignore[index]
        out = [
            CropIntensity(str(c), float(v["weight"]), str(v.get("source", "")), bool(v.get("verified", False)))
            for c, v in crops.items()  # type: ignore[attr-defined]  # untyped YAML: a non-mapping is caught below
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(
            f"nbs_allocation: malformed ({type(e).__name__}: {e}). Fix: follow "
            "config/examples/nbs_crop_n_intensity.yaml (crop_n_intensity.<crop>.weight, "
            "compound_n_share.value)"
        ) from None
    missing_src = [ci.crop for ci in out if not ci.source.strip()]
    if missing_src:
        raise ConfigError(
            f"nbs_allocation: crop N intensity of {', '.join(missing_src)} has no source. "
            "Fix: give `source:` for every intensity"
        )
    _weights(out)
    return out, share


#: Code divisor of each region level: a region's 6-digit code is ``unit_code // d * d``.
REGION_DIVISORS: dict[str, int] = {"province": 10_000, "prefecture": 100, "unit": 1}


def region_level(codes: np.ndarray) -> np.ndarray:
    """Level of each 6-digit region code: ``province`` (xx0000), ``prefecture`` (xxxx00) or ``unit``.

    Parameters
    ----------
    codes
        6-digit administrative codes (int).

    Returns
    -------
    numpy.ndarray
        One of the keys of :data:`REGION_DIVISORS` per code (object array).
    """
    c = np.asarray(codes, dtype=np.int64)
    return np.where(c % 10_000 == 0, "province", np.where(c % 100 == 0, "prefecture", "unit")).astype(object)


def allocate_to_units(
    unit_areas: pd.DataFrame,
    totals: pd.DataFrame,
    intensities: Mapping[str, float] | Sequence[CropIntensity],
    *,
    compound_n_share: float,
    divisor: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Allocate regional fertilizer-N totals to the crop N rates of the units inside each region.

    Parameters
    ----------
    unit_areas
        One row per unit x year x crop: ``county_code`` (6-digit unit code), ``year``, ``crop``,
        ``area_ha`` (sown area, ha).
    totals
        One row per region x year: ``region_code`` (6-digit), ``year``, ``n_straight_fert_kg``
        (kg N) and ``n_compound_fert_kg`` (kg pure nutrient of compound fertilizer; 0 when the
        total is given as N already).
    intensities
        Relative N intensity per crop (see :func:`allocate_n`).
    compound_n_share
        N share of compound fertilizer's pure nutrient (see :func:`n_total_kg`).
    divisor
        Region code of a unit: ``county_code // divisor * divisor`` (:data:`REGION_DIVISORS`:
        10,000 for provinces, 100 for prefectures, 1 when the regions are the units).

    Returns
    -------
    tuple of pandas.DataFrame
        The :func:`allocate_n` table per region x year x crop (keys ``region_code``, ``year``)
        and the unit rates: ``county_code``, ``year``, ``crop``, ``region_code``,
        ``n_rate_kg_ha`` (kg N per sown ha).

    Notes
    -----
    Unit areas are summed to region x crop x year (a crop no unit of the region lists has 0 ha),
    the region total is allocated with :func:`allocate_n`,

    ``rate_rc = N_r x w_c / sum_k (w_k x A_rk)``  [kg N/ha],

    and every unit of region r takes ``rate_rc`` for crop c, so that
    ``sum_u sum_c rate_rc x A_uc = N_r``: the sum over units equals the sum over the region's
    crops, which :func:`check_allocation` verifies.
    """
    keys = ["region_code", "year"]
    u = unit_areas[["county_code", "year", "crop", "area_ha"]].copy()
    u["region_code"] = u["county_code"].astype(np.int64) // divisor * divisor
    u["year"] = u["year"].astype(np.int64)
    summed = u.groupby([*keys, "crop"], as_index=False, observed=True)["area_ha"].sum()
    crops = sorted(set(_weights(intensities)) | set(summed["crop"].astype(str)))
    grid = summed[keys].drop_duplicates().merge(pd.DataFrame({"crop": crops}), how="cross")
    areas = grid.merge(summed, on=[*keys, "crop"], how="left").fillna({"area_ha": 0.0})
    t = totals[["region_code", "year", "n_straight_fert_kg", "n_compound_fert_kg"]].copy()
    t["region_code"] = t["region_code"].astype(np.int64)
    t["year"] = t["year"].astype(np.int64)
    alloc = allocate_n(
        areas.rename(columns={"area_ha": "sown_area_ha"}),
        t,
        intensities,
        compound_n_share=compound_n_share,
        keys=keys,
    )
    rates = u.merge(alloc[[*keys, "crop", "n_rate_kg_ha"]], on=[*keys, "crop"], how="left", validate="many_to_one")
    return alloc, rates[["county_code", "year", "crop", "region_code", "n_rate_kg_ha"]]

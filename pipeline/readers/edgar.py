"""Readers for EDGAR N2O: gridded files of every flavour, and national tables.

Every gridded flavour a user downloads is normalised to ONE in-memory form, an
:class:`xarray.Dataset` (see :func:`read_edgar_grid`):

========================  ==============================  =========================================
name                      dims                            meaning
========================  ==============================  =========================================
``n2o_t``                 (year, lat, lon)                tonnes N2O per cell per year (float64)
``cell_area_m2``          (lat, lon)                      cell area on the sphere, m2
``lat_bnds``/``lon_bnds`` (lat, nv) / (lon, nv)           cell edges, degrees
``year``, ``lat``, ``lon``coordinates                     int years; cell centres, ascending, lon in
                                                          [-180, 180)
========================  ==============================  =========================================

with attributes ``source_files`` (file names, ``; ``-separated, no folders), ``flavour``,
``sector``, ``release``, ``substance``, ``units``, ``resolution_deg``, ``earth_radius_m``,
``days_per_year``, ``bbox`` and ``normalisation`` (what was changed on read: flipped latitude,
0…360 longitude rolled, txt corners moved to centres, flux converted to mass).

Flavours (detected from the file content: variable name and ``units`` attribute, or the txt
layout; the file name is used only for the year, sector and release):

``emi_nc``
    v8.0 and EDGAR 2024/2025: variable ``emissions``, ``units = "Tonnes"`` per 0.1° cell per
    year, cell centres, lat −89.95…89.95, lon −179.95…179.95.
``flx_nc``
    same grid, variable ``fluxes`` in kg m-2 s-1.
``v7_nc``
    releases up to v7 (v4.3.2, v5, v6, v7): variable ``emi_n2o`` in kg m-2 s-1, lon 0…360.
``emi_txt``
    ``;``-separated ``lat;lon;value`` in tonnes per cell per year at the lower-left cell
    corner, optional comment/title lines and a ``lat;lon;emission`` header line.

Zip files are read as they are downloaded (one or several ``.nc``/``.txt`` members); a folder,
glob or list of yearly files is read by :func:`read_edgar_grids` for a year range.

Notes
-----
Flux to mass, per cell and year:

    n2o_t = flux_kg_m2_s × cell_area_m2 × seconds_per_year / 1000

with ``seconds_per_year = days_per_year × 86 400``; ``days_per_year`` is 365 by default
(31 536 000 s), or the calendar length of each year (365/366) with ``days_per_year="calendar"``.
EDGAR's own convention for its ``flx_nc`` files could not be confirmed from its documentation;
the two choices differ by 1/365 = 0.27 % in leap years only.

Cell areas are exact areas of latitude-longitude cells on a sphere,

    A = R² · Δλ · (sin φ_north − sin φ_south),   Δλ in radians,

with the authalic (equal-area) radius R = 6 371 007.181 m of the GRS80/WGS84 ellipsoid, the
radius the grid stage writes on its own NetCDF cell areas. A 0.1° cell at the equator is
123.6 km² on this sphere (123.9 km² on the WGS84 ellipsoid).

References
----------
EDGAR v4.3.2 dataset page, https://edgar.jrc.ec.europa.eu/dataset_ghg432 : "gridmaps are
expressed in ton substance / 0.1degree x 0.1degree / year for the .txt files and in kg
substance /m2 /s for the .nc files".
Crippa, M. et al. (2024), GHG emissions of all world countries, and ESSD 16:2811-2830
(doi:10.5194/essd-16-2811-2024) for the v8.0 / EDGAR 2024 grids; EDGAR readme: txt
coordinates are the lower-left cell corner, NetCDF coordinates the cell centre.
Janssens-Maenhout, G. et al. (2019), ESSD 11:959-1002 (EDGAR v4.3.2).
"""

from __future__ import annotations

import calendar
import glob as _glob
import io as _io
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np
import pandas as pd
import xarray as xr

from pipeline.errors import InputError
from pipeline.units import (
    DEFAULT_DAYS_PER_YEAR,
    EARTH_RADIUS_M,
    KG_PER_T,
    SECONDS_PER_DAY,
)

# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------
# Earth radius, seconds per day, days per year and kg per tonne: pipeline.units.
#: Default window: mainland China and Hainan with a margin, (lon_min, lat_min, lon_max, lat_max), degrees.
CHINA_BBOX: tuple[float, float, float, float] = (73.0, 18.0, 136.0, 54.0)
#: Native resolution of EDGAR 0.1° grids, degrees.
EDGAR_RESOLUTION_DEG = 0.1

#: Scope of the EDGAR N2O sector codes (gridded sector names and IPCC-1996 codes of v4.3.2).
SECTOR_SCOPE: dict[str, str] = {
    "AGS": (
        "EDGAR agricultural soils, IPCC-1996 4C+4D: direct N2O from synthetic N fertilizer, "
        "manure applied to soils, crop residues and cultivated organic soils, plus manure "
        "deposited on pasture, range and paddock (4D2); indirect N2O is NOT included "
        "(EDGAR sector N2O)."
    ),
    "N2O": (
        "EDGAR indirect N2O from agriculture (IPCC-1996 4D3): N2O from volatilised NH3/NOx "
        "and from leached/run-off N of agricultural inputs."
    ),
    "MNM": "EDGAR manure management (IPCC-1996 4B): N2O from stored manure; not soils.",
    "AWB": "EDGAR agricultural waste burning (IPCC-1996 4F): field burning of crop residues.",
    "TOTALS": "EDGAR sum of all sectors.",
    "4D1": (
        "EDGAR v4.3.2 direct soil emissions: synthetic N fertilizer + manure applied to soils "
        "+ crop residues + cultivated organic soils (histosols); excludes grazing (4D2) and "
        "indirect (4D3)."
    ),
    "4D2": "EDGAR v4.3.2 manure in pasture/range/paddock (grazing deposition).",
    "4D3": "EDGAR v4.3.2 indirect N2O from agriculture (deposition of volatilised N, leaching/runoff).",
}

_LAT_NAMES = ("lat", "latitude", "y")
_LON_NAMES = ("lon", "longitude", "x")
_TIME_NAMES = ("time", "year", "t")
_KNOWN_SUBSTANCES = (
    "N2O",
    "CH4",
    "CO2bio",
    "CO2",
    "GWP_100_AR5_GHG",
    "NOx",
    "NH3",
    "SO2",
    "CO",
    "NMVOC",
    "PM2.5",
    "PM10",
    "BC",
    "OC",
)
_GRID_VARS = {"emissions": "emi_nc", "fluxes": "flx_nc", "emi_n2o": "v7_nc"}

Bbox = tuple[float, float, float, float]
DaysPerYear = float | Literal["calendar"]


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------
def _unit_key(units: str) -> str:
    u = str(units).strip().replace("µ", "u").replace("μ", "u").replace("⁻", "-")
    u = u.replace("²", "2").replace("¹", "1")
    u = re.sub(r"\s*/\s*", "/", u)
    u = re.sub(r"\s+", " ", u)
    return u


# mass per cell per year: factor to tonnes. "Mg" (megagram) is case-sensitive; "mg" is refused.
_MASS_UNITS = {
    "tonnes": 1.0,
    "tonne": 1.0,
    "tons": 1.0,
    "ton": 1.0,
    "t": 1.0,
    "Mg": 1.0,
    "kg": 1e-3,
    "g": 1e-6,
    "kt": 1e3,
    "Gg": 1e3,
}
# flux: factor to kg m-2 s-1
_FLUX_MASS = {"kg": 1.0, "g": 1e-3, "ug": 1e-9, "t": 1e3, "ton": 1e3, "tonnes": 1e3}


def _mass_factor(units: str) -> float | None:
    """Factor to tonnes per cell per year, or ``None`` if ``units`` is not a mass per cell."""
    u = _unit_key(units)
    if u in ("Mg", "Mg/yr", "Mg/year"):
        return 1.0
    low = u.lower()
    low = low.replace(" substance", "")
    for suffix in (
        "/0.1degree x 0.1degree/year",
        "/cell/year",
        "/cell/yr",
        " cell-1 yr-1",
        "/year",
        "/yr",
        " yr-1",
        " year-1",
    ):
        if low.endswith(suffix):
            low = low[: -len(suffix)].strip()
            break
    if low == "mg":
        return None
    return _MASS_UNITS.get(low)


def _flux_factor(units: str) -> float | None:
    """Factor to kg m-2 s-1, or ``None`` if ``units`` is not a mass flux per m2 per second."""
    low = _unit_key(units).lower()
    low = low.replace("kg substance", "kg").replace(" substance", "")
    m = re.fullmatch(r"(kg|g|ug|t|ton|tonnes)(?: |/)?(?:m-2 s-1|m-2s-1|/m2/s|m\*\*-2 s\*\*-1|/m\^2/s|m2-1 s-1)", low)
    if m is None:
        m = re.fullmatch(r"(kg|g|ug|t|ton|tonnes) (?:per|/) ?m2 (?:per|/) ?s", low)
    return None if m is None else _FLUX_MASS[m.group(1)]


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------
def cell_area_m2(lat_edges: np.ndarray, lon_edges: np.ndarray, radius_m: float = EARTH_RADIUS_M) -> np.ndarray:
    """Areas of latitude-longitude cells on a sphere.

    Parameters
    ----------
    lat_edges, lon_edges
        Cell edges in degrees, ascending, lengths nlat + 1 and nlon + 1.
    radius_m
        Sphere radius, m (default: authalic radius 6 371 007.181 m).

    Returns
    -------
    numpy.ndarray
        (nlat, nlon) areas in m2.

    Notes
    -----
    A = R² · Δλ · (sin φ₂ − sin φ₁) with Δλ in radians: exact for a sphere, so the areas of
    all cells of a global grid sum to 4πR².
    """
    phi = np.deg2rad(np.asarray(lat_edges, dtype=np.float64))
    lam = np.deg2rad(np.asarray(lon_edges, dtype=np.float64))
    band = radius_m**2 * (np.sin(phi[1:]) - np.sin(phi[:-1]))
    return band[:, None] * np.diff(lam)[None, :]


def seconds_per_year(year: int, days_per_year: DaysPerYear = DEFAULT_DAYS_PER_YEAR) -> float:
    """Seconds in ``year``: ``days_per_year × 86 400``, or the calendar length with ``"calendar"``."""
    if days_per_year == "calendar":
        return (366.0 if calendar.isleap(int(year)) else 365.0) * SECONDS_PER_DAY
    return float(days_per_year) * SECONDS_PER_DAY


def flux_to_mass_t(
    flux_kg_m2_s: np.ndarray, area_m2: np.ndarray, year: int, days_per_year: DaysPerYear = DEFAULT_DAYS_PER_YEAR
) -> np.ndarray:
    """Annual mass per cell (t) from a mean flux (kg m-2 s-1).

    Notes
    -----
    mass_t = flux_kg_m2_s × area_m2 × seconds_per_year / 1000.
    """
    return np.asarray(flux_kg_m2_s, dtype=np.float64) * area_m2 * seconds_per_year(year, days_per_year) / KG_PER_T


@overload
def _check_bbox(bbox: Bbox) -> Bbox: ...
@overload
def _check_bbox(bbox: None) -> None: ...
def _check_bbox(bbox: Bbox | None) -> Bbox | None:
    if bbox is None:
        return None
    lon0, lat0, lon1, lat1 = (float(v) for v in bbox)
    if not (-180.0 <= lon0 < lon1 <= 180.0 and -90.0 <= lat0 < lat1 <= 90.0):
        raise ValueError(f"bbox must be (lon_min, lat_min, lon_max, lat_max) within -180..180, -90..90; got {bbox}")
    return lon0, lat0, lon1, lat1


# ---------------------------------------------------------------------------------------------
# File names: year, sector, release
# ---------------------------------------------------------------------------------------------
_YEAR_RE = re.compile(r"(?<=_)((?:19|20)\d{2})(?=[_.])")
_RELEASE_RE = re.compile(r"^(EDGAR_\d{4}_GHG|v\d+(?:\.\d+)?_FT\d{4}(?:_GHG)?|v\d+(?:\.\d+)*(?:_GHG)?)")


def year_from_name(name: str) -> int | None:
    """Calendar year in an EDGAR file name (``..._N2O_2005_AGS_emi_nc.zip`` -> 2005), or ``None``.

    Only a 4-digit group between ``_`` and ``_``/``.`` after the release prefix counts, so
    ``FT2022`` and ``EDGAR_2024_GHG`` are not years.
    """
    base = Path(name).name
    m = _RELEASE_RE.match(base)
    rest = base[m.end() :] if m else base
    hits = _YEAR_RE.findall(rest)
    return int(hits[0]) if len(hits) == 1 else None


def _parse_name(name: str) -> dict[str, str | None]:
    base = Path(name).name
    m = _RELEASE_RE.match(base)
    release = m.group(1) if m else None
    base = base[m.end() :] if m else base
    sector = None
    sub = None
    ym = _YEAR_RE.search(base)
    if ym:
        head, tail = base[: ym.start() - 1], base[ym.end() :]
        for s in _KNOWN_SUBSTANCES:
            if head.endswith("_" + s) or head == s:
                sub = s
                break
        t = tail.lstrip("_.")
        t = re.sub(r"\.(zip|nc|txt)$", "", t)
        t = re.sub(r"(_emi_nc|_flx_nc|_emi_txt|_emi|_flx|_nc|_txt)+$", "", t)
        t = re.sub(r"^0\.1x0\.1$", "", t)
        t = re.sub(r"\.0\.1x0\.1$", "", t)
        sector = t or None
    return {"release": release, "sector": sector, "substance": sub}


# ---------------------------------------------------------------------------------------------
# Sources (plain files or zip members)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    path: Path  # file on disk (a .nc, a .txt or a .zip)
    member: str | None  # member name inside the zip, or None

    @property
    def name(self) -> str:
        return Path(self.member).name if self.member else self.path.name

    @property
    def label(self) -> str:
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix.lower()


def _zip_members(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            names = [i.filename for i in z.infolist() if not i.is_dir()]
    except zipfile.BadZipFile:
        raise InputError(
            path,
            "not a readable zip file (truncated download?)",
            "download it again (cropn2o fetch-edgar resumes and checks it)",
        ) from None
    return sorted(
        n
        for n in names
        if Path(n).suffix.lower() in (".nc", ".txt") and not Path(n).name.startswith(("_", ".")) and "__MACOSX" not in n
    )


def _sources(path: Path) -> list[_Source]:
    if not path.exists():
        raise InputError(path, "file not found", "check the EDGAR path in the config, or run `cropn2o fetch-edgar`")
    suffix = path.suffix.lower()
    if suffix == ".zip":
        members = _zip_members(path)
        if not members:
            raise InputError(
                path, "the zip holds no .nc or .txt grid", "download the emi_nc, flx_nc or emi_txt zip of EDGAR"
            )
        return [_Source(path, m) for m in members]
    if suffix in (".nc", ".nc4", ".txt"):
        return [_Source(path, None)]
    raise InputError(path, f"unknown EDGAR file type '{suffix}'", "use the .zip, .nc or .txt files EDGAR distributes")


# ---------------------------------------------------------------------------------------------
# Grid normalisation
# ---------------------------------------------------------------------------------------------
@dataclass
class _Axis:
    """Normalised axis: ascending clean centres and the original index of each."""

    centres: np.ndarray
    index: np.ndarray
    step: float
    flipped: bool = False
    rolled: bool = False


def _regular_step(values: np.ndarray, label: str, what: str) -> float:
    d = np.diff(values)
    if len(values) < 2:
        raise InputError(label, f"{what} has fewer than 2 values", "supply a gridded EDGAR file")
    step = float(np.median(np.abs(d)))
    if (
        step <= 0
        or not np.allclose(np.abs(d), step, rtol=0, atol=max(step * 1e-3, 1e-6))
        or not (np.all(d > 0) or np.all(d < 0))
    ):
        raise InputError(
            label, f"{what} is not a regular, monotonic grid", "supply an unmodified EDGAR grid file", column=what
        )
    # float32 coordinates: snap the step to 360/n (0.1 = 360/3600) when it is that within 0.1 %
    n = round(360.0 / step)
    return 360.0 / n if n > 0 and abs(step - 360.0 / n) < 1e-3 * step else round(step, 9)


def _lat_axis(lat: np.ndarray, label: str) -> _Axis:
    lat = np.asarray(lat, dtype=np.float64)
    step = _regular_step(lat, label, "lat")
    flipped = bool(lat[0] > lat[-1])
    order = np.argsort(lat)
    lat_sorted = lat[order]
    if lat_sorted[0] - step / 2 < -90 - step * 1e-2 or lat_sorted[-1] + step / 2 > 90 + step * 1e-2:
        raise InputError(label, "latitudes run beyond ±90° (are lat and lon swapped?)", "check the file", column="lat")
    centres = _snap_centres(lat_sorted, step, -90.0, label, "lat")
    return _Axis(centres, order, step, flipped=flipped)


def _lon_axis(lon: np.ndarray, label: str) -> _Axis:
    lon = np.asarray(lon, dtype=np.float64)
    step = _regular_step(lon, label, "lon")
    rolled = bool(lon.max() > 180.0 + step * 1e-2)
    if lon.min() < -180.0 - step or lon.max() > 360.0 + step:
        raise InputError(label, "longitudes outside -180..360", "check the file", column="lon")
    lon_w = np.where(lon >= 180.0, lon - 360.0, lon) if rolled else lon
    order = np.argsort(lon_w, kind="stable")
    centres = _snap_centres(lon_w[order], step, -180.0, label, "lon")
    return _Axis(centres, order, step, flipped=bool(lon[0] > lon[-1]), rolled=rolled)


def _snap_centres(values: np.ndarray, step: float, origin: float, label: str, what: str) -> np.ndarray:
    """Replace float32-noisy centres by exact ``origin + (k + 0.5) * step``; refuse corners."""
    k = (values - origin) / step - 0.5
    if abs(round(360.0 / step) * step - 360.0) < 1e-9:  # grid aligned with the globe
        frac = np.abs(k - np.round(k))
        if np.any(frac > 0.05):
            raise InputError(
                label,
                f"{what} values are not cell centres (they sit on cell edges)",
                "supply the NetCDF as distributed by EDGAR (cell-centre coordinates)",
                column=what,
            )
        return origin + (np.round(k) + 0.5) * step
    return np.round(values, 9)


def _window_index(axis: _Axis, lo: float | None, hi: float | None) -> np.ndarray:
    """Positions (in normalised order) of cells whose centre lies in [lo, hi]."""
    if lo is None:
        return np.arange(len(axis.centres))
    return np.nonzero((axis.centres >= lo) & (axis.centres <= hi))[0]


def _bbox_window(lat_ax: _Axis, lon_ax: _Axis, bbox: Bbox | None, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions (latitude, longitude; normalised order) of the cells whose centre lies in
    ``bbox`` (the whole grid when ``None``); no cell inside raises :class:`InputError`."""
    lon0, lat0, lon1, lat1 = bbox if bbox is not None else (None, None, None, None)
    ilat = _window_index(lat_ax, lat0, lat1)
    ilon = _window_index(lon_ax, lon0, lon1)
    if len(ilat) == 0 or len(ilon) == 0:
        raise InputError(
            label, f"no grid cell inside bbox {bbox}", "check the bbox (lon_min, lat_min, lon_max, lat_max)"
        )
    return ilat, ilon


def _edges(centres: np.ndarray, step: float) -> np.ndarray:
    return np.concatenate([centres - step / 2, centres[-1:] + step / 2])


# ---------------------------------------------------------------------------------------------
# NetCDF flavours
# ---------------------------------------------------------------------------------------------
def _find_dim_var(ds, names: Sequence[str]) -> str | None:
    for n in ds.variables:
        if n.lower() in names:
            return n
    return None


def _read_nc(
    src: _Source, local: Path, bbox: Bbox | None, year: int | None, days_per_year: DaysPerYear
) -> tuple[list[int], np.ndarray, _Axis, _Axis, str, list[str]]:
    import netCDF4

    label = src.label
    try:
        ds = netCDF4.Dataset(local, "r")
    except OSError as e:
        raise InputError(
            label, f"cannot open as NetCDF ({e})", "download the file again; it may be truncated"
        ) from None
    try:
        ds.set_auto_mask(True)
        cands = [v for v in ds.variables if v in _GRID_VARS]
        other_emi = [v for v in ds.variables if v.lower().startswith("emi_") and v not in _GRID_VARS]
        if not cands:
            if other_emi:
                raise InputError(
                    label, f"variable '{other_emi[0]}' is not N2O", "supply the N2O file of the EDGAR release"
                )
            raise InputError(
                label,
                f"not an EDGAR grid: no variable 'emissions', 'fluxes' or 'emi_n2o' "
                f"(found {', '.join(sorted(ds.variables)) or 'none'})",
                "supply an EDGAR emi_nc, flx_nc or (<= v7) emi_n2o NetCDF",
            )
        if len(cands) > 1:
            raise InputError(label, f"ambiguous EDGAR grid: variables {cands}", "supply one flavour per file")
        vname = cands[0]
        var = ds.variables[vname]
        units = getattr(var, "units", None)
        if units is None:
            raise InputError(
                label,
                f"variable '{vname}' has no units attribute",
                f"set it (e.g. ncatted -a units,{vname},o,c,Tonnes) or use the file as distributed",
                column=vname,
            )
        mass_f, flux_f = _mass_factor(units), _flux_factor(units)
        if mass_f is None and flux_f is None:
            raise InputError(
                label,
                f"variable '{vname}' has units '{units}', neither tonnes per cell per year nor kg m-2 s-1",
                "supply the file as distributed by EDGAR",
                column=vname,
            )
        expected = {"emi_nc": "mass", "flx_nc": "flux", "v7_nc": "flux"}[_GRID_VARS[vname]]
        got = "mass" if mass_f is not None else "flux"
        notes = []
        if got != expected:
            notes.append(f"'{vname}' carries {got} units '{units}' (converted as {got})")
        flavour = _GRID_VARS[vname]
        dims = [d.lower() for d in var.dimensions]
        lat_name = _find_dim_var(ds, _LAT_NAMES)
        lon_name = _find_dim_var(ds, _LON_NAMES)
        if lat_name is None or lon_name is None:
            raise InputError(label, "no lat/lon coordinate variables", "supply an EDGAR grid file")
        if len(dims) not in (2, 3) or {dims[-1], dims[-2]} != {lat_name.lower(), lon_name.lower()}:
            raise InputError(
                label,
                f"variable '{vname}' has dimensions {tuple(var.dimensions)}, expected ([time,] lat, lon)",
                "supply an annual EDGAR grid file",
                column=vname,
            )
        transposed = dims[-1] == lat_name.lower()
        lat_ax = _lat_axis(ds.variables[lat_name][:], label)
        lon_ax = _lon_axis(ds.variables[lon_name][:], label)
        if lat_ax.flipped:
            notes.append("latitude was descending: flipped to ascending")
        if lon_ax.rolled:
            notes.append("longitude 0..360 rolled to -180..180")
        # years
        years: list[int]
        ntime = var.shape[0] if len(dims) == 3 else 1
        t_name = var.dimensions[0] if len(dims) == 3 else _find_dim_var(ds, ("time",))
        t_years = _time_years(ds, t_name, label) if t_name is not None and t_name in ds.variables else None
        name_year = year_from_name(src.name)
        if t_years is not None and len(t_years) != ntime:
            t_years = None if ntime == 1 else t_years
        if ntime > 1:
            if t_years is None or len(set(t_years)) != ntime:
                raise InputError(
                    label, f"{ntime} time steps that are not distinct years (monthly file?)", "use EDGAR's annual grids"
                )
            years = t_years
        else:
            cand = year if year is not None else (t_years[0] if t_years else name_year)
            if cand is None:
                raise InputError(
                    label,
                    "cannot tell the year (no time coordinate, no year in the file name)",
                    "keep EDGAR's file name (..._N2O_2005_AGS_...) or pass year=",
                )
            if year is None and t_years and name_year is not None and t_years[0] != name_year:
                raise InputError(
                    label,
                    f"time coordinate says {t_years[0]} but the file name says {name_year}",
                    "rename the file or pass year= explicitly",
                )
            years = [int(cand)]
        # window and read
        ilat, ilon = _bbox_window(lat_ax, lon_ax, bbox, label)
        olat, olon = lat_ax.index[ilat], lon_ax.index[ilon]
        la0, la1, lo0, lo1 = olat.min(), olat.max() + 1, olon.min(), olon.max() + 1
        if transposed:
            block = var[..., lo0:lo1, la0:la1]
            block = np.ma.swapaxes(block, -1, -2)
        else:
            block = var[..., la0:la1, lo0:lo1]
        block = np.ma.asarray(block)
        if block.ndim == 2:
            block = block[None]
        block = block[:, (olat - la0)[:, None], (olon - lo0)[None, :]]
        n_masked = int(np.ma.count_masked(block))
        arr = np.ma.filled(block.astype(np.float64), np.nan)
        n_nan = int(np.isnan(arr).sum()) - n_masked
        if n_masked + n_nan:
            notes.append(f"{n_masked + n_nan} missing cells set to 0")
            arr = np.nan_to_num(arr, nan=0.0)
        if np.any(arr < 0):
            raise InputError(
                label,
                f"negative values in '{vname}' (min {arr.min():g})",
                "supply the file as distributed by EDGAR",
                column=vname,
            )
        lat_c, lon_c = lat_ax.centres[ilat], lon_ax.centres[ilon]
        area = cell_area_m2(_edges(lat_c, lat_ax.step), _edges(lon_c, lon_ax.step))
        if mass_f is not None:
            arr = arr * mass_f
        else:
            arr = np.stack([flux_to_mass_t(arr[i] * flux_f, area, y, days_per_year) for i, y in enumerate(years)])
            notes.append("flux kg m-2 s-1 converted to t/cell/yr")
        return years, arr, _Axis(lat_c, ilat, lat_ax.step), _Axis(lon_c, ilon, lon_ax.step), flavour, notes
    finally:
        ds.close()


def _time_years(ds, t_name: str, label: str) -> list[int] | None:
    import netCDF4

    t = ds.variables[t_name]
    vals = np.ma.filled(np.ma.asarray(t[:]).ravel().astype(np.float64), np.nan)
    if np.isnan(vals).any():
        return None
    units = getattr(t, "units", "")
    if " since " in units:
        try:
            dates = netCDF4.num2date(vals, units, getattr(t, "calendar", "standard"))
        except (ValueError, TypeError):
            return None
        return [int(d.year) for d in np.atleast_1d(np.asarray(dates))]
    if np.all((vals >= 1900) & (vals <= 2100) & (vals == np.round(vals))):
        return [int(v) for v in vals]
    return None


# ---------------------------------------------------------------------------------------------
# txt flavour
# ---------------------------------------------------------------------------------------------
_FLUX_WORDS = re.compile(r"(kg|g)\s*(substance)?\s*(/|per)?\s*m(2|-2|\^2|\*\*2)\s*(/|per)?\s*s", re.IGNORECASE)


def _read_txt(
    src: _Source, text: str, bbox: Bbox | None, year: int | None, resolution_deg: float
) -> tuple[list[int], np.ndarray, _Axis, _Axis, str, list[str]]:
    label = src.label
    lines = text.splitlines()
    first_data = None
    header_text = []
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith(("#", "!", "%")):
            header_text.append(s)
            continue
        parts = s.split(";")
        try:
            [float(p) for p in parts[:3]]
            if len(parts) >= 3:
                first_data = i
                break
        except ValueError:
            pass
        header_text.append(s)
    if first_data is None:
        raise InputError(
            label, "no 'lat;lon;value' data lines found", "supply an EDGAR .txt grid (';'-separated lat;lon;emission)"
        )
    head = " ".join(header_text)
    if _FLUX_WORDS.search(head):
        raise InputError(
            label,
            "the header describes a flux (kg m-2 s-1); EDGAR .txt grids are tonnes per cell",
            "use the emi_txt grid, or the flx_nc NetCDF",
        )
    if ";" not in lines[first_data]:
        raise InputError(label, "not ';'-separated", "supply the EDGAR .txt grid unchanged", row=first_data + 1)
    body = "\n".join(lines[first_data:])
    try:
        df = pd.read_csv(
            _io.StringIO(body),
            sep=";",
            header=None,
            comment="#",
            skip_blank_lines=True,
            engine="c",
            dtype=str,
            keep_default_na=False,
        )
    except pd.errors.ParserError as e:
        raise InputError(label, f"malformed line ({str(e).strip()})", "supply the EDGAR .txt grid unchanged") from None
    if df.shape[1] < 3:
        raise InputError(
            label,
            f"{df.shape[1]} fields per line, expected lat;lon;value",
            "supply the EDGAR .txt grid unchanged",
            row=first_data + 1,
        )
    if df.shape[1] > 3:
        extra = df.iloc[:, 3:].replace("", np.nan).dropna(how="all")
        if len(extra):
            raise InputError(
                label,
                f"{df.shape[1]} fields per line, expected lat;lon;value",
                "supply the EDGAR .txt grid unchanged",
                row=first_data + 1 + int(extra.index[0]),
            )
    vals = np.empty((len(df), 3))
    for j, col in enumerate(("lat", "lon", "value")):
        num = pd.to_numeric(df.iloc[:, j].str.strip(), errors="coerce")
        bad = num.isna()
        if bad.any():
            k = int(np.argmax(bad.to_numpy()))
            # row as seen in an editor: count non-comment lines from first_data
            data_lines = [
                i for i in range(first_data, len(lines)) if lines[i].strip() and not lines[i].lstrip().startswith("#")
            ]
            raise InputError(
                label,
                f"'{df.iloc[k, j]}' is not a number",
                "supply the EDGAR .txt grid unchanged",
                row=data_lines[k] + 1 if k < len(data_lines) else None,
                column=col,
            )
        vals[:, j] = num.to_numpy()
    lat, lon, v = vals[:, 0], vals[:, 1], vals[:, 2]
    if np.any(v < 0):
        raise InputError(label, f"negative emission values (min {v.min():g})", "supply the EDGAR .txt grid unchanged")
    d = float(resolution_deg)
    notes = []
    # lower-left corners sit on multiples of d from -90/-180; centres on half-multiples
    kl = (lat + 90.0) / d
    on_corner = np.abs(kl - np.round(kl)) < 0.05
    on_centre = np.abs(kl - np.floor(kl) - 0.5) < 0.05
    if on_corner.all():
        lat_c, lon_c = lat + d / 2, lon + d / 2
        notes.append("txt lower-left corners moved to cell centres (+d/2)")
    elif on_centre.all():
        lat_c, lon_c = lat, lon
        notes.append("txt coordinates were already cell centres (detected)")
    else:
        raise InputError(
            label,
            f"coordinates are neither cell corners nor centres of a {d}° grid",
            "pass the grid's resolution_deg, or supply the EDGAR .txt grid unchanged",
            column="lat",
        )
    if np.any(lat_c < -90) or np.any(lat_c > 90):
        raise InputError(label, "latitudes beyond ±90° (are lat and lon swapped?)", "check the file", column="lat")
    if np.any(lon_c > 180.0):
        lon_c = np.where(lon_c >= 180.0, lon_c - 360.0, lon_c)
        notes.append("longitude 0..360 rolled to -180..180")
    nlat_g, nlon_g = round(180.0 / d), round(360.0 / d)
    lat_all = -90.0 + (np.arange(nlat_g) + 0.5) * d
    lon_all = -180.0 + (np.arange(nlon_g) + 0.5) * d
    lat_ax = _Axis(lat_all, np.arange(nlat_g), d)
    lon_ax = _Axis(lon_all, np.arange(nlon_g), d)
    ilat, ilon = _bbox_window(lat_ax, lon_ax, bbox, label)
    ri = np.floor((lat_c + 90.0) / d).astype(np.int64)
    ci = np.floor((lon_c + 180.0) / d).astype(np.int64) % nlon_g
    flat = ri * nlon_g + ci
    if len(np.unique(flat)) != len(flat):
        raise InputError(label, "the same cell appears on more than one line", "supply the EDGAR .txt grid unchanged")
    keep = (ri >= ilat[0]) & (ri <= ilat[-1]) & (ci >= ilon[0]) & (ci <= ilon[-1])
    arr = np.zeros((1, len(ilat), len(ilon)))
    arr[0, ri[keep] - ilat[0], ci[keep] - ilon[0]] = v[keep]
    y = year if year is not None else year_from_name(src.name)
    if y is None:
        raise InputError(
            label,
            "cannot tell the year (no year in the file name)",
            "keep EDGAR's file name (..._N2O_2005_AGS...) or pass year=",
        )
    lat_w = _Axis(lat_all[ilat], ilat, d)
    lon_w = _Axis(lon_all[ilon], ilon, d)
    return [int(y)], arr, lat_w, lon_w, "emi_txt", notes


# ---------------------------------------------------------------------------------------------
# Public API: gridded files
# ---------------------------------------------------------------------------------------------
def _read_source(src: _Source, bbox: Bbox | None, year: int | None, days_per_year: DaysPerYear, resolution_deg: float):
    with tempfile.TemporaryDirectory(prefix="edgar_") as tmp:
        if src.member is not None:
            with zipfile.ZipFile(src.path) as z:
                if src.suffix == ".txt":
                    text = z.read(src.member).decode("utf-8", errors="replace")
                    return _read_txt(src, text, bbox, year, resolution_deg)
                local = Path(tmp) / "member.nc"
                with z.open(src.member) as fin, open(local, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)  # streamed: no global grid held in memory
            return _read_nc(src, local, bbox, year, days_per_year)
        if src.suffix == ".txt":
            return _read_txt(src, src.path.read_text(encoding="utf-8", errors="replace"), bbox, year, resolution_deg)
        return _read_nc(src, src.path, bbox, year, days_per_year)


def _dataset(years: list[int], arr: np.ndarray, lat: _Axis, lon: _Axis, attrs: dict) -> xr.Dataset:
    lat_e, lon_e = _edges(lat.centres, lat.step), _edges(lon.centres, lon.step)
    area = cell_area_m2(lat_e, lon_e)
    ds = xr.Dataset(
        {
            "n2o_t": (
                ("year", "lat", "lon"),
                arr,
                {"units": "t N2O cell-1 yr-1", "long_name": "EDGAR N2O emission per grid cell and year"},
            ),
            "cell_area_m2": (
                ("lat", "lon"),
                area,
                {"units": "m2", "comment": f"spherical cell area, R = {EARTH_RADIUS_M} m"},
            ),
            "lat_bnds": (("lat", "nv"), np.stack([lat_e[:-1], lat_e[1:]], axis=1), {"units": "degrees_north"}),
            "lon_bnds": (("lon", "nv"), np.stack([lon_e[:-1], lon_e[1:]], axis=1), {"units": "degrees_east"}),
        },
        coords={
            "year": np.asarray(years, dtype=np.int64),
            "lat": ("lat", lat.centres, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon.centres, {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs=attrs,
    )
    return ds


def _attrs(
    sources: Sequence[str],
    flavours: Iterable[str],
    sector: str,
    release: str,
    substance: str,
    resolution: float,
    days_per_year: DaysPerYear,
    bbox: Bbox | None,
    notes: Iterable[str],
) -> dict:
    return {
        "source_files": "; ".join(sources),
        "flavour": "; ".join(sorted(set(flavours))),
        "sector": sector,
        "sector_scope": SECTOR_SCOPE.get(sector, "unknown sector"),
        "release": release,
        "substance": substance,
        "units": "t N2O cell-1 yr-1",
        "resolution_deg": float(resolution),
        "earth_radius_m": EARTH_RADIUS_M,
        "days_per_year": str(days_per_year),
        "bbox": "global" if bbox is None else ",".join(f"{v:g}" for v in bbox),
        "normalisation": "; ".join(dict.fromkeys(notes)) or "none",
    }


def _meta(src: _Source, sector: str | None, release: str | None) -> tuple[str, str, str]:
    parsed = _parse_name(src.name)
    if parsed["substance"] is None and src.member is not None:
        parsed_zip = _parse_name(src.path.name)
        parsed = {k: parsed[k] or parsed_zip[k] for k in parsed}
    sub = parsed["substance"] or "N2O"
    if sub != "N2O":
        raise InputError(src.label, f"the file name says substance {sub}, not N2O", "supply EDGAR's N2O files")
    return (sector or parsed["sector"] or "unknown", release or parsed["release"] or "unknown", sub)


def read_edgar_grid(
    path: str | Path,
    *,
    bbox: Bbox | None = None,
    year: int | None = None,
    sector: str | None = None,
    release: str | None = None,
    days_per_year: DaysPerYear = DEFAULT_DAYS_PER_YEAR,
    resolution_deg: float = EDGAR_RESOLUTION_DEG,
) -> xr.Dataset:
    """Read one EDGAR grid file (.nc, .txt, or a .zip holding one of them) in normalised form.

    Parameters
    ----------
    path
        The file. The flavour (``emi_nc``, ``flx_nc``, ``v7_nc``, ``emi_txt``) is detected from
        its content; an unknown layout raises :class:`~pipeline.errors.InputError`.
    bbox
        ``(lon_min, lat_min, lon_max, lat_max)`` in degrees (−180…180); only cells whose centre
        lies inside (edges included) are read, e.g. :data:`CHINA_BBOX`. ``None`` reads the globe.
    year
        The year, when neither a time coordinate nor the file name gives it.
    sector, release
        Override the sector (``AGS``…) and release (``v8.0_FT2022_GHG``…) read from the name.
    days_per_year
        365 (default) or ``"calendar"`` for the flux → mass conversion (flux flavours only).
    resolution_deg
        Cell size of ``.txt`` grids (NetCDF grids carry their own), degrees.

    Returns
    -------
    xarray.Dataset
        ``n2o_t`` (year, lat, lon) in t N2O per cell per year, ``cell_area_m2`` (m2), cell
        bounds, ascending cell-centre coordinates with lon in −180…180; see the module docstring.

    Notes
    -----
    Fluxes (kg m-2 s-1) become masses with mass_t = flux × area_m2 × days_per_year × 86 400 / 1000;
    areas on the sphere of radius :data:`EARTH_RADIUS_M`. A descending latitude is flipped, a
    0…360 longitude rolled to −180…180, txt lower-left corners moved to centres; each change is
    listed in the ``normalisation`` attribute. Wrong or missing unit strings, non-N2O variables,
    irregular grids and corner coordinates in NetCDF files are refused.
    """
    path = Path(path)
    bbox = _check_bbox(bbox)
    srcs = _sources(path)
    if len(srcs) > 1:
        raise InputError(path, f"the zip holds {len(srcs)} grids", "read it with read_edgar_grids (a year range)")
    src = srcs[0]
    sec, rel, sub = _meta(src, sector, release)
    years, arr, lat, lon, flavour, notes = _read_source(src, bbox, year, days_per_year, resolution_deg)
    return _dataset(
        years, arr, lat, lon, _attrs([src.name], [flavour], sec, rel, sub, lat.step, days_per_year, bbox, notes)
    )


def _expand(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        p = Path(paths)
        if p.is_dir():
            files = sorted(
                f
                for f in p.iterdir()
                if f.suffix.lower() in (".zip", ".nc", ".nc4", ".txt") and not f.name.startswith((".", "_"))
            )
        elif any(ch in str(paths) for ch in "*?["):
            files = [Path(f) for f in sorted(_glob.glob(str(paths)))]
        else:
            files = [p]
    else:
        files = [Path(f) for f in paths]
    if not files:
        raise InputError(
            paths if isinstance(paths, (str, Path)) else "(list)",
            "no EDGAR files found",
            "check the EDGAR folder or glob in the config, or run `cropn2o fetch-edgar`",
        )
    return files


def read_edgar_grids(
    paths: str | Path | Sequence[str | Path],
    *,
    first_year: int | None = None,
    last_year: int | None = None,
    bbox: Bbox | None = CHINA_BBOX,
    sector: str | None = None,
    release: str | None = None,
    days_per_year: DaysPerYear = DEFAULT_DAYS_PER_YEAR,
    resolution_deg: float = EDGAR_RESOLUTION_DEG,
) -> xr.Dataset:
    """Read a folder, glob or list of yearly EDGAR files (any flavour, zipped or not) for a year range.

    Parameters
    ----------
    paths
        A folder, a glob pattern, one file, or a list of files. Zips with several grids (EDGAR's
        all-years bundles) count as one file per member.
    first_year, last_year
        Inclusive year range; every year in it must be present exactly once. ``None`` takes the
        years found.
    bbox
        Window read from each file (default :data:`CHINA_BBOX`), so no global grid is held.
    sector, release, days_per_year, resolution_deg
        As in :func:`read_edgar_grid`.

    Returns
    -------
    xarray.Dataset
        The normalised form with all years stacked on ``year`` (ascending).

    Notes
    -----
    Files must share one grid, one sector and one release (EDGAR releases recompute past years,
    so series cannot be chained across releases); duplicate or missing years are refused.
    Years are taken from file names where possible, so files outside the range are not opened.
    """
    bbox = _check_bbox(bbox)
    srcs: list[_Source] = []
    for f in _expand(paths):
        srcs.extend(_sources(f))
    chosen: list[_Source] = []
    for s in srcs:
        y = year_from_name(s.name)
        if y is not None and ((first_year is not None and y < first_year) or (last_year is not None and y > last_year)):
            continue
        chosen.append(s)
    if not chosen:
        raise InputError(
            paths if isinstance(paths, (str, Path)) else "(list)",
            f"no EDGAR file for {first_year}-{last_year}",
            "download the years with `cropn2o fetch-edgar`",
        )
    by_year: dict[int, tuple[_Source, np.ndarray]] = {}
    lat0: _Axis | None = None
    lon0: _Axis | None = None
    metas: set[tuple[str, str]] = set()
    flavours, notes = [], []
    for s in chosen:
        sec, rel, _ = _meta(s, sector, release)
        years, arr, lat, lon, flavour, nts = _read_source(s, bbox, None, days_per_year, resolution_deg)
        if lat0 is None or lon0 is None:  # both set together, on the first source
            lat0, lon0 = lat, lon
        elif (
            lat.step != lat0.step
            or lon.step != lon0.step
            or not np.array_equal(lat.centres, lat0.centres)
            or not np.array_equal(lon.centres, lon0.centres)
        ):
            raise InputError(s.label, "its grid differs from the other EDGAR files'", "supply files of one grid")
        metas.add((sec, rel))
        if len(metas) > 1:
            raise InputError(
                s.label, f"mixes sector/release {sorted(metas)}", "point at the files of one sector and one release"
            )
        flavours.append(flavour)
        notes.extend(nts)
        for i, y in enumerate(years):
            if (first_year is not None and y < first_year) or (last_year is not None and y > last_year):
                continue
            if y in by_year:
                raise InputError(s.label, f"year {y} is also in {by_year[y][0].label}", "keep one file per year")
            by_year[y] = (s, arr[i])
    if not by_year:
        raise InputError(
            paths if isinstance(paths, (str, Path)) else "(list)",
            f"no EDGAR grid for {first_year}-{last_year}",
            "download the years with `cropn2o fetch-edgar`",
        )
    ys = sorted(by_year)
    lo = first_year if first_year is not None else ys[0]
    hi = last_year if last_year is not None else ys[-1]
    missing = [y for y in range(lo, hi + 1) if y not in by_year]
    if missing:
        raise InputError(
            paths if isinstance(paths, (str, Path)) else "(list)",
            f"years missing: {missing}",
            "download them with `cropn2o fetch-edgar` or narrow the year range",
        )
    assert lat0 is not None and lon0 is not None  # by_year is non-empty: a source was read
    sec, rel = next(iter(metas))
    arr = np.stack([by_year[y][1] for y in ys])
    names = [by_year[y][0].name for y in ys]
    return _dataset(
        ys, arr, lat0, lon0, _attrs(names, flavours, sec, rel, "N2O", lat0.step, days_per_year, bbox, notes)
    )


def window(ds: xr.Dataset, bbox: Bbox) -> xr.Dataset:
    """Cells of a normalised dataset whose centre lies in ``bbox`` = (lon_min, lat_min, lon_max, lat_max)."""
    lon0, lat0, lon1, lat1 = _check_bbox(bbox)
    out = ds.sel(lat=slice(lat0, lat1), lon=slice(lon0, lon1))
    out.attrs = {**ds.attrs, "bbox": ",".join(f"{v:g}" for v in (lon0, lat0, lon1, lat1))}
    return out


def detect_flavour(path: str | Path) -> str:
    """The flavour of an EDGAR grid file: ``emi_nc``, ``flx_nc``, ``v7_nc`` or ``emi_txt``.

    Looks at the content only (NetCDF variable names, txt layout) without reading the grid;
    raises :class:`~pipeline.errors.InputError` for an unknown layout.
    """
    import netCDF4

    srcs = _sources(Path(path))
    src = srcs[0]
    if src.suffix == ".txt":
        return "emi_txt"
    with tempfile.TemporaryDirectory(prefix="edgar_") as tmp:
        local = src.path
        if src.member is not None:
            local = Path(tmp) / "member.nc"
            with zipfile.ZipFile(src.path) as z:
                local.write_bytes(z.read(src.member))
        try:
            with netCDF4.Dataset(local, "r") as ds:
                names = set(ds.variables)
        except OSError as e:
            raise InputError(src.label, f"cannot open as NetCDF ({e})", "download the file again") from None
    found = [_GRID_VARS[v] for v in names if v in _GRID_VARS]
    if len(found) != 1:
        raise InputError(
            src.label,
            f"not an EDGAR N2O grid (variables {sorted(names)})",
            "supply an EDGAR emi_nc, flx_nc or (<= v7) emi_n2o NetCDF",
        )
    return found[0]


# ---------------------------------------------------------------------------------------------
# National tables
# ---------------------------------------------------------------------------------------------
NATIONAL_COLUMNS = ("iso3", "country", "sector", "sector_description", "classification", "year", "n2o_gg")


def _meta_rows(raw: pd.DataFrame, header_row: int) -> dict[str, str]:
    meta = {}
    for i in range(header_row):
        key = str(raw.iat[i, 0]).strip().rstrip(":").lower()
        if key and key != "nan" and raw.shape[1] > 1:
            meta[key] = str(raw.iat[i, 1]).strip()
    return meta


def _find_header(raw: pd.DataFrame, key: str, path: Path) -> int:
    for i in range(min(len(raw), 30)):
        if key in [str(v).strip() for v in raw.iloc[i].tolist()]:
            return i
    raise InputError(
        path,
        f"no header row with '{key}' in the first 30 rows",
        "supply the EDGAR national workbook unchanged (v4.3.2 .xls or EDGAR 2024+ .xlsx)",
    )


def _check_meta(meta: dict[str, str], path: Path) -> None:
    comp = meta.get("compound") or meta.get("substance")
    if comp is not None and comp.upper() != "N2O":
        raise InputError(path, f"the table is for {comp}, not N2O", "supply EDGAR's N2O table")
    unit = meta.get("unit")
    if unit is not None and unit.lower() not in ("gg", "kt", "kton", "kt/yr", "gg/yr", "kton substance / year"):
        raise InputError(path, f"unit '{unit}', expected Gg", "supply EDGAR's table in Gg (= kt)")


def _long(
    df: pd.DataFrame,
    year_cols: dict,
    iso: str,
    name: str,
    code: str,
    desc: str,
    classification: str,
    path: Path,
    header_row: int,
) -> pd.DataFrame:
    wide = df[[iso, name, code, desc, *year_cols]].copy()
    wide.columns = ["iso3", "country", "sector", "sector_description", *year_cols.values()]
    wide["_row"] = np.arange(len(wide)) + header_row + 2
    long = wide.melt(
        id_vars=["iso3", "country", "sector", "sector_description", "_row"], var_name="year", value_name="raw"
    )
    s = long["raw"].astype(str).str.strip()
    empty = long["raw"].isna() | s.isin(["", "NULL", "nan", "NaN", "-"])
    num = pd.to_numeric(s.where(~empty), errors="coerce")
    bad = num.isna() & ~empty
    if bad.any():
        r = long[bad].iloc[0]
        raise InputError(
            path,
            f"'{r['raw']}' is not a number",
            "supply the EDGAR table unchanged",
            row=int(r["_row"]),
            column=str(r["year"]),
        )
    long["n2o_gg"] = num
    long = long[~empty].drop(columns=["raw", "_row"])
    long["year"] = long["year"].astype(np.int64)
    long["classification"] = classification
    for c in ("iso3", "country", "sector", "sector_description"):
        long[c] = long[c].astype(str).str.strip()
    long = long.sort_values(["iso3", "sector", "year"], kind="stable").reset_index(drop=True)
    return long[list(NATIONAL_COLUMNS)]


def read_edgar_national(path: str | Path, sheet: str | None = None, unit: str | None = None) -> pd.DataFrame:
    """Read an EDGAR national N2O table into a long frame, Gg N2O per country, sector and year.

    Layouts (detected from the header row):

    * v4.3.2 workbook ``v432_N2O_1970_2012.xls``: metadata rows (``Compound:``, ``Unit: Gg``…),
      header ``IPCC-Annex, World Region, ISO_A3, Name, IPCC, IPCC_description, 1970…2012``;
      IPCC-1996 codes. First sheet unless ``sheet`` is given.
    * CSV extract with ``ISO_A3, Name, IPCC, IPCC_description, 1970…`` (no unit in the file: the
      name must contain ``_Gg`` or ``unit="Gg"`` must be passed).
    * EDGAR 2024+ workbook (``EDGAR_N2O_1970_2023.xlsx``): sheet ``IPCC 2006`` (default) or
      ``IPCC 1996``, 8 metadata rows, header ``IPCC_annex, C_group_IM24_sh, Country_code_A3,
      Name, ipcc_code_2006_for_standard_report, ipcc_code_2006_for_standard_report_name,
      Substance, fossil_bio, Y_1970…``.

    Returns
    -------
    pandas.DataFrame
        Columns ``iso3, country, sector, sector_description, classification, year, n2o_gg``
        (Gg = kt N2O per year); empty cells (not estimated) are dropped. ``attrs`` holds the
        source file name, layout and unit.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found", "check the EDGAR national table path in the config")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        need = {"ISO_A3", "Name", "IPCC", "IPCC_description"}
        if not need <= set(df.columns):
            raise InputError(
                path,
                f"unknown EDGAR CSV layout (columns {list(df.columns)[:8]}…)",
                "supply the v4.3.2 extract with ISO_A3, Name, IPCC, IPCC_description, years",
            )
        if unit is None and "_gg" not in path.name.lower():
            raise InputError(path, "the CSV carries no unit", "pass unit='Gg' (EDGAR tables are Gg N2O)")
        _check_meta({"unit": unit or "Gg"}, path)
        years = {c: int(c) for c in df.columns if re.fullmatch(r"\d{4}", str(c))}
        out = _long(df, years, "ISO_A3", "Name", "IPCC", "IPCC_description", "IPCC 1996", path, 0)
        out.attrs = {"source_file": path.name, "layout": "v4.3.2 CSV extract", "unit": "Gg N2O"}
        return out
    if suffix not in (".xls", ".xlsx"):
        raise InputError(
            path, f"unknown file type '{suffix}'", "supply the EDGAR .xls/.xlsx workbook or the CSV extract"
        )
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*xlrd engine is deprecated.*")
            xf = pd.ExcelFile(path)
            with xf:
                names = xf.sheet_names
                if sheet is None:
                    sheet = "IPCC 2006" if "IPCC 2006" in names else names[0]
                if sheet not in names:
                    raise InputError(path, f"no sheet '{sheet}' (sheets: {names})", "pass one of the sheet names")
                raw = pd.read_excel(xf, sheet_name=sheet, header=None, dtype=object)
    except InputError:
        raise
    except Exception as e:  # xlrd/openpyxl raise many types
        raise InputError(
            path, f"cannot read the workbook ({type(e).__name__})", "download the workbook again"
        ) from None
    header_keys = [str(v).strip() for i in range(min(len(raw), 30)) for v in raw.iloc[i].tolist()]
    if "Country_code_A3" in header_keys:
        h = _find_header(raw, "Country_code_A3", path)
        meta = _meta_rows(raw, h)
        _check_meta(meta, path)
        df = raw.iloc[h + 1 :].copy()
        df.columns = [str(c).strip() for c in raw.iloc[h]]
        code = next((c for c in df.columns if c.startswith("ipcc_code_") and not c.endswith("_name")), None)
        desc = next((c for c in df.columns if c.startswith("ipcc_code_") and c.endswith("_name")), None)
        if code is None or desc is None:
            raise InputError(path, "no ipcc_code_* columns", "supply the EDGAR workbook unchanged", row=h + 1)
        if "Substance" in df.columns:
            subs = set(df["Substance"].dropna().astype(str).str.strip())
            if subs - {"N2O"}:
                raise InputError(
                    path, f"substance {sorted(subs - {'N2O'})}, not N2O", "supply EDGAR's N2O table", column="Substance"
                )
        years = {c: int(c[2:]) for c in df.columns if re.fullmatch(r"Y_\d{4}", c)}
        classification = "IPCC 2006" if "2006" in code else "IPCC 1996"
        out = _long(df, years, "Country_code_A3", "Name", code, desc, classification, path, h)
        if "fossil_bio" in df.columns:
            pass  # N2O rows are fossil or bio by source; summed by the comparer when needed
        out.attrs = {"source_file": path.name, "layout": f"EDGAR 2024+ workbook, sheet {sheet}", "unit": "Gg N2O"}
        return out
    if "ISO_A3" in header_keys:
        h = _find_header(raw, "ISO_A3", path)
        meta = _meta_rows(raw, h)
        _check_meta(meta, path)
        df = raw.iloc[h + 1 :].copy()
        cols = []
        for c in raw.iloc[h].tolist():
            if isinstance(c, float) and c == int(c):
                cols.append(str(int(c)))
            else:
                cols.append(str(c).strip())
        df.columns = cols
        years = {c: int(c) for c in cols if re.fullmatch(r"\d{4}", c)}
        out = _long(df, years, "ISO_A3", "Name", "IPCC", "IPCC_description", "IPCC 1996", path, h)
        out.attrs = {
            "source_file": path.name,
            "layout": "EDGAR v4.3.2 workbook",
            "unit": "Gg N2O",
            "release": meta.get("reference", "")[:200],
        }
        return out
    raise InputError(
        path,
        f"unknown EDGAR table layout in sheet '{sheet}'",
        "supply the v4.3.2 .xls (header ISO_A3, IPCC…) or an EDGAR 2024+ .xlsx (Country_code_A3…)",
    )


def national_series(table: pd.DataFrame, iso3: str, sectors: Sequence[str]) -> pd.DataFrame:
    """Sum of ``sectors`` for one country per year: columns ``year, n2o_gg``.

    Raises ``KeyError`` when a sector code is absent for that country (no silent zero).
    """
    sub = table[(table["iso3"] == iso3) & table["sector"].isin(list(sectors))]
    missing = set(sectors) - set(sub["sector"])
    if missing:
        raise KeyError(f"{iso3}: sectors {sorted(missing)} not in the table")
    return sub.groupby("year", as_index=False)["n2o_gg"].sum()

"""Every unit conversion of the pipeline, in one place.

Internally the pipeline works in kg N2O-N (emissions), kg N/ha (N rates), ha (areas) and mm
(water). Conversions to and from what users supply, and to reported quantities (N2O mass,
CO2-equivalent), happen here and nowhere else.

References
----------
IPCC (2006, 2019) Guidelines, Vol. 4 Ch. 11: N2O = N2O-N x 44/28.
IPCC AR4 (2007), AR5 (2013), AR6 (2021): GWP100 of N2O = 298, 265, 273.
"""

from __future__ import annotations

import re

import numpy as np

#: Molar-mass ratio of N2O (44 g/mol) to its two N atoms (28 g/mol).
N2O_PER_N2O_N = 44.0 / 28.0
#: 1 ha = 15 mu (Chinese statistics).
MU_PER_HA = 15.0
#: m2 per hectare.
M2_PER_HA = 10_000.0
#: GWP100 of N2O by IPCC assessment report; the name is written next to every CO2e figure.
GWP100_N2O = {"AR4": 298.0, "AR5": 265.0, "AR6": 273.0}
DAYS_PER_YEAR = 365.0
#: Authalic radius of the GRS80/WGS84 ellipsoid, m (sphere of equal surface area; Snyder 1987).
EARTH_RADIUS_M = 6_371_007.181
#: Seconds per day.
SECONDS_PER_DAY = 86_400.0
#: Days per year for flux -> annual mass (365-day year, 31 536 000 s).
DEFAULT_DAYS_PER_YEAR = DAYS_PER_YEAR
#: kg per tonne (t = Mg).
KG_PER_T = 1_000.0
#: kg per kt (kt = Gg).
KG_PER_KT = 1_000_000.0


def _normalise(unit: str) -> str:
    """Lower-case a unit string and strip spacing and typographic variants.

    ``"kg N2O-N ha⁻¹"``, ``"kg N2O-N/ha"`` and ``"KG N2O-N / HA"`` all become ``"kgn2o-n/ha"``.
    """
    u = str(unit).strip().lower()
    u = u.replace("µ", "u").replace("μ", "u").replace("⁻¹", "-1").replace("₂", "2")
    u = re.sub(r"\s+", "", u)
    u = u.replace("ha-1", "/ha").replace("d-1", "/d").replace("yr-1", "/yr")
    u = u.replace("m-2", "/m2").replace("h-1", "/h")
    u = u.replace("/day", "/d").replace("/year", "/yr").replace("/a", "/yr")
    u = u.replace("/hr", "/h")
    return u


# Flux units: factor to kg N2O-N/ha for the measured period, and whether the figure is a rate
# that needs the period length (days) to become a period total.
_FLUX_UNITS: dict[str, tuple[float, bool]] = {
    "kgn2o-n/ha": (1.0, False),
    "kgn2o-n/ha/season": (1.0, False),
    "kgn2o-n/ha/yr": (1.0, False),
    "kgn/ha": (1.0, False),
    "kgn2o/ha": (1.0 / N2O_PER_N2O_N, False),
    "kgn2o/ha/season": (1.0 / N2O_PER_N2O_N, False),
    "kgn2o/ha/yr": (1.0 / N2O_PER_N2O_N, False),
    "gn2o-n/ha": (1e-3, False),
    "gn2o-n/ha/d": (1e-3, True),
    "gn2o/ha/d": (1e-3 / N2O_PER_N2O_N, True),
    "gn/ha/d": (1e-3, True),
    # 1 ug N m-2 h-1 = 1e-9 kg * 1e4 m2/ha * 24 h/d = 2.4e-4 kg N/ha/d
    "ugn2o-n/m2/h": (1e-9 * M2_PER_HA * 24.0, True),
    "ugn/m2/h": (1e-9 * M2_PER_HA * 24.0, True),
}

FLUX_UNITS: tuple[str, ...] = tuple(sorted(_FLUX_UNITS))
"""Accepted flux unit strings, in normalised spelling."""

_AREA_UNITS = {"ha": 1.0, "mu": 1.0 / MU_PER_HA, "km2": 100.0, "1000ha": 1000.0, "khm2": 1000.0}
_N_RATE_UNITS = {"kgn/ha": 1.0, "kg/ha": 1.0, "kgn/mu": MU_PER_HA, "kg/mu": MU_PER_HA}


def is_flux_unit(unit: str) -> bool:
    """Whether ``unit`` is a flux unit the pipeline can convert."""
    return _normalise(unit) in _FLUX_UNITS


def flux_needs_duration(unit: str) -> bool:
    """Whether a flux in ``unit`` is a rate that needs the measurement period in days."""
    return _FLUX_UNITS[_normalise(unit)][1]


def flux_to_kg_n2o_n_ha(value: np.ndarray, unit: np.ndarray, duration_d: np.ndarray) -> np.ndarray:
    """Convert field fluxes in mixed units to period totals in kg N2O-N/ha.

    Parameters
    ----------
    value
        Flux values as reported.
    unit
        Unit string of each value (any spelling :func:`is_flux_unit` accepts).
    duration_d
        Length of the measured period in days; used only for rate units (per day, per hour).

    Returns
    -------
    numpy.ndarray
        kg N2O-N/ha over the measured period (season or year as reported).

    Notes
    -----
    For a rate r in unit u over d days, the period total is ``r * f(u) * d`` where ``f`` is
    the factor to kg N2O-N/ha/d. Mass units of N2O are divided by 44/28.
    """
    value = np.asarray(value, dtype=float)
    units = np.asarray([_normalise(u) for u in np.asarray(unit, dtype=object)])
    duration_d = np.asarray(duration_d, dtype=float)
    factor = np.array([_FLUX_UNITS[u][0] for u in units])
    is_rate = np.array([_FLUX_UNITS[u][1] for u in units], dtype=bool)
    return np.where(is_rate, value * factor * duration_d, value * factor)


def is_area_unit(unit: str) -> bool:
    """Whether ``unit`` is an area unit the pipeline can convert."""
    return _normalise(unit) in _AREA_UNITS


def area_to_ha(value: np.ndarray, unit: np.ndarray | str) -> np.ndarray:
    """Convert areas in ha, mu, km2 or thousand ha (kha, ``1000 ha``) to ha."""
    units = np.broadcast_to(np.asarray(unit, dtype=object), np.shape(value))
    factor = np.array([_AREA_UNITS[_normalise(u)] for u in units.ravel()]).reshape(np.shape(value))
    return np.asarray(value, dtype=float) * factor


def is_n_rate_unit(unit: str) -> bool:
    """Whether ``unit`` is an N-rate unit the pipeline can convert."""
    return _normalise(unit) in _N_RATE_UNITS


def n_rate_to_kg_ha(value: np.ndarray, unit: np.ndarray | str) -> np.ndarray:
    """Convert N rates in kg N/ha or kg N/mu (kg/mu x 15 = kg/ha) to kg N/ha."""
    units = np.broadcast_to(np.asarray(unit, dtype=object), np.shape(value))
    factor = np.array([_N_RATE_UNITS[_normalise(u)] for u in units.ravel()]).reshape(np.shape(value))
    return np.asarray(value, dtype=float) * factor


def n2o_n_to_n2o(n2o_n: np.ndarray | float) -> np.ndarray | float:
    """Mass of N2O from mass of N2O-N (x 44/28)."""
    return np.asarray(n2o_n) * N2O_PER_N2O_N if np.ndim(n2o_n) else float(n2o_n) * N2O_PER_N2O_N


def n2o_to_n2o_n(n2o: np.ndarray | float) -> np.ndarray | float:
    """Mass of N2O-N from mass of N2O (x 28/44)."""
    return np.asarray(n2o) / N2O_PER_N2O_N if np.ndim(n2o) else float(n2o) / N2O_PER_N2O_N


def n2o_t_to_n2o_n_kg(n2o_t: np.ndarray | float) -> np.ndarray | float:
    """kg N2O-N from tonnes N2O (EDGAR grids): x 1000 x 28/44."""
    return n2o_to_n2o_n(np.asarray(n2o_t, dtype=float) * KG_PER_T if np.ndim(n2o_t) else float(n2o_t) * KG_PER_T)


def n2o_kt_to_n2o_n_kg(n2o_kt: np.ndarray | float) -> np.ndarray | float:
    """kg N2O-N from kt (= Gg) N2O (EDGAR and FAOSTAT national tables): x 1e6 x 28/44."""
    return n2o_to_n2o_n(np.asarray(n2o_kt, dtype=float) * KG_PER_KT if np.ndim(n2o_kt) else float(n2o_kt) * KG_PER_KT)


def n2o_n_to_co2e(n2o_n: np.ndarray | float, gwp: str) -> np.ndarray | float:
    """CO2-equivalent mass from N2O-N mass with the named GWP100 (``"AR4"``, ``"AR5"``, ``"AR6"``)."""
    if gwp not in GWP100_N2O:
        raise ValueError(f"unknown GWP100 set {gwp!r}; use one of {sorted(GWP100_N2O)}")
    return n2o_n_to_n2o(n2o_n) * GWP100_N2O[gwp]


# ---------------------------------------------------------------------------------------------
# Units of Chinese statistics (NBS): 千公顷, 万吨, ...
# ---------------------------------------------------------------------------------------------
#: ha per 千公顷 (thousand hectares).
HA_PER_THOUSAND_HA = 1_000.0
#: kg per 万吨 (10,000 tonnes).
KG_PER_WAN_TONNE = 1.0e7
#: kW per 万千瓦 (10,000 kW).
KW_PER_WAN_KW = 1.0e4
#: kWh per 亿千瓦时 (100 million kWh).
KWH_PER_YI_KWH = 1.0e8

#: NBS unit spelling (normalised: lower case, no spaces) -> (pipeline unit, factor).
NBS_UNITS: dict[str, tuple[str, float]] = {
    "千公顷": ("ha", HA_PER_THOUSAND_HA),
    "thousandhectares": ("ha", HA_PER_THOUSAND_HA),
    "thousandsofhectares": ("ha", HA_PER_THOUSAND_HA),
    "1000hectares": ("ha", HA_PER_THOUSAND_HA),
    "1000ha": ("ha", HA_PER_THOUSAND_HA),
    "公顷": ("ha", 1.0),
    "hectares": ("ha", 1.0),
    "万吨": ("kg", KG_PER_WAN_TONNE),
    "10000tons": ("kg", KG_PER_WAN_TONNE),
    "10,000tons": ("kg", KG_PER_WAN_TONNE),
    "10thousandtons": ("kg", KG_PER_WAN_TONNE),
    "吨": ("kg", 1_000.0),
    "tons": ("kg", 1_000.0),
    "万千瓦": ("kW", KW_PER_WAN_KW),
    "亿千瓦小时": ("kWh", KWH_PER_YI_KWH),
    "亿千瓦时": ("kWh", KWH_PER_YI_KWH),
    "个": ("count", 1.0),
}

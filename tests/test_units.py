"""Unit conversions: each factor checked against an independent hand computation."""

import numpy as np
import pytest

from pipeline import units


def test_n2o_mass_ratio() -> None:
    assert units.n2o_n_to_n2o(28.0) == pytest.approx(44.0)
    assert units.n2o_n_to_co2e(1.0, "AR6") == pytest.approx(44 / 28 * 273)
    assert units.n2o_n_to_co2e(1.0, "AR4") == pytest.approx(44 / 28 * 298)
    with pytest.raises(ValueError):
        units.n2o_n_to_co2e(1.0, "AR3")


@pytest.mark.parametrize(
    "value,unit,days,expected",
    [
        (2.0, "kg N2O-N/ha", np.nan, 2.0),
        (2.0, "kg N2O-N ha-1 yr-1", np.nan, 2.0),
        (44.0, "kg N2O/ha", np.nan, 28.0),
        (10.0, "g N2O-N/ha/d", 100, 1.0),
        (10.0, "g N2O-N ha⁻¹ d⁻¹", 100, 1.0),
        # 1 ug N m-2 h-1 sustained for a year = 0.0876 kg N/ha/yr (DOMAIN.md sec. 2)
        (1.0, "µg N m-2 h-1", 365, 0.0876),
    ],
)
def test_flux_units(value, unit, days, expected) -> None:
    assert units.is_flux_unit(unit)
    out = units.flux_to_kg_n2o_n_ha(np.array([value]), np.array([unit], dtype=object), np.array([days]))
    assert out[0] == pytest.approx(expected, rel=1e-3)


def test_rate_units_need_duration() -> None:
    assert units.flux_needs_duration("g N2O-N/ha/d") and not units.flux_needs_duration("kg N2O/ha")
    assert not units.is_flux_unit("kg N2O-N/acre")


def test_area_and_n_rate() -> None:
    assert units.area_to_ha(np.array([15.0]), "mu")[0] == pytest.approx(1.0)
    assert units.area_to_ha(np.array([1.0, 2.0]), np.array(["km2", "1000 ha"], dtype=object)).tolist() == [
        100.0,
        2000.0,
    ]
    assert units.n_rate_to_kg_ha(np.array([10.0]), "kg N/mu")[0] == pytest.approx(150.0)
    assert not units.is_area_unit("acre") and not units.is_n_rate_unit("lb/acre")

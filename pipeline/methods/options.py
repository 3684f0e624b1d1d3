"""The settings a method reads, as structural types.

Methods never import :mod:`pipeline.config`: they take any object with these attributes. The
config sections (:class:`pipeline.config.FitConfig`, ...) satisfy them, and so does a
``types.SimpleNamespace`` in a notebook or a test. Each protocol lists exactly what its methods
read, so the dependency of a method on its settings is visible here.
"""

from __future__ import annotations

from typing import Any, Protocol


class FitOptions(Protocol):
    """Settings of model fitting and cross-validation (the ``fit:`` config section)."""

    crops: list[str]
    covariates: list[str]
    candidates: list[str]
    pin: dict[str, str]
    min_records: int
    min_sites: int
    pooling: dict[str, str]
    nonpositive_flux: str
    flux_floor_kg_ha: float
    cv_folds: int
    cv_seed: int
    group_by: str
    retransform: str
    rice_water_regime: str
    max_missing_covariate: float
    min_sites_per_level: int
    ef_curve_max_n_kg_ha: float
    ef_curve_draws: int

    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


class EstimateOptions(Protocol):
    """Settings of the Monte Carlo estimate (the ``estimate:`` config section)."""

    background: str
    indirect: bool
    draws: int
    seed: int
    rel_error_n_rate: float
    rel_error_area: float
    max_cells_per_task: int


class TrendOptions(Protocol):
    """Settings of the breakpoint analysis (the ``trend:`` config section)."""

    max_breaks: int
    criterion: str
    alpha: float
    min_segment_years: int
    n_sim: int
    seed: int


class GridOptions(Protocol):
    """One grid definition (an entry of ``grid.grids``)."""

    name: str
    resolution_deg: float
    west: float | None
    east: float | None
    south: float | None
    north: float | None

"""Configuration: one YAML file, validated at load.

Unknown keys and wrong types are errors naming the key and the expected type. Paths in the file
are relative to the project root (the folder holding ``config/``), so the same config works from
``make``, cron or a notebook started anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.contract import CROPS
from pipeline.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnMapping(_Strict):
    """How to read a foreign table without editing it.

    ``columns`` maps contract names to the user's column names; ``constants`` sets contract
    columns that the file lacks (e.g. one unit for the whole file); ``values`` recodes
    categorical cells (e.g. ``crop: {Wetland_rice: rice}``); ``scale`` multiplies a numeric
    column after renaming (e.g. SOC in % to g/kg: 10); ``id_from_row`` builds the key column
    from the file name and line number.
    """

    columns: dict[str, str] = Field(default_factory=dict)
    constants: dict[str, str | float | int] = Field(default_factory=dict)
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    scale: dict[str, float] = Field(default_factory=dict)
    id_from_row: str | None = None
    default_from: dict[str, str] = Field(default_factory=dict)


class InputSpec(_Strict):
    """One source of an input: a file, a folder or a glob of CSV (UTF-8 or GBK), Parquet or XLSX files.

    An input may list several sources (``n_rate: [{path: a.csv}, {path: b.xlsx, sheet: 2}]``),
    each with its own mapping, encoding, sheet and unit; their rows are concatenated.
    ``format: nbs`` reads an NBS provincial export (long CSV or English spreadsheet; see
    docs/nbs.md) instead of a contract-layout table.
    """

    path: str
    encoding: Literal["auto", "utf-8", "gbk", "gb18030"] = "auto"
    sheet: str | int = 0
    mapping: str | None = None  # YAML file with a ColumnMapping, relative to the project root
    #: One unit for every row of this source, written to the contract's ``unit`` column
    #: (n_rate, sown_area) when the file has none, e.g. ``mu`` for a province reporting in mu.
    unit: str | None = None
    format: Literal["table", "nbs"] = "table"


#: The administrative level of the activity units (the ``county_code`` of activity tables).
UnitLevel = Literal["county", "prefecture", "province"]

_TABULAR_INPUTS = ("observations", "n_rate", "sown_area", "fertilizer_n", "irrigation", "covariates", "crosswalk")


class Inputs(_Strict):
    observations: InputSpec | list[InputSpec]
    #: Optional when ``fertilizer_n`` gives regional N totals (then crop rates are allocated).
    n_rate: InputSpec | list[InputSpec] | None = None
    sown_area: InputSpec | list[InputSpec]
    #: Regional fertilizer N totals (contract table ``fertilizer_n``), allocated to crop N
    #: rates by ``ingest.n_allocation`` from the sown areas.
    fertilizer_n: InputSpec | list[InputSpec] | None = None
    irrigation: InputSpec | list[InputSpec]
    #: Optional: without it the soil and climate covariate columns are empty (a model that
    #: uses them then refuses to run) and the climate is ``ingest.defaults.climate``.
    covariates: InputSpec | list[InputSpec] | None = None
    boundaries: InputSpec
    #: Optional when every activity code is present-day (in the boundaries).
    crosswalk: InputSpec | list[InputSpec] | None = None
    proxy: InputSpec | None = None  # cropland-fraction raster for the grid stage
    #: EDGAR gridded N2O (folder, glob or file of yearly zips/.nc/.txt, any flavour) for compare.
    edgar: InputSpec | None = None
    #: EDGAR national table (v4.3.2 .xls, its CSV extract, or an EDGAR 2024+ .xlsx) for compare.
    edgar_national: InputSpec | None = None
    #: FAOSTAT synthetic-fertilizer N2O extract (DDF or bulk CSV layout) for compare.
    faostat: InputSpec | None = None
    #: Administrative level of the activity units: 6-digit codes of counties, prefectures
    #: (xxxx00) or provinces (xx0000), matching the boundaries. Recorded in every manifest.
    unit_level: UnitLevel = "county"
    #: Words carried into every manifest, NetCDF title and figure, e.g. "SYNTHETIC demo world".
    label: str = ""

    def sources(self, name: str) -> list[InputSpec]:
        """The sources of input ``name`` as a list (empty when the input is not configured)."""
        spec = getattr(self, name)
        if spec is None:
            return []
        return list(spec) if isinstance(spec, list) else [spec]


def _check_years(first: int, last: int, section: str) -> None:
    if first > last:
        raise ValueError(f"{section}.first_year ({first}) is after {section}.last_year ({last}); swap them")


class PlausibilityLimit(_Strict):
    """One plausibility limit: its value and what a violation does.

    ``error``: ingest stops (activity) or the row is quarantined (observations) after every
    violation is listed in ``ingest/violations.csv``; ``warn``: the rows are kept, listed there
    and counted in the manifest.
    """

    value: float
    action: Literal["warn", "error"] = "error"


class PlausibilityLimits(_Strict):
    """Plausibility limits checked after unit conversion (docs/data_contract.md)."""

    #: Highest N rate, kg N/ha (Chinese vegetables reach about 1,000-1,400 kg N/ha).
    max_n_rate_kg_ha: PlausibilityLimit = PlausibilityLimit(value=1500.0)
    #: Sown area of all crops in a unit-year over its land area (double and triple cropping
    #: exceed 1; a unit mix-up exceeds this).
    max_sown_per_land_area: PlausibilityLimit = PlausibilityLimit(value=3.0)
    #: Lowest and highest observed flux, kg N2O-N/ha over the measured period.
    min_flux_kg_n2o_n_ha: PlausibilityLimit = PlausibilityLimit(value=-10.0)
    max_flux_kg_n2o_n_ha: PlausibilityLimit = PlausibilityLimit(value=200.0)

    @model_validator(mode="before")
    @classmethod
    def _partial(cls, data: Any) -> Any:
        """A limit given with only ``action`` (or only ``value``) keeps the other default."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, given in data.items():
            f = cls.model_fields.get(name)
            if f is not None and isinstance(given, dict):
                out[name] = {**f.default.model_dump(), **given}
        return out


class ObservationWindow(_Strict):
    """Years an observation may be dated (``last_year`` unset: the current year; never later)."""

    first_year: int = 1950
    last_year: int | None = None


class IngestDefaults(_Strict):
    """Values used when an input does not give them (each documented in docs/data_contract.md)."""

    #: Irrigated share of sown area when an irrigation source has no ``irrigated_fraction``
    #: column: ``null`` makes the missing column an error (there is no neutral value).
    irrigated_fraction: float | None = Field(None, ge=0.0, le=1.0)
    #: Irrigation depth on irrigated land (mm/yr) when a source gives none (NBS gives none).
    irrigation_mm: float | None = Field(None, ge=0.0, le=3000.0)
    #: Where ``irrigation_mm`` comes from (required with it).
    irrigation_mm_source: str = ""
    #: IPCC 2019 climate class when the covariates give none (or there are no covariates):
    #: ``null`` makes a missing class an error, because the disaggregated Tier 1 EF depends on it.
    climate: Literal["wet", "dry"] | None = None


class CropIntensitySpec(_Strict):
    """Relative N intensity of one crop (only ratios matter), with its source."""

    weight: float = Field(ge=0.0)
    source: str = Field(min_length=1)
    verified: bool = False


class CompoundShareSpec(_Strict):
    """N share of compound fertilizer's pure nutrient (N + P2O5 + K2O), with its source."""

    value: float = Field(ge=0.0, le=1.0)
    source: str = Field(min_length=1)
    verified: bool = False


class NAllocation(_Strict):
    """Top-down allocation of regional fertilizer N to crop N rates (docs/nbs.md).

    ``rate_c = (N_straight + s x C_compound) x w_c / sum_k w_k A_k``; allocated N is checked to
    sum back to each regional total to ``rtol``.
    """

    compound_n_share: CompoundShareSpec
    crop_n_intensity: dict[str, CropIntensitySpec]
    rtol: float = Field(1e-9, gt=0.0, le=1e-3)

    @model_validator(mode="after")
    def _known(self) -> NAllocation:
        unknown = sorted(c for c in self.crop_n_intensity if c not in CROPS)
        if unknown:
            raise ValueError(
                f"ingest.n_allocation: unknown crop(s) {', '.join(unknown)}; the crop classes are {', '.join(CROPS)}"
            )
        return self


class IngestConfig(_Strict):
    max_reject_fraction: float = Field(0.05, ge=0.0, le=1.0)
    max_gap_years: int = Field(2, ge=0, le=10)
    first_year: int = 1990
    last_year: int = 2014
    limits: PlausibilityLimits = PlausibilityLimits()
    observation_years: ObservationWindow = ObservationWindow()
    defaults: IngestDefaults = IngestDefaults()
    #: Top-down N allocation (required when ``inputs.n_rate`` is an NBS source or
    #: ``inputs.fertilizer_n`` is given).
    n_allocation: NAllocation | None = None
    #: Crops without observations of their own that use a copy of another class's records,
    #: e.g. ``{wheat: other_upland}`` where a source has only a pooled upland class.
    borrow_observations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _years(self) -> IngestConfig:
        _check_years(self.first_year, self.last_year, "ingest")
        unknown = sorted(f"{k}: {v}" for k, v in self.borrow_observations.items() if k not in CROPS or v not in CROPS)
        if unknown:
            raise ValueError(
                f"ingest.borrow_observations: unknown crop(s) in {', '.join(unknown)}; the crop "
                f"classes are {', '.join(CROPS)}"
            )
        if self.defaults.irrigation_mm is not None and not self.defaults.irrigation_mm_source.strip():
            raise ValueError("ingest.defaults.irrigation_mm needs ingest.defaults.irrigation_mm_source")
        return self


class DemoCalibration(_Strict):
    """National yearly totals the demo world is scaled to (see docs/demo_world.md).

    Rice, wheat and maize areas and N use are real FAOSTAT figures (``source``); vegetables and
    total sown area are generator assumptions given at anchor years and interpolated linearly.
    """

    source: str
    rice_area_ha: dict[int, float]
    wheat_area_ha: dict[int, float]
    maize_area_ha: dict[int, float]
    n_fertilizer_t: dict[int, float]  # tonnes N per year, all uses
    assumed_vegetables_area_ha: dict[int, float]  # anchor years, interpolated
    assumed_total_sown_area_ha: dict[int, float]  # anchor years, interpolated
    crop_n_share: dict[int, float]  # share of national N on the five crops, anchor years, interpolated


class DemoConfig(_Strict):
    """Parameters of the synthetic demo world (see docs/demo_world.md)."""

    seed: int = 20190814
    n_sites: int = Field(150, ge=10)
    records_per_site: float = Field(5.7, gt=3.2)
    break_year: int = 2003
    provinces: list[int] | None = None  # 2-digit codes; None = every mainland province
    first_year: int = 1990
    last_year: int = 2014
    retired_code_share: float = Field(0.03, ge=0.0, le=0.5)
    raster_resolution_deg: float = Field(0.05, gt=0.0)
    calibration: DemoCalibration | None = None

    @model_validator(mode="after")
    def _years(self) -> DemoConfig:
        _check_years(self.first_year, self.last_year, "demo")
        return self


class DaskConfig(_Strict):
    """Where parallel work runs: a local threaded scheduler, or an existing cluster."""

    scheduler: str | None = None  # address like tcp://host:8786; None = local
    local: Literal["threads", "processes", "synchronous"] = "threads"
    n_workers: int | None = Field(None, ge=1)  # None = one per core


# option literals shared by a list field's annotation and its typed default (mypy infers a bare
# lambda's list literal as list[str])
FitFamily = Literal["glm_gamma", "mixed_lognormal"]
ResponseForm = Literal["linear", "exponential", "quadratic", "saturating", "exponential_rs"]
EstimateRun = Literal["fitted", "tier1"]
_DEFAULT_CANDIDATES: tuple[FitFamily, ...] = ("glm_gamma", "mixed_lognormal")
_DEFAULT_RESPONSE_FORMS: tuple[ResponseForm, ...] = (
    "linear",
    "exponential",
    "quadratic",
    "saturating",
    "exponential_rs",
)
_DEFAULT_RUNS: tuple[EstimateRun, ...] = ("fitted", "tier1")


class FitConfig(_Strict):
    crops: list[str] = Field(default_factory=lambda: list(CROPS))
    covariates: list[str] = Field(
        default_factory=lambda: ["water_input_mm", "mean_temp_c", "soil_ph", "soc_g_kg", "clay_pct"]
    )
    candidates: list[FitFamily] = Field(default_factory=lambda: list(_DEFAULT_CANDIDATES))
    pin: dict[str, FitFamily] = Field(default_factory=dict)
    min_records: int = Field(30, ge=5)
    min_sites: int = Field(5, ge=2)
    pooling: dict[str, str] = Field(default_factory=dict)  # crop -> crop whose data it borrows
    nonpositive_flux: Literal["floor", "quarantine"] = "floor"
    flux_floor_kg_ha: float = Field(0.005, gt=0.0)
    cv_folds: int = Field(5, ge=2)
    cv_seed: int = 20190815  # shuffles sites into CV folds and seeds the EF-curve bands
    group_by: Literal["site_id", "study_id"] = "site_id"  # random-intercept / cluster unit
    retransform: Literal["duan", "lognormal"] = "duan"  # log-scale -> mean bias correction
    rice_water_regime: Literal["continuous_flooding", "single_drainage", "multiple_drainage"] = (
        "single_drainage"  # regime assumed for activity rows (no water_regime column)
    )
    max_missing_covariate: float = Field(0.5, ge=0.0, le=1.0)  # drop a covariate above this share
    min_sites_per_level: int = Field(2, ge=1)  # a water regime / crop level needs this many sites
    ef_curve_max_n_kg_ha: float = Field(400.0, gt=0.0)
    ef_curve_draws: int = Field(400, ge=10)
    # issue 12: the emission model the estimate uses. "model_average": the N-response forms in
    # fit.response_forms weighted by fit.form_weighting and drawn per Monte Carlo iteration;
    # "single_family": the best of fit.candidates by CV RMSE (the earlier behaviour, for contrast)
    model: Literal["model_average", "single_family"] = "model_average"
    response_forms: list[ResponseForm] = Field(default_factory=lambda: list(_DEFAULT_RESPONSE_FORMS), min_length=1)
    form_weighting: Literal["stacking", "pseudo_bma", "pseudo_bma_plus"] = "stacking"
    # measurement period: "covariate" adds log(duration_days / 365) (activity rows are annual:
    # value 0); "ignore" mixes seasonal and annual records (reported in the diagnostics)
    measurement_period: Literal["covariate", "ignore"] = "covariate"
    # period the estimate predicts for an activity row: "median" (default), the median measured
    # period of the crop's records (a crop season for seasonal records: no extrapolation), or
    # "annual" (365 days; for compilations of annual records)
    period_reference: Literal["median", "annual"] = "median"

    @model_validator(mode="after")
    def _known_crops(self) -> FitConfig:
        unknown = sorted(c for c in self.crops if c not in CROPS)
        for key, crops in (("fit.pin", self.pin), ("fit.pooling", self.pooling)):
            unknown += [f"{key}.{c}" for c in crops if c not in CROPS]
        for crop, donors in self.pooling.items():
            unknown += [
                f"fit.pooling.{crop}: {d}" for d in (x.strip() for x in donors.split(",")) if d and d not in CROPS
            ]
        if unknown:
            raise ValueError(f"unknown crop(s) {', '.join(unknown)}; the crop classes are {', '.join(CROPS)}")
        return self


class IpccConfig(_Strict):
    edition: Literal["2006", "2019"] = "2019"
    disaggregated: bool = True


class EstimateConfig(_Strict):
    runs: list[EstimateRun] = Field(default_factory=lambda: list(_DEFAULT_RUNS))
    background: Literal["separate", "included"] = "separate"
    indirect: bool = False
    gwp: Literal["AR4", "AR5", "AR6"] = "AR6"
    draws: int = Field(1000, ge=10)
    seed: int = 12345
    rel_error_n_rate: float = Field(0.10, ge=0.0)
    rel_error_area: float = Field(0.05, ge=0.0)
    max_cells_per_task: int = Field(1_000_000, ge=1000)  # draws x rows held by one task
    # model-average crops: one uniform per draw picks every crop's form ("shared", comonotone)
    # or each crop draws its form independently
    form_draws: Literal["shared", "independent"] = "shared"


class GridSpec(_Strict):
    """One regular latitude-longitude grid (EPSG:4326); see docs/grid.md.

    Cell edges sit on integer multiples of ``resolution_deg`` (0.1 deg: edges at x.x, centres at
    x.x5, as EDGAR). The extent, in degrees, is snapped outward to those edges; an unset side is
    taken from the boundaries, so the default grid covers every county (the Nansha/Xisha
    districts reach 3.8 deg N).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    resolution_deg: float = Field(gt=0.0, le=10.0)
    west: float | None = Field(None, ge=-180.0, le=180.0)
    east: float | None = Field(None, ge=-180.0, le=180.0)
    south: float | None = Field(None, ge=-90.0, le=90.0)
    north: float | None = Field(None, ge=-90.0, le=90.0)
    # 95 % interval layers (cell share x unit bounds, per crop) in this grid's NetCDF
    intervals: bool = True
    # internal overviews of this grid's GeoTIFFs: average (mean per-cell mass), nearest or none
    overviews: Literal["none", "nearest", "average"] = "average"

    @model_validator(mode="after")
    def _extent(self) -> GridSpec:
        for lo, hi in (("west", "east"), ("south", "north")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a >= b:
                raise ValueError(f"grid {self.name}: {lo} ({a}) must be less than {hi} ({b})")
        return self


class GridConfig(_Strict):
    """Settings of the grid stage (see docs/grid.md)."""

    grids: list[GridSpec] = Field(
        default_factory=lambda: [
            GridSpec(name="0p1deg", resolution_deg=0.1),
            GridSpec(name="0p01deg", resolution_deg=0.01, intervals=False, overviews="none"),
        ]
    )
    geotiff: bool = True
    use_proxy: bool = True  # weight by inputs.proxy (cropland fraction) when it is configured
    years_in_flight: int = Field(2, ge=1, le=64)  # year slabs held in memory at once (bounds peak memory)
    chunk_cells: int = Field(256, ge=16, le=4096)  # NetCDF/GeoTIFF spatial chunk (tile) edge, cells
    # NetCDF codec: zlib (DEFLATE, read by every netCDF-4 reader) or zstd (needs netCDF-C >= 4.9
    # with filter plugins: stock ncdump 4.9.0 and GDAL 3.6 cannot read it)
    netcdf_compression: Literal["zlib", "zstd"] = "zlib"
    compression_level: int = Field(1, ge=1, le=22)  # NetCDF level (zlib 1-9, zstd 1-22)
    netcdf_shuffle: bool = True
    deflate_engine: Literal["zlib-ng", "zlib"] = "zlib-ng"  # speed only: both write standard DEFLATE
    # GeoTIFF codec: zstd (GDAL >= 2.3, e.g. stock 3.6) or deflate (every TIFF reader)
    geotiff_compression: Literal["deflate", "zstd", "lzw"] = "zstd"
    geotiff_level: int = Field(1, ge=1, le=22)
    geotiff_predictor: bool = False  # floating-point predictor (TIFF predictor 3): slower, larger here
    write_threads: int = Field(2, ge=1, le=64)  # threads compressing NetCDF chunks and GeoTIFF tiles

    @model_validator(mode="after")
    def _codec(self) -> GridConfig:
        if self.netcdf_compression == "zlib" and self.compression_level > 9:
            raise ValueError(f"grid.compression_level {self.compression_level} is above 9, the highest zlib level")
        if self.geotiff_compression == "deflate" and self.geotiff_level > 12:
            raise ValueError(f"grid.geotiff_level {self.geotiff_level} is above 12, the highest DEFLATE level")
        return self


class TrendConfig(_Strict):
    max_breaks: int = Field(2, ge=1, le=3)  # 0 breaks is always a candidate model
    criterion: Literal["bic", "aic"] = "bic"
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    min_segment_years: int = Field(4, ge=2)
    n_sim: int = Field(4000, ge=199)  # null simulations of the sup-F existence tests
    seed: int = 0  # seed of those simulations (and of the second-kink bootstrap)


class ReportConfig(_Strict):
    """Settings of the report stage (see docs/report.md)."""

    map_years: list[int] = Field(default_factory=list)  # empty: first year, break year, last year
    grid: str | None = None  # name of the grid to map; None: the coarsest grid in grid.grids
    provinces: list[int] = Field(default_factory=list)  # 2-digit codes for the provincial panels; empty: largest
    max_provinces: int = Field(12, ge=1, le=40)  # provincial panels when `provinces` is empty
    embed_svg: bool = False  # also embed each figure's SVG in the HTML (a download link; larger file)


class CompareConfig(_Strict):
    """Settings of the compare stage (see docs/compare.md)."""

    edgar_sector: str = "AGS"  # EDGAR gridded sector read from inputs.edgar (file names and metadata)
    edgar_national_country: str = "CHN"  # ISO3 code of the national-table rows
    edgar_national_sectors: list[str] = Field(default_factory=lambda: ["4D1"])  # summed (IPCC-1996 codes)
    #: share of the EDGAR sector attributed to synthetic N (0-1]; null = compare the whole sector
    edgar_synthetic_share: float | None = Field(None, gt=0.0, le=1.0)
    faostat_area_code: int = 351  # FAOSTAT area (351 China, 41 China mainland)
    grid: str = "0p1deg"  # grid of the grid stage used for the spatial comparison
    first_year: int | None = None  # None: every year both sides have
    last_year: int | None = None
    breakpoints: TrendConfig = TrendConfig()  # breakpoint settings for every compared series

    @model_validator(mode="after")
    def _years(self) -> CompareConfig:
        if self.first_year is not None and self.last_year is not None:
            _check_years(self.first_year, self.last_year, "compare")
        return self


class Config(_Strict):
    """The whole configuration."""

    inputs: Inputs
    ingest: IngestConfig = IngestConfig()
    demo: DemoConfig = DemoConfig()
    dask: DaskConfig = DaskConfig()
    fit: FitConfig = FitConfig()
    ipcc: IpccConfig = IpccConfig()
    estimate: EstimateConfig = EstimateConfig()
    grid: GridConfig = GridConfig()
    trend: TrendConfig = TrendConfig()
    compare: CompareConfig = CompareConfig()
    report: ReportConfig = ReportConfig()
    processed_dir: str = "data_processed"

    root: Path = Field(default=Path("."), exclude=True)

    def path(self, relative: str | Path) -> Path:
        """A config path resolved against the project root."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @property
    def processed(self) -> Path:
        """The folder of processed outputs."""
        return self.path(self.processed_dir)


def _format_validation_error(path: Path, err: ValidationError) -> str:
    errors = err.errors()
    # An unknown key is usually the root cause of the other messages (a misspelt section).
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{path}: unknown key '{key}'. Fix: remove it or check its spelling against config/default.yaml"
    if first["type"] == "missing":
        return f"{path}: required key '{key}' is missing. Fix: add it (see config/default.yaml)"
    if first["type"] == "value_error":  # a cross-field check: its message names the keys
        msg = str(first["msg"]).removeprefix("Value error, ")
        return f"{path}: {key or 'config'}: {msg}. Fix: correct the values"
    return f"{path}: key '{key}': {first['msg']} (got {first.get('input')!r}). Fix: correct the value"


def project_root_of(config_file: Path) -> Path:
    """The project root for a config file: the parent of the nearest enclosing ``config/``
    folder (so ``config/examples/x.yaml`` resolves against the same root), else the file's folder."""
    resolved = config_file.resolve()
    for parent in resolved.parents:
        if parent.name == "config":
            return parent.parent
    return resolved.parent


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a YAML config.

    Parameters
    ----------
    path
        The YAML file. Relative paths in it resolve against :func:`project_root_of` unless the
        file sets ``root``.
    overrides
        Nested keys to replace after reading (used by tests and the CLI's ``--set``).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found. Fix: pass --config with an existing file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path}: cannot read the config ({type(e).__name__}). Fix: pass --config with a readable YAML file"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)}). Fix: correct the syntax"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level. Fix: see config/default.yaml")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"--set {dotted}: '{p}' is a value, not a section. Fix: check the key against config/default.yaml"
                )
        node[leaf] = value
    root = Path(raw.pop("root", project_root_of(path)))
    try:
        cfg = Config(**raw, root=root)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(path, e)) from None
    return cfg


def load_mapping(cfg: Config, spec: InputSpec) -> ColumnMapping:
    """The column mapping of an input (empty when none is configured)."""
    if spec.mapping is None:
        return ColumnMapping()
    path = cfg.path(spec.mapping)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path}: a column mapping must be a mapping of keys (columns:, values:, ...). "
                "Fix: see config/examples/kensyn_mapping.yaml"
            )
        return ColumnMapping(**raw)
    except FileNotFoundError:
        raise ConfigError(f"{path}: mapping file not found. Fix: correct `mapping:` in the config") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({getattr(e, 'problem', e)}). Fix: correct the syntax") from None
    except ValidationError as e:
        raise ConfigError(_format_validation_error(path, e)) from None


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """Every key of the config as (dotted key, type, default), sections expanded."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann not in (InputSpec,):
            rows += config_keys(ann, key + ".")
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        type_name = (
            str(ann)
            .replace("typing.", "")
            .replace("pipeline.config.", "")
            .replace("__main__.", "")
            .replace("<class '", "")
            .replace("'>", "")
            .replace(" | ", " or ")
        )
        rows.append((key, type_name, "required" if field.is_required() else repr(default)))
    return rows

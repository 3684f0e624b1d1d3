"""The SYNTHETIC demo world: every input file a real user supplies, generated from a known truth.

``cropn2o demo-data`` writes, under the folders named in ``cfg.inputs`` (``data_raw/demo/`` by
default), county boundaries, per-province N-rate and sown-area CSVs (mixed units, mixed
encodings, short gaps, retired county codes), a code crosswalk in the format of
yescallop/areacodes, prefecture irrigation, county covariates, ~850 field N2O observations with
paired zero-N controls, and a cropland-fraction raster. The ground truth (true coefficients,
expected national emissions) goes to ``truth/``; the pipeline never reads it, only tests do.

The world is generated for every mainland county (so a province slice is an exact subset of the
full world and carries its national share); ``cfg.demo.provinces`` only selects what is written.
National totals follow smooth targets: continuous broken lines (kink at ``demo.break_year``)
fitted to real FAOSTAT figures carried in ``cfg.demo.calibration``, with 1 % year-to-year noise
(the generator reads nothing outside the project at run time). See docs/demo_world.md.

Modules by role: :mod:`~pipeline.demo.truth` (true parameters, national targets, expected
emissions), :mod:`~pipeline.demo.spatial` (synthetic spatial fields and covariates) and
:mod:`~pipeline.demo.writers` (the input files, in users' formats, and :func:`run`). Stages and
methods never import this package.

References
----------
Shang Z. et al. (2019) Weakened growth of cropland-N2O emissions in China associated with
nationwide policy interventions. Global Change Biology 25:3706-3719. doi:10.1111/gcb.14741
Stehfest E., Bouwman L. (2006) N2O and NO emission from agricultural fields and soils under
natural vegetation. Nutrient Cycling in Agroecosystems 74:207-228.
"""

from pipeline.demo.spatial import county_table, make_covariates, proxy_raster
from pipeline.demo.truth import (
    World,
    build_world,
    expected_emissions,
    national_break_truth,
    national_truth,
)
from pipeline.demo.writers import LABEL, relocated_inputs, run

__all__ = [
    "relocated_inputs",
    "LABEL",
    "World",
    "build_world",
    "county_table",
    "expected_emissions",
    "make_covariates",
    "national_break_truth",
    "national_truth",
    "proxy_raster",
    "run",
]

"""The real provincial inventory (config/examples/china_provinces_nbs.yaml) through every stage.

Real NBS activity and real KenSyn observations from ../shared/data (skips when absent). Kept
fast with --set: few draws, one 1-degree grid, few trend simulations, two CV folds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.readers import nbs
from pipeline.stages.registry import STAGES

CONFIG = Path(__file__).resolve().parent.parent / "config" / "examples" / "china_provinces_nbs.yaml"
STAGE_ORDER = [s for s in ("ingest", "fit", "estimate", "grid", "trend", "compare") if s in STAGES]


@pytest.fixture(scope="module")
def nbs_run(shared_data: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nbs")
    gpkg = root / "provinces.gpkg"  # as the example config's comment says, through the CLI
    assert main(["boundaries", "--level", "province", "--out", str(gpkg)]) == 0
    nbs_dir = shared_data / "nbs_province"
    sets = {
        "processed_dir": str(root / "processed"),
        "inputs.boundaries.path": str(gpkg),
        "inputs.observations.path": str(shared_data / "n2o_field_kensyn" / "KenSyn_N2O.csv"),
        "inputs.sown_area": json.dumps(
            [{"path": str(nbs_dir / "nbs_sown_area_by_crop_province_2005_2024.csv"), "format": "nbs"}]
        ),
        "inputs.n_rate": json.dumps(
            [{"path": str(nbs_dir / "nbs_irrigation_fertilizer_province_2005_2024.csv"), "format": "nbs"}]
        ),
        "inputs.irrigation": json.dumps(
            [{"path": str(nbs_dir / "nbs_irrigation_fertilizer_province_2005_2024.csv"), "format": "nbs"}]
        ),
        "estimate.draws": 40,
        "fit.cv_folds": 2,
        "fit.ef_curve_draws": 10,
        "trend.n_sim": 199,
        "grid.grids": json.dumps([{"name": "1deg", "resolution_deg": 1.0}]),
        "compare.grid": "1deg",
        "compare.breakpoints.n_sim": 199,
        "inputs.edgar_national.path": str(
            shared_data / "edgar_v432" / "edgar_v432_N2O_CHN_by_IPCC1996_1970_2012_Gg.csv"
        ),
        "inputs.faostat.path": str(
            shared_data
            / "faostat_china_extracts"
            / "ddf_unfao_faostat_gt_synthetic_fertilizers_emissions_n2o_china.csv"
        ),
    }
    args = ["--config", str(CONFIG), "-q"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    for stage in STAGE_ORDER:
        assert main([*args, stage]) == 0, stage
    return root / "processed"


def test_every_stage_finishes_and_records_the_level(nbs_run: Path) -> None:
    for stage in STAGE_ORDER:
        folder = STAGES[stage].folder
        manifest = json.loads((nbs_run / folder / "manifest.json").read_text())
        assert "REAL activity" in manifest["label"] and "PROVINCE level" in manifest["label"]
    ingest = json.loads((nbs_run / "ingest" / "manifest.json").read_text())
    assert ingest["unit_level"] == "province"
    assert ingest["counts"]["units_with_activity"] == 31
    assert "compare" in STAGE_ORDER or "compare" not in STAGES  # compare runs when it exists


def test_national_straight_n_2014_is_23_93_mt(nbs_run: Path) -> None:
    alloc = pd.read_csv(nbs_run / "ingest" / "n_allocation.csv")
    straight = alloc.drop_duplicates(["province_code", "year"]).groupby("year")["n_straight_fert_kg"].sum()
    assert straight[2014] / 1e9 == pytest.approx(23.93, abs=0.005)  # NBS: 2,392.9 10^4 t
    assert straight[2005] / 1e9 == pytest.approx(22.29, abs=0.005)  # NBS: 2,229.3 10^4 t


def test_allocated_crop_n_sums_to_the_provincial_totals(nbs_run: Path, shared_data: Path) -> None:
    """Totals re-derived from the NBS file by the reader, not taken from the allocation table."""
    tidy = nbs.read_nbs(shared_data / "nbs_province" / "nbs_irrigation_fertilizer_province_2005_2024.csv")
    fert = nbs.fertilizer_n_kg(tidy, years=range(2005, 2015)).set_index(["province_code", "year"])
    total = fert["n_straight_fert_kg"] + fert["n_compound_fert_kg"] * 0.3333333333
    alloc = pd.read_csv(nbs_run / "ingest" / "n_allocation.csv")
    allocated = alloc.groupby(["province_code", "year"])["n_crop_kg"].sum()
    rel = (allocated - total.reindex(allocated.index)).abs() / total.reindex(allocated.index)
    assert len(rel) == 310 and float(rel.max()) <= 1e-9
    # and the rates the estimate used are the allocated ones: rate x area summed = the total
    act = pd.read_parquet(nbs_run / "ingest" / "activity.parquet")
    act["province_code"] = act["county_code"] // 10_000
    n_used = (act["area_ha"] * act["n_rate_kg_ha"]).groupby([act["province_code"], act["year"]]).sum()
    assert np.allclose(n_used.to_numpy(), total.reindex(n_used.index).to_numpy(), rtol=1e-9)


def test_estimates_cover_every_province_year(nbs_run: Path) -> None:
    allcrops = pd.read_parquet(nbs_run / "estimate" / "national_total.parquet").set_index("year")
    assert list(allcrops.index) == list(range(2005, 2015))
    assert (allcrops["n2o_n_kg_mean"] > 0).all()
    assert (nbs_run / "grid" / "mass_check.csv").exists()
    if "compare" in STAGES:
        national = pd.read_csv(nbs_run / "compare" / "national.csv")
        assert {"edgar_national", "faostat"} <= set(national["reference"])
        assert (nbs_run / "compare" / "trends.csv").exists()

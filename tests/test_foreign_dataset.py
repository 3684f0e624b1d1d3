"""A foreign dataset in its own column names, run through the CLI as a new user would.

Observations in three flux units and a total water input; sown area in a ha file beside a mu
file (one ``unit:`` per source); N rates with one row over the plausibility limit (warn);
irrigation keyed by 4-digit prefecture code; covariates without a climate class (default); no
crosswalk (present-day codes). The expected numbers are worked out here by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import io
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ModelError
from pipeline.methods.models import CropModel, FittedModel, InventoryModel
from pipeline.methods.montecarlo import _check_covariance
from pipeline.stages.context import StageRun
from tests import mini_world

YEARS = range(1995, 2000)


def _build(root: Path) -> Path:
    raw = root / "raw"
    mini_world.build(root)  # for its square boundaries only
    w = mini_world.write_csv
    w(
        raw / "own" / "area_ha.csv",
        ["县代码", "年份", "作物", "面积"],
        [[c, y, crop, 1000.0] for c in (410101, 410102, 410201) for y in YEARS for crop in ("rice", "wheat")],
    )
    w(
        raw / "own" / "area_mu.csv",
        ["县代码", "年份", "作物", "面积"],
        [[c, y, crop, "15,000"] for c in (430101, 430102) for y in YEARS for crop in ("rice", "wheat")],
    )
    rates = [[c, y, crop, 150.0] for c in mini_world.SQUARES for y in YEARS for crop in ("rice", "wheat")]
    rates[3][3] = 1800.0  # over max_n_rate_kg_ha (1,500): listed, kept (action warn)
    w(raw / "own" / "n.csv", ["code", "yr", "crop_name", "N_kg_per_ha"], rates)
    w(
        raw / "own" / "irr.csv",
        ["地市代码", "年", "灌溉比例", "灌溉量"],
        [[p, y, 0.5, 200.0] for p in (4101, 4102, 4301) for y in YEARS],
    )
    w(
        raw / "own" / "cov.csv",
        ["code", "pH", "SOC", "clay", "T", "P"],
        [[c, 7.0, 10.0, 20.0, 14.0, 600.0] for c in mini_world.SQUARES],
    )
    obs = []
    for i in range(60):
        unit, value, days = [("kg N2O-N/ha", 1.0, ""), ("g N2O-N/ha/d", 10.0, 100), ("kg N2O/ha", 44 / 28, "")][i % 3]
        obs.append([f"P{i}", f"S{i // 6}", ("rice", "wheat")[i % 2], 2001, 120.0, "kg N/ha", value, unit, days, 950.0])
    w(
        raw / "own" / "obs.csv",
        ["Plot", "Site", "Crop", "Yr", "N", "N_unit", "Emission", "Emission_unit", "Days", "Water_total"],
        obs,
    )
    maps = {
        "obs": {
            "columns": {
                "obs_id": "Plot",
                "site_id": "Site",
                "crop": "Crop",
                "year": "Yr",
                "n_rate": "N",
                "n_rate_unit": "N_unit",
                "flux": "Emission",
                "flux_unit": "Emission_unit",
                "duration_days": "Days",
                "water_input_mm": "Water_total",
            }
        },
        "area": {"columns": {"county_code": "县代码", "year": "年份", "crop": "作物", "area": "面积"}},
        "n": {
            "columns": {"county_code": "code", "year": "yr", "crop": "crop_name", "n_rate": "N_kg_per_ha"},
            "constants": {"unit": "kg N/ha"},
        },
        "irr": {
            "columns": {
                "prefecture_code": "地市代码",
                "year": "年",
                "irrigated_fraction": "灌溉比例",
                "irrigation_mm": "灌溉量",
            }
        },
        "cov": {
            "columns": {
                "county_code": "code",
                "soil_ph": "pH",
                "soc_g_kg": "SOC",
                "clay_pct": "clay",
                "mean_temp_c": "T",
                "precip_mm": "P",
            }
        },
    }
    for name, m in maps.items():
        (raw / "own" / f"{name}.yaml").write_text(yaml.safe_dump(m, allow_unicode=True), encoding="utf-8")
    own = raw / "own"
    cfg = {
        "root": str(root),
        "processed_dir": str(root / "processed"),
        "inputs": {
            "observations": {"path": str(own / "obs.csv"), "mapping": str(own / "obs.yaml")},
            "sown_area": [
                {"path": str(own / "area_ha.csv"), "mapping": str(own / "area.yaml"), "unit": "ha"},
                {"path": str(own / "area_mu.csv"), "mapping": str(own / "area.yaml"), "unit": "mu"},
            ],
            "n_rate": {"path": str(own / "n.csv"), "mapping": str(own / "n.yaml")},
            "irrigation": {"path": str(own / "irr.csv"), "mapping": str(own / "irr.yaml")},
            "covariates": {"path": str(own / "cov.csv"), "mapping": str(own / "cov.yaml")},
            "boundaries": {"path": str(raw / "boundaries.gpkg")},
            "label": "SYNTHETIC foreign test dataset",
        },
        "ingest": {
            "first_year": 1995,
            "last_year": 1999,
            "defaults": {"climate": "dry"},
            "limits": {"max_n_rate_kg_ha": {"action": "warn"}},
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture()
def foreign(tmp_path: Path) -> Path:
    return _build(tmp_path)


def test_foreign_dataset_ingests_as_it_comes(foreign: Path, capsys) -> None:
    assert main(["--config", str(foreign), "-q", "ingest"]) == 0, capsys.readouterr().err
    out = foreign.parent / "processed" / "ingest"
    act = pd.read_parquet(out / "activity.parquet").set_index(["county_code", "year", "crop"])
    assert act.loc[(430101, 1995, "rice"), "area_ha"] == pytest.approx(1000.0)  # "15,000" mu / 15
    assert act.loc[(410101, 1995, "rice"), "area_ha"] == pytest.approx(1000.0)
    assert (act["climate"] == "dry").all() and np.allclose(act["irrigated_fraction"], 0.5)
    obs = pd.read_parquet(out / "observations.parquet")
    assert np.allclose(obs["flux_kg_n2o_n_ha"], 1.0)  # three units, one value
    assert np.allclose(obs["water_input_mm"], 950.0)  # total water input used as given
    report = pd.read_csv(out / "violations.csv")
    assert len(report) == 1
    r = report.iloc[0]
    assert r["file"].endswith("n.csv") and r["row"] == 5 and r["column"] == "N_kg_per_ha"
    assert r["value"] == 1800.0 and r["limit_value"] == 1500.0 and r["action"] == "warn"
    assert json.loads((out / "manifest.json").read_text())["unit_level"] == "county"


def test_same_limit_as_error_names_count_and_report(foreign: Path, capsys) -> None:
    code = main(["--config", str(foreign), "-q", "--set", "ingest.limits.max_n_rate_kg_ha.action=error", "ingest"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "n.csv, row 5, column 'N_kg_per_ha'" in err and "1 row(s)" in err and "violations.csv" in err
    assert not (foreign.parent / "processed" / "ingest" / "activity.parquet").exists()


def test_unknown_mapping_target_is_a_one_line_error(foreign: Path, capsys) -> None:
    m = foreign.parent / "raw" / "own" / "obs.yaml"
    doc = yaml.safe_load(m.read_text(encoding="utf-8"))
    doc["columns"]["total_water"] = "Water_total"
    m.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    code = main(["--config", str(foreign), "-q", "ingest"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "'total_water'" in err and "water_input_mm" in err


def test_default_from_a_missing_column_is_a_one_line_error(foreign: Path, capsys) -> None:
    m = foreign.parent / "raw" / "own" / "obs.yaml"
    doc = yaml.safe_load(m.read_text(encoding="utf-8"))
    doc["default_from"] = {"study_id": "Study"}
    m.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    code = main(["--config", str(foreign), "-q", "ingest"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1 and "column 'Study'" in err and "default_from" in err


def test_unknown_prefecture_in_irrigation_is_fatal(foreign: Path, capsys) -> None:
    p = foreign.parent / "raw" / "own" / "irr.csv"
    p.write_text(p.read_text(encoding="utf-8") + "4199,1995,0.5,200.0\n", encoding="utf-8")
    code = main(["--config", str(foreign), "-q", "ingest"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and "row 17" in err and "column '地市代码'" in err and "4199" in err


def test_mixed_model_covariance_with_tiny_asymmetric_entries_is_accepted() -> None:
    """Smallest eigenvalues 4e-8-2e-7 and entries near 1e-22 differing by rounding: valid."""
    cov = np.diag([4e-8, 1e-7, 2e-7, 1e-4])
    cov[0, 3] = cov[3, 0] = 1e-9
    cov[1, 2], cov[2, 1] = 1.0e-22, 1.3e-22  # rounding noise on an entry near 1e-22
    assert not np.allclose(cov, cov.T, rtol=1e-8, atol=0.0)
    m = CropModel.__new__(CropModel)
    m.crop, m.family, m.cov = "rice", "mixed_lognormal", cov
    _check_covariance(m)  # does not raise
    m.cov = cov.copy()
    m.cov[0, 1] += 1e-3  # a real asymmetry at the matrix scale
    with pytest.raises(ModelError, match="not symmetric"):
        _check_covariance(m)


def _tiny_eigen_cov() -> np.ndarray:
    """A valid mixed-model covariance as fits of this dataset give: smallest eigenvalues
    4e-8-2e-7 and an entry pair near 1e-22 that differs only by rounding."""
    cov = np.diag([4e-8, 1e-7, 2e-7, 1e-4])
    cov[0, 3] = cov[3, 0] = 1e-9
    cov[1, 2], cov[2, 1] = 1.0e-22, 1.3e-22
    return cov


def _write_fit(config: Path, cov: np.ndarray) -> None:
    """fit/model.json with the package's model classes and fit/manifest.json by the stage layer's
    own manifest writer (what ``StageRun.upstream("fit.model")`` in estimate checks)."""
    cfg = load_config(config)
    names = ["intercept", "n_rate_kg_ha", "soil_ph", "log_smearing"]
    models: dict[str, CropModel] = {
        crop: FittedModel(
            crop=crop,
            family="mixed_lognormal",
            terms=["n_rate_kg_ha", "soil_ph"],
            coef_names=names,
            coef=np.array([np.log(0.5), 0.004, 0.05, 0.1]),
            cov=cov,
            center={"soil_ph": 7.0},
            fill={"soil_ph": 7.0},
            retransform="lognormal",
            sigma2_group=0.2,
            sigma2_resid=0.3,
            n_records=30,
            n_groups=10,
        )
        for crop in ("rice", "wheat")
    }
    run = StageRun(cfg, "fit")
    model = io.write_json(InventoryModel(models, "fitted").to_json(), run.output("model"))
    run.finish([model])


def test_estimate_accepts_tiny_asymmetric_covariance_through_the_cli(foreign: Path, capsys) -> None:
    cov = _tiny_eigen_cov()
    assert not np.allclose(cov, cov.T, rtol=1e-8, atol=0.0)  # the old test refused it
    smallest = np.linalg.eigvalsh((cov + cov.T) / 2)[:3]
    assert np.allclose(smallest, [4e-8, 1e-7, 2e-7], rtol=1e-3)  # tiny, but positive
    assert main(["--config", str(foreign), "-q", "ingest"]) == 0, capsys.readouterr().err
    _write_fit(foreign, cov)
    code = main(["--config", str(foreign), "-q", "--set", "estimate.draws=50", "estimate"])
    assert code == 0, capsys.readouterr().err
    out = foreign.parent / "processed" / "estimate"
    assert (out / "manifest.json").exists()
    national = pd.read_csv(out / "national_total.csv")
    assert set(national["year"]) == set(YEARS) and (national.filter(like="n2o_n").to_numpy() > 0).all()


def test_estimate_refuses_a_non_psd_covariance_naming_the_test(foreign: Path, capsys) -> None:
    cov = np.diag([1e-4, 1e-4, 1e-4, 1e-4])
    cov[0, 1] = cov[1, 0] = 5e-4  # eigenvalue 1e-4 - 5e-4 < 0: not positive semi-definite
    assert main(["--config", str(foreign), "-q", "ingest"]) == 0, capsys.readouterr().err
    _write_fit(foreign, cov)
    code = main(["--config", str(foreign), "-q", "--set", "estimate.draws=50", "estimate"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "not positive semi-definite" in err and "crop rice" in err
    assert not (foreign.parent / "processed" / "estimate" / "manifest.json").exists()

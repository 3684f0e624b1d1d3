"""The console command: subcommands, exit codes, one-line errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.cli import STAGES, main
from pipeline.readers.boundaries import read_boundaries


def test_every_stage_module_has_run() -> None:
    import importlib

    for st in STAGES.values():
        assert callable(importlib.import_module(st.module).run)


def test_missing_config_is_one_line(capsys, tmp_path: Path) -> None:
    assert main(["--config", str(tmp_path / "none.yaml"), "ingest"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config file not found" in err


def test_stage_out_of_order(capsys, repo_root: Path, tmp_path: Path) -> None:
    code = main(
        ["--config", str(repo_root / "config" / "default.yaml"), "--set", f"processed_dir={tmp_path}", "estimate"]
    )
    assert code != 0 and "run `cropn2o ingest` first" in capsys.readouterr().err


def test_console_script_runs_without_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "cropn2o"
    r = subprocess.run([str(exe), "--config", str(tmp_path / "x.yaml"), "ingest"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("error: ")


def test_set_override_reaches_the_stage(repo_root: Path, tmp_path: Path) -> None:
    args = ["--config", str(repo_root / "config" / "default.yaml"), "--set", f"processed_dir={tmp_path}"]
    assert main([*args, "--set", "estimate.draws=50", "stamp"]) == 0
    assert '"draws": 50' in (tmp_path / ".stamps" / "estimate.json").read_text()


def test_bad_set_value_is_one_line(capsys, repo_root: Path) -> None:
    assert main(["--config", str(repo_root / "config" / "default.yaml"), "--set", "estimate.draws=[1", "stamp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid YAML" in err


def test_boundaries_writes_a_province_subset_without_a_config(capsys, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "units.gpkg"
    args = ["--config", str(tmp_path / "no_such.yaml"), "-q", "boundaries", "--out", str(out)]
    assert main([*args, "--level", "province", "--provinces", "11,12"]) == 0, capsys.readouterr().err
    gdf = read_boundaries(out)
    assert gdf["county_code"].tolist() == [110000, 120000]  # Beijing, Tianjin
    km2 = gdf.to_crs("ESRI:102025").area.to_numpy() / 1e6  # Albers equal-area, Asia
    assert np.allclose(km2, [16_410, 11_966], rtol=0.02)  # published areas of Beijing and Tianjin
    assert main([*args, "--level", "prefecture", "--provinces", "64"]) == 0
    assert read_boundaries(out)["county_code"].tolist() == [640100, 640200, 640300, 640400, 640500]
    assert list(tmp_path.glob("nested/*")) == [out]  # atomic: no temporary file left


def test_boundaries_unknown_province_is_one_line_and_writes_nothing(capsys, tmp_path: Path) -> None:
    out = tmp_path / "units.gpkg"
    code = main(["boundaries", "--level", "province", "--out", str(out), "--provinces", "11,99"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "province(s) 99" in err and not out.exists()

"""The console command: subcommands, exit codes, one-line errors."""

import subprocess
import sys
from pathlib import Path

from pipeline.cli import STAGES, main


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

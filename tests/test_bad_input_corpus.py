"""Malformed inputs run as a user would: one line naming file, row and column, non-zero exit,
no traceback, no manifest (nothing half-written)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from tests import mini_world


def _run(config: Path, capsys) -> tuple[int, str]:
    code = main(["--config", str(config), "-q", "ingest"])
    return code, capsys.readouterr().err.strip()


def _assert_one_line(code: int, err: str, config: Path) -> None:
    assert code != 0 and len(err.splitlines()) == 1 and "Traceback" not in err and "Fix:" in err
    assert not (config.parent / "processed" / "ingest" / "manifest.json").exists()


def test_semicolon_file_says_the_delimiter(tmp_path: Path, capsys) -> None:
    cfg = mini_world.build(tmp_path)
    p = tmp_path / "raw" / "n_rate.csv"
    p.write_text(p.read_text(encoding="utf-8").replace(",", ";"), encoding="utf-8")
    code, err = _run(cfg, capsys)
    _assert_one_line(code, err, cfg)
    assert "n_rate.csv, row 1" in err and "semicolons" in err


def test_zip_renamed_csv_says_what_it_is(tmp_path: Path, capsys) -> None:
    cfg = mini_world.build(tmp_path)
    p = tmp_path / "raw" / "irrigation.csv"
    data = p.read_bytes()
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("irrigation.csv", data)
    code, err = _run(cfg, capsys)
    _assert_one_line(code, err, cfg)
    assert "irrigation.csv" in err and "ZIP archive" in err and "encod" not in err


def test_observation_dated_in_the_future_is_quarantined(tmp_path: Path, capsys) -> None:
    cfg = mini_world.build(tmp_path)
    p = tmp_path / "raw" / "observations.csv"
    p.write_text(p.read_text(encoding="utf-8").replace("o003,S0,wheat,1995", "o003,S0,wheat,2099"), encoding="utf-8")
    code, err = _run(cfg, capsys)
    assert code == 0, err
    q = pd.read_csv(tmp_path / "processed" / "ingest" / "quarantine.csv")
    row = q[q["row"] == 5].iloc[0]
    assert row["column"] == "year" and "2099" in row["reason"] and "measurement window" in row["reason"]
    assert '"obs_id": "o003"' in row["record"] and '"year": "2099"' in row["record"]  # the row as read


@pytest.mark.parametrize(
    ("old", "new", "column", "words"),
    [
        ("410201,1995,rice,155.0,kg N/ha", "410201,1995,rice,-1.0,kg N/ha", "n_rate", "-1 is below the minimum 0"),
        ("410201,1995,rice,155.0,kg N/ha", "410201,1995,rice,lots,kg N/ha", "n_rate", "'lots' is not a valid float"),
        ("410201,1995,rice,155.0,kg N/ha", "410201,1995,rice,155.0,kg N/acre", "unit", "unknown N-rate unit"),
    ],
)
def test_bad_cells_name_file_row_and_column(
    tmp_path: Path, capsys, old: str, new: str, column: str, words: str
) -> None:
    cfg = mini_world.build(tmp_path)
    p = tmp_path / "raw" / "n_rate.csv"
    text = p.read_text(encoding="utf-8")
    assert old in text
    p.write_text(text.replace(old, new), encoding="utf-8")
    line = text.splitlines().index(old) + 1
    code, err = _run(cfg, capsys)
    _assert_one_line(code, err, cfg)
    assert f"n_rate.csv, row {line}, column '{column}'" in err and words in err
    assert "see `unit`" not in err


def test_thousands_separators_are_accepted(tmp_path: Path, capsys) -> None:
    cfg = mini_world.build(tmp_path)
    p = tmp_path / "raw" / "sown_area" / "43.csv"
    text = p.read_text(encoding="utf-8").replace("430102,庚,1990,rice,1000.0,ha", '430102,庚,1990,rice,"1,000.0",ha')
    p.write_text(text, encoding="utf-8")
    code, err = _run(cfg, capsys)
    assert code == 0, err
    act = pd.read_parquet(tmp_path / "processed" / "ingest" / "activity.parquet")
    sel = act[(act["county_code"] == 430102) & (act["year"] == 1990) & (act["crop"] == "rice")]
    assert sel["area_ha"].iloc[0] == pytest.approx(1000.0)

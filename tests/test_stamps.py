"""Stamps: a section's stamp changes only when that section does; the input-file stamp only
when an input file does."""

from pathlib import Path

from pipeline.config import load_config
from pipeline.stamps import SECTIONS, write_stamps
from tests import mini_world


def test_only_changed_sections_are_rewritten(repo_root: Path, tmp_path: Path) -> None:
    cfg = load_config(repo_root / "config" / "default.yaml", {"processed_dir": str(tmp_path)})
    assert len(write_stamps(cfg)) == len(SECTIONS) + 1
    assert write_stamps(cfg) == []
    changed = load_config(repo_root / "config" / "default.yaml", {"processed_dir": str(tmp_path), "estimate.draws": 50})
    assert write_stamps(changed) == [tmp_path / ".stamps" / "estimate.json"]


def test_input_file_stamp_follows_file_contents(tmp_path: Path) -> None:
    cfg = load_config(mini_world.build(tmp_path))
    write_stamps(cfg)
    stamp = cfg.processed / ".stamps" / "input_files.json"
    assert "raw/sown_area/41.csv" in stamp.read_text()
    assert write_stamps(cfg) == []
    (tmp_path / "raw" / "sown_area" / "44.csv").write_text("county_code,year,crop,area,unit\n")
    assert write_stamps(cfg) == [stamp] and "raw/sown_area/44.csv" in stamp.read_text()
    (tmp_path / "raw" / "irrigation.csv").write_text("changed\n")
    assert write_stamps(cfg) == [stamp]


def test_input_file_stamp_sees_edgar_zips_in_a_folder(tmp_path: Path) -> None:
    """A folder of EDGAR downloads (zips, not tables) is hashed, so new or changed files rerun compare."""
    edgar = tmp_path / "raw" / "edgar"
    edgar.mkdir(parents=True)
    (edgar / "v8.0_FT2022_GHG_N2O_2000_AGS_emi_nc.zip").write_bytes(b"zip one")
    cfg = load_config(mini_world.build(tmp_path), {"inputs.edgar": {"path": str(edgar)}})
    write_stamps(cfg)
    stamp = cfg.processed / ".stamps" / "input_files.json"
    assert "v8.0_FT2022_GHG_N2O_2000_AGS_emi_nc.zip" in stamp.read_text()
    (edgar / "v8.0_FT2022_GHG_N2O_2001_AGS_emi_nc.zip").write_bytes(b"zip two")
    assert write_stamps(cfg) == [stamp] and "2001_AGS_emi_nc.zip" in stamp.read_text()

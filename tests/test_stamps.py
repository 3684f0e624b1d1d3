"""Config stamps: a section's stamp changes only when that section does."""

from pathlib import Path

from pipeline.config import load_config
from pipeline.stamps import SECTIONS, write_stamps


def test_only_changed_sections_are_rewritten(repo_root: Path, tmp_path: Path) -> None:
    cfg = load_config(repo_root / "config" / "default.yaml", {"processed_dir": str(tmp_path)})
    assert len(write_stamps(cfg)) == len(SECTIONS)
    assert write_stamps(cfg) == []
    changed = load_config(repo_root / "config" / "default.yaml", {"processed_dir": str(tmp_path), "estimate.draws": 50})
    assert write_stamps(changed) == [tmp_path / ".stamps" / "estimate.json"]

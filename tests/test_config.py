"""Config loading: strict keys and types, clear one-line errors."""

from pathlib import Path

import pytest

from pipeline.config import load_config, project_root_of
from pipeline.errors import ConfigError


def test_default_config_loads(repo_root: Path) -> None:
    cfg = load_config(repo_root / "config" / "default.yaml")
    assert cfg.root == repo_root and cfg.processed == repo_root / "data_processed"
    assert project_root_of(repo_root / "config" / "examples" / "kensyn.yaml") == repo_root


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("inputs: {}\nbogus: 1\n", "unknown key 'bogus'"),
        ("inputs: {}\n", "required key 'inputs.observations' is missing"),
        ("inputs: [1\n", "not valid YAML"),
    ],
)
def test_bad_config_messages(tmp_path: Path, text: str, fragment: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert fragment in str(e.value) and "\n" not in str(e.value) and "Fix:" in str(e.value)


def test_wrong_type_is_named(repo_root: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(repo_root / "config" / "default.yaml", {"estimate.draws": "many"})
    assert "estimate.draws" in str(e.value)


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ({"demo.seed.x": 1}, "is a value, not a section"),
    ],
)
def test_bad_override(repo_root: Path, overrides, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(repo_root / "config" / "default.yaml", overrides)


def test_config_folder_and_bad_mapping(tmp_path: Path, repo_root: Path) -> None:
    from pipeline.config import load_mapping

    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path)
    bad = tmp_path / "m.yaml"
    for text, fragment in (("- a\n- b\n", "must be a mapping"), ("columns: [\n", "not valid YAML")):
        bad.write_text(text)
        cfg = load_config(repo_root / "config" / "default.yaml", {"inputs.observations.mapping": str(bad)})
        with pytest.raises(ConfigError, match=fragment):
            load_mapping(cfg, cfg.inputs.observations)


def test_every_key_is_documented(repo_root: Path) -> None:
    from pipeline.config import config_keys

    doc = (repo_root / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [key for key, _, _ in config_keys() if f"`{key}`" not in doc]
    assert not missing, f"docs/configuration.md lacks {missing}"

"""Shared fixtures. Real reference data lives outside the repo (../shared/data by default)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline import demo
from pipeline.config import load_config
from pipeline.stages.context import VOLATILE_KEYS

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Folder of the real reference data: $CROPN2O_SHARED_DATA or ../shared/data."""
    return Path(os.environ.get("CROPN2O_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real reference data folder; skips the test when it is absent."""
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"real reference data not found at {d} (set CROPN2O_SHARED_DATA)")
    return d


def reproducible_bytes(path: Path) -> bytes:
    """A file's bytes, with the manifest keys that change by design (wall times) removed.

    Every output must be byte-identical on rerun; a manifest's ``timings`` are the one
    documented exception (pipeline.stages.context.VOLATILE_KEYS)."""
    data = path.read_bytes()
    if path.name != "manifest.json":
        return data
    doc = json.loads(data)
    for key in VOLATILE_KEYS:
        doc.pop(key, None)
    return json.dumps(doc, sort_keys=True).encode()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def demo_input_overrides(raw: Path) -> dict[str, str]:
    """Config overrides pointing every demo input of the default config into ``raw``."""
    return demo.relocated_inputs(load_config(REPO / "config" / "default.yaml"), raw)


DEMO_SLICE_PROVINCES = [41, 43]  # Henan (kg N/mu, UTF-8) and Hunan (kg N/ha, GBK)


@pytest.fixture(scope="session")
def demo_slice(tmp_path_factory):
    """A small SYNTHETIC demo world (Henan + Hunan, 1990-1995) built once per test session.

    Returns the :class:`pipeline.config.Config` whose ``inputs.*`` and ``processed_dir`` point
    into a temporary folder; the generator's ground truth is under ``<raw>/truth/``.
    """
    root = tmp_path_factory.mktemp("demo_slice")
    raw = root / "raw"
    overrides = demo_input_overrides(raw)
    overrides.update(
        {
            "processed_dir": str(root / "processed"),
            "demo.provinces": DEMO_SLICE_PROVINCES,
            "demo.first_year": 1990,
            "demo.last_year": 1995,
        }
    )
    cfg = load_config(REPO / "config" / "default.yaml", overrides)
    demo.run(cfg)
    return cfg

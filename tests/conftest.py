"""Shared fixtures. Real reference data lives outside the repo (../shared/data by default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO

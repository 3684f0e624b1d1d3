"""Every notebook in notebooks/ (jupytext percent-format .py, the source of truth) executes top to
bottom with nbclient on a small SYNTHETIC demo run, reading its outputs through CROPN2O_PROCESSED."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.conftest import REPO, demo_input_overrides

jupytext = pytest.importorskip("jupytext", reason="pip install jupytext nbclient ipykernel")
nbclient = pytest.importorskip("nbclient", reason="pip install jupytext nbclient ipykernel")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))
STAGES = ["ingest", "fit", "estimate", "trend"]
pytestmark = pytest.mark.xdist_group("notebook_run")  # one demo run per worker with --dist loadgroup


@pytest.fixture(scope="module")
def processed(demo_slice, tmp_path_factory) -> Path:
    raw = demo_slice.path(demo_slice.inputs.boundaries.path).parent
    out = tmp_path_factory.mktemp("notebook_run") / "processed"
    args = ["--config", str(REPO / "config" / "default.yaml"), "-q"]
    for key, value in demo_input_overrides(raw).items():
        args += ["--set", f"{key}={value}"]
    args += [
        "--set",
        f"processed_dir={out}",
        "--set",
        "ingest.first_year=1990",
        "--set",
        "ingest.last_year=1995",
        "--set",
        "estimate.draws=20",
        "--set",
        "fit.cv_folds=2",
        "--set",
        "fit.ef_curve_draws=20",
        "--set",
        "fit.model=single_family",
        "--set",
        "trend.n_sim=199",
        "--set",
        "trend.max_breaks=1",
        "--set",
        "trend.min_segment_years=2",
    ]
    for stage in STAGES:
        assert main([*args, stage]) == 0, stage
    return out


def test_there_are_notebooks_and_they_are_paired() -> None:
    assert len(NOTEBOOKS) >= 4
    for path in NOTEBOOKS:
        text = path.read_text(encoding="utf-8")
        assert "format_name: percent" in text and "formats: ipynb,py:percent" in text, path.name
        assert "from pipeline" in text, f"{path.name} does not use the package"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, processed: Path, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CROPN2O_PROCESSED", str(processed))
    monkeypatch.setenv("CROPN2O_ROOT", str(REPO))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") in ("display_data", "execute_result") for o in outputs), "nothing shown"

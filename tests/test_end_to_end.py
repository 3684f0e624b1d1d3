"""Every stage, through the console command, on a slice of the SYNTHETIC demo world
(Henan + Hunan, 1995-2010), then a second run that must be byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from tests.conftest import REPO, demo_input_overrides, reproducible_bytes

STAGES = ["demo-data", "ingest", "fit", "estimate", "grid", "trend"]


@pytest.fixture(scope="module")
def slice_run(tmp_path_factory) -> tuple[list[str], Path]:
    root = tmp_path_factory.mktemp("e2e")
    raw = root / "raw"
    args = ["--config", str(REPO / "config" / "default.yaml"), "-q"]
    for key, value in demo_input_overrides(raw).items():
        args += ["--set", f"{key}={value}"]
    args += [
        "--set",
        f"processed_dir={root / 'processed'}",
        "--set",
        "demo.provinces=[41, 43]",
        "--set",
        "demo.first_year=1995",
        "--set",
        "demo.last_year=2010",
        "--set",
        "ingest.first_year=1995",
        "--set",
        "ingest.last_year=2010",
        "--set",
        "estimate.draws=200",
        "--set",
        "fit.cv_folds=3",
        "--set",
        "grid.grids=[{name: 0p1deg, resolution_deg: 0.1}]",
    ]
    for stage in STAGES:
        assert main([*args, stage]) == 0, stage
    return args, root


def test_every_stage_writes_its_manifest(slice_run) -> None:
    _, root = slice_run
    for stage in ["ingest", "fit", "estimate", "estimate_tier1", "grid", "trend"]:
        folder = root / "processed" / stage
        manifest = json.loads((folder / "manifest.json").read_text())
        outputs = manifest["outputs"]
        assert outputs, stage  # every stage writes files, so its manifest lists them
        for name, digest in outputs.items():
            # each listed output exists and its recorded SHA-256 is that of the file now
            assert digest == hashlib.sha256((folder / name).read_bytes()).hexdigest(), (stage, name)
        # and every file of the folder (but the manifest and the grid's reusable weights cache,
        # grid/weights/<hash>.npz, which is keyed by its inputs and not a result) is listed
        on_disk = {
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file()
            and p.name != "manifest.json"
            and ".stamps" not in p.parts
            and not (stage == "grid" and p.relative_to(folder).parts[0] == "weights")
        }
        assert on_disk <= set(outputs), (stage, sorted(on_disk - set(outputs)))
    assert json.loads((root / "raw" / "MANIFEST.json").read_text())["synthetic"] is True


def test_totals_are_consistent_across_stages(slice_run) -> None:
    _, root = slice_run
    county = pd.read_parquet(root / "processed" / "estimate" / "county.parquet")
    national = pd.read_csv(root / "processed" / "estimate" / "national_total.csv")  # all crops
    nat = national.set_index("year")["n2o_n_kg_mean"]
    by_crop = pd.read_csv(root / "processed" / "estimate" / "national.csv")
    assert "all" not in set(by_crop["crop"])  # no table mixes totals with per-crop rows
    assert (by_crop.groupby("year")["n2o_n_kg_mean"].sum() - nat).abs().max() <= 1e-9 * nat.max()
    assert (county.groupby("year")["n2o_n_kg_mean"].sum() - nat).abs().max() <= 1e-9 * nat.max()
    assert set(county["county_code"] // 10_000) == {41, 43}
    tier1 = pd.read_csv(root / "processed" / "estimate_tier1" / "national.csv")
    assert (tier1["n2o_n_kg_mean"] > 0).all()


def test_rerun_is_byte_identical(slice_run) -> None:
    args, root = slice_run
    processed = root / "processed"
    before = {
        p.relative_to(processed): reproducible_bytes(p)
        for p in processed.rglob("*")
        if p.is_file() and ".stamps" not in p.parts
    }
    shutil.rmtree(processed)
    # A fresh process with another hash seed: set or dict ordering must not reach any output.
    exe = Path(sys.executable).parent / "cropn2o"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    for stage in STAGES[1:]:
        r = subprocess.run([str(exe), *args, stage], capture_output=True, text=True, env=env)
        assert r.returncode == 0, (stage, r.stderr[-2000:])
    after = {
        p.relative_to(processed): reproducible_bytes(p)
        for p in processed.rglob("*")
        if p.is_file() and ".stamps" not in p.parts
    }
    assert sorted(after) == sorted(before)
    changed = [str(k) for k in before if before[k] != after[k]]
    assert not changed, changed

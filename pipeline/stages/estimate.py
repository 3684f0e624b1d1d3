"""The ESTIMATE stage: unit x crop x year emissions with Monte Carlo intervals.

Reads ``ingest.activity`` and ``fit.model``; the Monte Carlo design (IPCC Approach 2) is in
:mod:`pipeline.methods.montecarlo` and docs/estimate.md. Writes ``estimate/`` (fitted model) and
``estimate_tier1/`` (IPCC Tier 1 on the same activity data), each with its manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import io
from pipeline.config import Config
from pipeline.methods.montecarlo import add_derived, estimate, order_table
from pipeline.parallel import dask_context
from pipeline.stages.context import StageRun, inventory_model

log = logging.getLogger(__name__)


def run(cfg: Config) -> list[Path]:
    """Estimate with the fitted model (``estimate/``) and with IPCC Tier 1 (``estimate_tier1/``)."""
    folders = {"fitted": "estimate", "tier1": "estimate_tier1"}
    # Every run's manifest goes at the end, the fitted one (the Makefile's target) last: a run
    # that fails leaves no manifest that could pass stale tables of another run as current.
    stage = StageRun(cfg, "estimate", folders=[folders[k] for k in cfg.estimate.runs])
    activity_path = stage.upstream("ingest.activity")
    activity = io.read_parquet(activity_path)
    written: list[Path] = []
    manifests: dict[str, tuple[list[Path], dict]] = {}
    for kind in cfg.estimate.runs:
        model = inventory_model(stage, kind)
        with dask_context(cfg.dask):
            tables = estimate(activity, model, cfg.estimate, cfg.ipcc.edition)
        county = add_derived(tables["county"], cfg.estimate.gwp)
        province = order_table(add_derived(tables["province"], cfg.estimate.gwp), ["province_code"])
        national = order_table(add_derived(tables["national"], cfg.estimate.gwp), [])
        out = stage.output
        files = [
            io.write_parquet(county, out(f"{kind}_county")),
            io.write_parquet(province, out(f"{kind}_province")),
            io.write_csv(province, out(f"{kind}_province_csv")),
            io.write_csv(national, out(f"{kind}_national_csv")),
            io.write_parquet(national, out(f"{kind}_national")),
            io.write_parquet(tables["national_draws"], out(f"{kind}_national_draws")),
        ]
        manifests[kind] = (files, {
            "model": kind,
            "units": "kg N2O-N per year (n2o_n_kg_*); kg N2O; kg CO2e",
            "background": cfg.estimate.background,
            "emission_columns": ("fertilizer-induced direct N2O-N (background in background_n2o_n_kg_mean)"
                                 if cfg.estimate.background == "separate" else "direct N2O-N including background")
            + (" + indirect N2O-N" if cfg.estimate.indirect else ""),
            "model_provenance": model.provenance,
        })
        written += files
        nat = national[national["crop"] == "all"]
        log.info("%s: national %d %.1f Gg N2O-N (95%% %.1f-%.1f), %d %.1f Gg", kind,
                 nat["year"].iloc[0], nat["n2o_n_kg_mean"].iloc[0] / 1e6, nat["n2o_n_kg_p2_5"].iloc[0] / 1e6,
                 nat["n2o_n_kg_p97_5"].iloc[0] / 1e6, nat["year"].iloc[-1], nat["n2o_n_kg_mean"].iloc[-1] / 1e6)
    inputs = list(stage.inputs)
    for kind in sorted(manifests, key=lambda k: k == "fitted"):
        files, extra = manifests[kind]
        # the Tier 1 run does not read the fitted model: its manifest lists only what it read
        stage.inputs = inputs if kind == "fitted" else [activity_path]
        written.append(stage.finish(files, extra, folder=folders[kind])[-1])
    return written

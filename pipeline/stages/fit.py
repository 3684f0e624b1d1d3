"""The FIT stage: emission-factor models by crop class, and the IPCC Tier 1 baseline.

Reads ``ingest.observations``; the methods are in :mod:`pipeline.methods.fitting` and
:mod:`pipeline.methods.response_forms` (science and rules in ``docs/fit.md``), the figures in
:mod:`pipeline.plots.fit`. Writes ``fit/``: model.json, tier1_model.json, coefficients,
covariance, diagnostics, cv_predictions, quarantine, ef_curves (CSV and PNG), response_forms.json
(candidate forms, design, CV scores, weights and the model average per crop), form_cv.csv,
paired_ef (CSV and PNG: EF from paired zero-N controls) and manifest.json (last).
"""

from __future__ import annotations

from pathlib import Path

import statsmodels

from pipeline import io
from pipeline.config import Config
from pipeline.methods.fitting import ef_curves, fit_all
from pipeline.methods.models import tier1_model
from pipeline.parallel import dask_context
from pipeline.plots.fit import ef_figure, paired_ef_figure
from pipeline.stages.context import StageRun


def run(cfg: Config) -> list[Path]:
    """Fit every configured crop, cross-validate, weight the forms; write ``fit/``."""
    stage = StageRun(cfg, "fit")
    src = stage.upstream("ingest.observations")
    obs = io.read_parquet(src)
    with dask_context(cfg.dask):
        fitted, tables = fit_all(obs, cfg.fit, source=str(src))
    fitted.provenance["inputs_sha256"] = {src.name: io.file_sha256(src)}
    fitted.provenance["statsmodels"] = statsmodels.__version__
    tier1 = tier1_model(cfg.ipcc.edition, cfg.ipcc.disaggregated, cfg.fit.rice_water_regime)
    curves = ef_curves(fitted, tier1, cfg.fit)
    label = cfg.inputs.label
    written = [
        io.write_json(fitted.to_json(), stage.output("model")),
        io.write_json(tier1.to_json(), stage.output("tier1_model")),
        *(
            io.write_csv(tables[name], stage.output(name))
            for name in ("coefficients", "covariance", "diagnostics", "cv_predictions", "quarantine")
        ),
        io.write_csv(curves, stage.output("ef_curves")),
        io.write_png(ef_figure(curves), stage.output("ef_curves_png"), label),
        io.write_json(
            {"model": cfg.fit.model, "weighting": cfg.fit.form_weighting, "crops": tables["response_forms"]},
            stage.output("response_forms"),
        ),
        io.write_csv(tables["form_cv"], stage.output("form_cv")),
        io.write_csv(tables["paired_ef"], stage.output("paired_ef")),
        io.write_png(paired_ef_figure(tables["paired_ef"], curves), stage.output("paired_ef_png"), label),
    ]
    return stage.finish(
        written, {"model": cfg.fit.model, "measurement_period": fitted.provenance.get("measurement_period", "")}
    )

"""Trend stage against the SYNTHETIC demo world's truth (issue check).

"On the demo world the national break and slopes match the generator's truth within their
intervals; the LMDI terms sum to the total change."

The whole demo world (all mainland provinces, 1990-2014) is generated and run through the
console command (demo-data -> ingest -> fit -> estimate -> trend). Its TRUE fertilizer-induced
national series is the sum of ``truth/truth_county.parquet`` and carries the designed kink at
``demo.break_year``. The pipeline never reads the truth; only this test does. A two-province
slice was tried first: with ~20 sites per crop its fitted models are 1.05-1.5 x the truth per
crop, which moves the slopes for reasons that belong to the fit, not to the trend stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import demo, io
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.methods.models import InventoryModel
from pipeline.methods.montecarlo import expected_emissions
from tests.conftest import REPO, demo_input_overrides

STAGES = ["demo-data", "ingest", "fit", "estimate", "trend"]


@pytest.fixture(scope="module")
def demo_trend(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("trend_demo")
    raw = root / "raw"
    overrides = demo_input_overrides(raw)
    overrides.update(
        {
            "processed_dir": str(root / "processed"),
            "demo.first_year": 1990,
            "demo.last_year": 2014,
            "ingest.first_year": 1990,
            "ingest.last_year": 2014,
            "estimate.draws": 200,
            "fit.cv_folds": 3,
            "trend.n_sim": 999,
        }
    )
    args = ["--config", str(REPO / "config" / "default.yaml"), "-q"]
    for k, v in overrides.items():
        args += ["--set", f"{k}={json.dumps(v) if isinstance(v, list) else v}"]
    for stage in STAGES:
        assert main([*args, stage]) == 0, stage
    cfg = load_config(REPO / "config" / "default.yaml", overrides)
    return root, {"cfg": cfg, "raw": raw, "trend": root / "processed" / "trend"}


def _slice_truth(raw: Path, break_year: int) -> tuple[pd.Series, dict]:
    county = pd.read_parquet(raw / "truth" / "truth_county.parquet")
    fert = county.groupby("year")["fert_induced_kg_n2o_n"].sum()
    return fert, demo.national_break_truth(fert.index.to_numpy(), fert.to_numpy(), break_year)


def test_national_break_interval_contains_true_break(demo_trend):
    _, d = demo_trend
    res = json.loads((d["trend"] / "breaks.json").read_text())
    design = d["cfg"].demo.break_year
    _, truth = _slice_truth(d["raw"], design)
    sc = res["national"]["slope_change"]
    assert sc["significant"], sc["conclusion"]
    assert res["break_used"]["note"].startswith("significant")
    psi = res["break_used"]["psi"]
    main_break = next(b for b in sc["breaks"] if b["break_year"] == psi)
    lo, hi = main_break["ci_low"], main_break["ci_high"]
    for true_break in (design, truth["least_squares"]["break_year"]):
        assert lo <= true_break <= hi, (true_break, lo, hi)
    assert res["break_used"]["break_year_last_of_old_regime"] in (design - 1, design, design + 1)


def test_slopes_match_truth_within_their_intervals(demo_trend):
    """The inventory's slope intervals before and after the break contain the true slopes.

    The true slopes come from a continuous kinked least-squares fit to the TRUE series. The
    intervals compared are those over the Monte Carlo draws (each draw's slopes around its own
    kink): they carry the fitted models' parameter uncertainty, which is what separates the
    estimated series from the truth. The single-series intervals only see the year-to-year
    scatter and are reported beside them (docs/validation.md).
    """
    _, d = demo_trend
    res = json.loads((d["trend"] / "breaks.json").read_text())
    sc = res["national"]["slope_change"]
    fert, truth = _slice_truth(d["raw"], d["cfg"].demo.break_year)
    ls = truth["least_squares"]
    over_draws = res["national"]["break_year_over_draws"]
    assert over_draws["ci_low"] <= ls["break_year"] <= over_draws["ci_high"]
    for name, key in (("slope_before", "slope_before_kg_yr2"), ("slope_after", "slope_after_kg_yr2")):
        interval = over_draws["slopes_per_year"][name]
        print(
            f"{name}: truth {ls[key] / 1e6:.2f} Gg/yr, draws {interval['median'] / 1e6:.2f} "
            f"({interval['ci_low'] / 1e6:.2f}-{interval['ci_high'] / 1e6:.2f})"
        )
        assert interval["ci_low"] <= ls[key] <= interval["ci_high"], (name, interval, ls)
    psi = res["break_used"]["psi"]
    i = [b["break_year"] for b in sc["breaks"]].index(psi)
    assert sc["slopes"][i + 1]["slope_per_year"] < 0.5 * sc["slopes"][i]["slope_per_year"]
    # The level at the break: the true national total of the break year lies inside the
    # inventory's 95 % Monte Carlo interval of that year (replaces a "within 0.8-1.3 x" check).
    series = pd.read_csv(d["trend"] / "series.csv")
    nat = series[(series["model"] == "fitted") & (series["scope"] == "national")].set_index("year")
    y0 = int(np.floor(psi))
    assert nat.loc[y0, "n2o_n_kg_p2_5"] <= fert.loc[y0] <= nat.loc[y0, "n2o_n_kg_p97_5"], (
        y0,
        fert.loc[y0],
        nat.loc[y0, ["n2o_n_kg_p2_5", "n2o_n_kg_p97_5"]].to_dict(),
    )


def test_lmdi_terms_sum_to_total_change(demo_trend):
    _, d = demo_trend
    cfg = d["cfg"]
    yearly = pd.read_csv(d["trend"] / "attribution_yearly.csv")
    effects = yearly[["area", "crop_mix", "location", "n_rate", "environment"]].sum(axis=1)
    scale = yearly["total"].abs().max()
    np.testing.assert_allclose(effects, yearly["total"], rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(
        yearly["n_rate_proportional"] + yearly["n_rate_ef_response"], yearly["n_rate"], rtol=0, atol=1e-9 * scale
    )
    # The yearly totals are the changes of the fitted model's point estimate on the activity table.
    act = io.read_parquet(cfg.processed / "ingest" / "activity.parquet")
    model = InventoryModel.from_json(io.read_json(cfg.processed / "fit" / "model.json"))
    e = pd.Series(expected_emissions(act, model, cfg.estimate.background), index=act.index).groupby(act["year"]).sum()
    np.testing.assert_allclose(yearly["total"].to_numpy(), np.diff(e.to_numpy()), rtol=1e-9, atol=1e-9 * scale)
    periods = pd.read_csv(d["trend"] / "attribution_periods.csv").set_index("period")
    np.testing.assert_allclose(periods.loc["all", "total"], e.iloc[-1] - e.iloc[0], rtol=1e-9)
    np.testing.assert_allclose(
        periods.loc["before", "total"] + periods.loc["after", "total"], periods.loc["all", "total"], rtol=1e-9
    )
    # The generator's design: falling cereal N rates after the break shrink the N-rate effect.
    assert periods.loc["after", "n_rate"] < periods.loc["before", "n_rate"]

# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The emission-factor model: diagnostics and partial effects
#
# Reads the fit stage's outputs (`fit/model.json`, `diagnostics.csv`, `cv_predictions.csv`) and
# the activity table, then shows, per crop, cross-validated predictions against observations
# and the partial effect of each covariate on the emission at the crop's median N rate (other
# covariates held at their area-weighted medians). Set `CROPN2O_PROCESSED` to read another run.

# %% tags=["parameters"]
import os
from pathlib import Path

from pipeline.config import load_config

ROOT = Path(os.environ.get("CROPN2O_ROOT", Path.cwd() if (Path.cwd() / "config").is_dir() else Path.cwd().parent))
CONFIG = Path(os.environ.get("CROPN2O_CONFIG", ROOT / "config" / "default.yaml"))
PROCESSED = (
    Path(os.environ["CROPN2O_PROCESSED"]) if "CROPN2O_PROCESSED" in os.environ else load_config(CONFIG).processed
)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline import io
from pipeline.methods.models import InventoryModel
from pipeline.plots import style
from pipeline.plots.coverage import weighted_quantiles

label = io.read_json(PROCESSED / "fit" / "manifest.json")["label"]
model = InventoryModel.from_json(io.read_json(PROCESSED / "fit" / "model.json"))
diagnostics = pd.read_csv(PROCESSED / "fit" / "diagnostics.csv")
cv = pd.read_csv(PROCESSED / "fit" / "cv_predictions.csv")
activity = io.read_parquet(PROCESSED / "ingest" / "activity.parquet")
print(label)
diagnostics[["crop", "family", "chosen", "n_records", "n_sites", "r2_insample", "cv_rmse_kg_ha", "cv_bias_kg_ha"]]

# %% Cross-validated prediction vs observation (chosen form per crop)
chosen = diagnostics.loc[diagnostics["chosen"].astype(str).str.lower() == "true", ["crop", "family"]]
cvc = cv.merge(chosen, on=["crop", "family"])
crops = sorted(cvc["crop"].unique())
fig, axes = plt.subplots(1, len(crops), figsize=(2.4 * len(crops), 2.6), layout="constrained", squeeze=False)
for ax, crop in zip(axes[0], crops):
    g = cvc[cvc["crop"] == crop]
    ax.loglog(
        g["observed_kg_ha"].clip(lower=1e-3),
        g["predicted_kg_ha"].clip(lower=1e-3),
        "o",
        ms=3,
        color=style.PALETTE[0],
        alpha=0.6,
    )
    lim = [1e-2, max(g["observed_kg_ha"].max(), g["predicted_kg_ha"].max()) * 1.5]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_title(crop)
    ax.set_xlabel("observed (kg N2O-N/ha)")
axes[0, 0].set_ylabel("CV predicted (kg N2O-N/ha)")


# %% Partial effects at the median N rate
def reference_rows(crop: str, n: int = 25) -> pd.DataFrame:
    """`n` copies of the crop's area-weighted median activity row."""
    a = activity[activity["crop"] == crop]
    row = a.iloc[[int(np.argmin(np.abs(a["n_rate_kg_ha"] - a["n_rate_kg_ha"].median())))]].copy()
    for col in a.select_dtypes("number").columns:
        if col not in ("county_code", "prefecture_code", "province_code", "year"):
            row[col] = weighted_quantiles(a[col].to_numpy(float), a["area_ha"].to_numpy(float), np.array([0.5]))[0]
    return pd.concat([row] * n, ignore_index=True)


covariates = [
    c
    for c in ("n_rate_kg_ha", "water_input_mm", "mean_temp_c", "soil_ph", "soc_g_kg", "clay_pct")
    if c in activity.columns
]
effects = []
for crop in sorted(activity["crop"].unique()):
    a = activity[activity["crop"] == crop]
    for cov in covariates:
        X = reference_rows(crop)
        X[cov] = np.linspace(a[cov].quantile(0.05), a[cov].quantile(0.95), len(X))
        effects.append(
            pd.DataFrame({"crop": crop, "covariate": cov, "value": X[cov], "e_kg_ha": model.mean_emission(X)})
        )
effects = pd.concat(effects, ignore_index=True)
fig, axes = plt.subplots(1, len(covariates), figsize=(2.3 * len(covariates), 2.6), layout="constrained")
for ax, cov in zip(np.atleast_1d(axes), covariates):
    for i, (crop, g) in enumerate(effects[effects["covariate"] == cov].groupby("crop")):
        ax.plot(
            g["value"],
            g["e_kg_ha"],
            color=style.PALETTE[i % len(style.PALETTE)],
            linestyle=style.LINESTYLES[i % len(style.LINESTYLES)],
            label=crop,
        )
    ax.set_xlabel(cov)
np.atleast_1d(axes)[0].set_ylabel("E (kg N2O-N/ha)")
np.atleast_1d(axes)[0].legend(fontsize=6)
assert np.isfinite(effects["e_kg_ha"]).all() and (effects["e_kg_ha"] > 0).all()

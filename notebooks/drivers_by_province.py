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
# # Drivers by province and period: N rate, sown area, irrigation
#
# Reads `ingest/activity.parquet` (and the break year from `trend/breaks.json` when the trend
# stage has run) and compares, per province, the area-weighted N rate, the sown area and the
# irrigated share before and after the break. The `.py` file is the source (jupytext percent
# format); `jupytext --to ipynb notebooks/drivers_by_province.py` makes the notebook.
# Set `CROPN2O_PROCESSED` to read another run's outputs (the tests do).

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
from pipeline.plots import style

label = io.read_json(PROCESSED / "ingest" / "manifest.json")["label"]
activity = io.read_parquet(PROCESSED / "ingest" / "activity.parquet")
breaks = PROCESSED / "trend" / "breaks.json"
years = sorted(activity["year"].unique())
if breaks.exists() and (PROCESSED / "trend" / "manifest.json").exists():
    break_year = int(io.read_json(breaks)["break_used"]["break_year_last_of_old_regime"])
else:
    break_year = int(years[len(years) // 2])
print(label, "| years", years[0], "-", years[-1], "| break (last year of the old regime):", break_year)

# %% Province x year drivers (N rate weighted by sown area)
act = activity.assign(
    n_kg=activity["n_rate_kg_ha"] * activity["area_ha"],
    irrigated_ha=activity["irrigated_fraction"] * activity["area_ha"],
)
prov = act.groupby(["province_code", "year"], as_index=False)[["area_ha", "n_kg", "irrigated_ha"]].sum()
prov["n_rate_kg_ha"] = prov["n_kg"] / prov["area_ha"]
prov["irrigated_share"] = prov["irrigated_ha"] / prov["area_ha"]
prov["period"] = np.where(prov["year"] <= break_year, "before", "after")
prov.head()

# %% Period means per province
periods = (
    prov.groupby(["province_code", "period"])[["n_rate_kg_ha", "area_ha", "irrigated_share"]].mean().unstack("period")
)
periods


# %% Annual change of each driver, before vs after the break (per province)
def slope(g: pd.DataFrame, col: str) -> float:
    return float(np.polyfit(g["year"], g[col], 1)[0]) if g["year"].nunique() >= 2 else np.nan


rows = []
for (code, period), g in prov.groupby(["province_code", "period"]):
    rows.append(
        {
            "province_code": code,
            "period": period,
            "n_rate_kg_ha_per_yr": slope(g, "n_rate_kg_ha"),
            "area_pct_per_yr": 100 * slope(g, "area_ha") / g["area_ha"].mean(),
            "irrigated_share_pp_per_yr": 100 * slope(g, "irrigated_share"),
        }
    )
trends = pd.DataFrame(rows)
trends

# %% Plot: the three drivers per province through time
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), layout="constrained")
for i, (code, g) in enumerate(prov.groupby("province_code")):
    kw = {
        "color": style.PALETTE[i % len(style.PALETTE)],
        "linestyle": style.LINESTYLES[i % len(style.LINESTYLES)],
        "label": str(code),
    }
    axes[0].plot(g["year"], g["n_rate_kg_ha"], **kw)
    axes[1].plot(g["year"], g["area_ha"] / 1e6, **kw)
    axes[2].plot(g["year"], 100 * g["irrigated_share"], **kw)
for ax, ylab in zip(axes, ["N rate (kg N/ha, area-weighted)", "sown area (Mha)", "irrigated share (%)"]):
    ax.axvline(break_year, color="0.5", lw=0.8)
    ax.set_ylabel(ylab)
    ax.set_xlabel("year")
axes[0].legend(title="province", fontsize=7)
fig.suptitle(label, fontsize=8, color=style.OKABE_ITO["vermillion"] if "SYNTHETIC" in label else "k")
assert np.isfinite(prov["n_rate_kg_ha"]).all()

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
# # Counterfactual: N rates held at their 2003 level
#
# Every county x crop keeps its 2003 N rate for the years after 2003
# (`pipeline.methods.attribution.counterfactual_activity`); emissions are the fitted model's
# point estimates (`pipeline.methods.montecarlo.expected_emissions`, same background treatment
# as the estimate stage). `HOLD_YEAR` (or `CROPN2O_HOLD_YEAR`) changes the year; when the run
# does not contain it, the middle year of the run is used and said so.

# %% tags=["parameters"]
import os
from pathlib import Path

from pipeline.config import load_config

ROOT = Path(os.environ.get("CROPN2O_ROOT", Path.cwd() if (Path.cwd() / "config").is_dir() else Path.cwd().parent))
CONFIG = Path(os.environ.get("CROPN2O_CONFIG", ROOT / "config" / "default.yaml"))
PROCESSED = (
    Path(os.environ["CROPN2O_PROCESSED"]) if "CROPN2O_PROCESSED" in os.environ else load_config(CONFIG).processed
)
HOLD_YEAR = int(os.environ.get("CROPN2O_HOLD_YEAR", 2003))

# %%
import matplotlib.pyplot as plt
import numpy as np

from pipeline import io
from pipeline.methods.attribution import counterfactual_activity
from pipeline.methods.models import InventoryModel
from pipeline.methods.montecarlo import expected_emissions
from pipeline.plots import style

estimate_manifest = io.read_json(PROCESSED / "estimate" / "manifest.json")
label = estimate_manifest["label"]
background = estimate_manifest.get("background", "separate")
model = InventoryModel.from_json(io.read_json(PROCESSED / "fit" / "model.json"))
activity = io.read_parquet(PROCESSED / "ingest" / "activity.parquet")
years = sorted(activity["year"].unique())
hold = HOLD_YEAR if HOLD_YEAR in years[:-1] else int(years[len(years) // 2])
if hold != HOLD_YEAR:
    print(f"{HOLD_YEAR} is not inside this run ({years[0]}-{years[-1]}): holding at {hold} instead")
print(label, "| scope:", estimate_manifest.get("emission_columns"))

# %%
held = counterfactual_activity(activity, hold, "n_rate_held")
actual_gg = activity.assign(e=expected_emissions(activity, model, background)).groupby("year")["e"].sum() / 1e6
held_gg = held.assign(e=expected_emissions(held, model, background)).groupby("year")["e"].sum() / 1e6
table = actual_gg.to_frame("actual_gg").join(held_gg.to_frame("n_rate_held_gg"))
table["avoided_gg"] = table["actual_gg"] - table["n_rate_held_gg"]
table

# %%
fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
ax.plot(table.index, table["actual_gg"], color=style.PALETTE[0], label="as reported")
ax.plot(table.index, table["n_rate_held_gg"], color=style.PALETTE[1], linestyle="--", label=f"N rate held at {hold}")
ax.axvline(hold, color="0.5", lw=0.8)
ax.set_xlabel("year")
ax.set_ylabel("Gg N2O-N / yr (point estimate)")
ax.legend()
ax.set_title(label, fontsize=8)
# Before and in the hold year nothing changes:
assert np.allclose(table.loc[table.index <= hold, "avoided_gg"], 0.0)
print(f"cumulative difference after {hold}: {table.loc[table.index > hold, 'avoided_gg'].sum():.2f} Gg N2O-N")

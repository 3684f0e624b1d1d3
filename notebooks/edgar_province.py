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
# # The EDGAR comparison for one province
#
# Reads the compare stage's outputs (`compare/`) and this inventory's provincial series
# (`trend/series.csv` or `estimate/province_total.parquet`) for `PROVINCE` (2-digit code; or
# `CROPN2O_PROVINCE`; default: the province with the largest emission). When the compare stage
# has not run, the notebook says so and shows the inventory's series alone.

# %% tags=["parameters"]
import os
from pathlib import Path

from pipeline.config import load_config

ROOT = Path(os.environ.get("CROPN2O_ROOT", Path.cwd() if (Path.cwd() / "config").is_dir() else Path.cwd().parent))
CONFIG = Path(os.environ.get("CROPN2O_CONFIG", ROOT / "config" / "default.yaml"))
PROCESSED = (
    Path(os.environ["CROPN2O_PROCESSED"]) if "CROPN2O_PROCESSED" in os.environ else load_config(CONFIG).processed
)
PROVINCE = int(os.environ["CROPN2O_PROVINCE"]) if "CROPN2O_PROVINCE" in os.environ else None

# %%
import matplotlib.pyplot as plt
import pandas as pd

from pipeline import io
from pipeline.plots import style

label = io.read_json(PROCESSED / "estimate" / "manifest.json")["label"]
prov = io.read_parquet(PROCESSED / "estimate" / "province_total.parquet")  # all crops, one row per year
if PROVINCE is None:
    PROVINCE = int(prov.groupby("province_code")["n2o_n_kg_mean"].mean().idxmax())
ours = (
    prov[prov["province_code"] == PROVINCE].set_index("year")[["n2o_n_kg_mean", "n2o_n_kg_p2_5", "n2o_n_kg_p97_5"]]
    / 1e6
)
print(label, "| province", PROVINCE)

# %% The compare stage's provincial tables, if it ran
compare = PROCESSED / "compare"
tables = {}
if (compare / "manifest.json").exists():
    for rel in io.read_json(compare / "manifest.json").get("outputs", {}):
        p = compare / rel
        if p.suffix in (".csv", ".parquet"):
            t = pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
            if {"province_code", "year"} <= set(t.columns):
                tables[rel] = t[t["province_code"] == PROVINCE]
    print("compare tables with a province column:", sorted(tables) or "none")
else:
    print(
        "The compare stage has not run (no compare/manifest.json): showing this inventory only. "
        "Run `make compare` for the EDGAR and FAOSTAT comparison."
    )

# %%
fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
ax.fill_between(ours.index, ours["n2o_n_kg_p2_5"], ours["n2o_n_kg_p97_5"], color=style.PALETTE[0], alpha=0.25)
ax.plot(ours.index, ours["n2o_n_kg_mean"], color=style.PALETTE[0], label="this inventory (fitted, 95 % MC)")
for i, (rel, t) in enumerate(tables.items(), 1):
    numeric = [c for c in t.select_dtypes("number").columns if c not in ("province_code", "year")]
    for j, col in enumerate(numeric[:3]):
        scale = 1e6 if col.endswith("_kg") or "_kg_" in col else 1.0
        ax.plot(
            t["year"],
            t[col] / scale,
            linestyle=style.LINESTYLES[(i + j) % len(style.LINESTYLES)],
            label=f"{Path(rel).stem}: {col}",
        )
ax.set_xlabel("year")
ax.set_ylabel("Gg N2O-N / yr")
ax.legend(fontsize=7)
ax.set_title(f"{label} - province {PROVINCE}", fontsize=8)
assert not ours.empty

# %% The provincial series (Gg N2O-N / yr)
ours.round(2)

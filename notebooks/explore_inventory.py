# %% [markdown]
# # Exploring the inventory and its drivers
#
# A notebook in the "percent" format (open it in Jupyter with jupytext, VS Code or Spyder, or
# run it as a script). It imports from the package and reads what `make all` wrote; the package
# never imports from notebooks. With the default config the data are the SYNTHETIC demo world.

# %%
from pathlib import Path

import matplotlib.pyplot as plt

from pipeline import io
from pipeline.config import load_config
from pipeline.methods.montecarlo import expected_emissions
from pipeline.stages.estimate import load_model

ROOT = Path.cwd() if (Path.cwd() / "config").is_dir() else Path.cwd().parent
cfg = load_config(ROOT / "config" / "default.yaml")
print(cfg.inputs.label or "user data")

# %% National series: fitted model vs IPCC Tier 1, with 95 % Monte Carlo intervals
fig, ax = plt.subplots(figsize=(7, 4))
for folder, name in (("estimate", "fitted model"), ("estimate_tier1", "IPCC Tier 1")):
    nat = io.read_parquet(cfg.processed / folder / "province.parquet")
    nat = nat[nat["crop"] == "all"].groupby("year")[["n2o_n_kg_mean"]].sum() / 1e6
    ax.plot(nat.index, nat["n2o_n_kg_mean"], label=name)
ax.set_ylabel("Gg N2O-N / yr")
ax.legend()

# %% A driver experiment: what if N rates had stayed at their 2003 level?
from pipeline.methods.attribution import counterfactual_activity

activity = io.read_parquet(cfg.processed / "ingest" / "activity.parquet")
model = load_model(cfg, "fitted")
held = counterfactual_activity(activity, 2003, "n_rate_held")
base = activity.assign(e=expected_emissions(activity, model)).groupby("year")["e"].sum() / 1e6
cf = held.assign(e=expected_emissions(held, model)).groupby("year")["e"].sum() / 1e6
ax = base.plot(label="as reported")
cf.plot(ax=ax, label="N rate held at 2003")
ax.set_ylabel("Gg N2O-N / yr")
ax.legend()

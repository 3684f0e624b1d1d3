"""Figures of the trend stage: national trend with breaks, attribution bars, province map.

Each function returns a :class:`matplotlib.figure.Figure` (no pyplot, no backend switch); the
stage writes it with :func:`pipeline.io.write_png`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.methods.lmdi import EFFECTS


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def figure_national(
    series: pd.DataFrame,
    result: dict[str, Any],
    draws_summary: dict[str, Any] | None,
) -> Figure:
    """National trend with MC interval, fitted segments and the break-year intervals."""
    s = series.sort_values("year")
    t = s["year"].to_numpy(float)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.fill_between(t, s["n2o_n_kg_p2_5"] / 1e6, s["n2o_n_kg_p97_5"] / 1e6, alpha=0.25, label="95 % MC interval")
    ax.plot(t, s["n2o_n_kg_mean"] / 1e6, "o", ms=3, label="inventory (mean)")
    sc = result["slope_change"]
    ax.plot(t, np.asarray(sc["fitted"]) / 1e6, "-", label=f"segmented fit ({sc['n_breaks']} break(s))")
    for b in sc["breaks"]:
        ax.axvline(b["break_year"], color="k", lw=0.8)
        if b.get("ci_low") is not None:
            ax.axvspan(b["ci_low"], b["ci_high"], color="k", alpha=0.08, label="break 95 % CI (series)")
    if draws_summary is not None and sc["n_breaks"] >= 1:
        y0 = ax.get_ylim()[0]
        ax.errorbar(
            [draws_summary["median"]],
            [y0],
            xerr=[
                [draws_summary["median"] - draws_summary["ci_low"]],
                [draws_summary["ci_high"] - draws_summary["median"]],
            ],
            fmt="v",
            color="C3",
            label="break 95 % range over MC draws",
        )
    ax.set_xlabel("year")
    ax.set_ylabel("direct N2O emission (Gg N2O-N / yr)")
    ax.set_title(sc["conclusion"][:90], fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_attribution(periods: pd.DataFrame) -> Figure:
    """Bars of the LMDI effects per period (Gg N2O-N)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    labels = [*EFFECTS, "total"]
    width = 0.8 / max(len(periods), 1)
    for i, (_, row) in enumerate(periods.iterrows()):
        x = np.arange(len(labels)) + i * width
        ax.bar(x, [row[c] / 1e6 for c in labels], width, label=f"{row['period']} ({row['year_from']}-{row['year_to']})")
    ax.set_xticks(np.arange(len(labels)) + width * (len(periods) - 1) / 2, labels, rotation=20, fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("contribution to the change (Gg N2O-N / yr)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_province_map(boundaries: Any, slopes: pd.DataFrame) -> Figure:
    """Province map of the slope change after the national break (Mg N2O-N / yr^2)."""
    prov = boundaries[["province_code", "geometry"]].dissolve(by="province_code", as_index=False)
    prov = prov.merge(slopes, on="province_code", how="left")
    prov["change_mg"] = prov["slope_change_kg_yr2"] / 1e3
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    lim = float(np.nanmax(np.abs(prov["change_mg"]))) if prov["change_mg"].notna().any() else 1.0
    prov.plot(
        column="change_mg",
        ax=ax,
        cmap="RdBu_r",
        vmin=-lim,
        vmax=lim,
        legend=True,
        missing_kwds={"color": "lightgrey"},
        edgecolor="white",
        linewidth=0.3,
        legend_kwds={"label": "slope after - before (Mg N2O-N / yr²)"},
    )
    ax.set_axis_off()
    fig.tight_layout()
    return fig

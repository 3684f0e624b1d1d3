"""Figures of the fit stage: EF(N) curves per crop."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.methods.fitting import N_COL


def ef_figure(curves: pd.DataFrame) -> Figure:
    """EF(N) per crop with 95 % bands, fitted and Tier 1 (a Figure; no pyplot)."""
    crops = sorted(curves["crop"].unique())
    ncol = min(3, len(crops))
    nrow = int(np.ceil(len(crops) / ncol))
    fig = Figure(figsize=(4.2 * ncol, 3.4 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, crop in zip(axes.ravel(), crops):
        c = curves.loc[curves["crop"] == crop]
        for (model, climate), g in c.groupby(["model", "climate"], sort=True):
            label = model if climate == "all" else f"{model} ({climate})"
            style = "-" if model != "tier1" else "--"
            line, = ax.plot(g[N_COL], g["ef"] * 100, style, label=label)
            ax.fill_between(g[N_COL], g["ef_lo95"] * 100, g["ef_hi95"] * 100, color=line.get_color(), alpha=0.15)
        ax.set_title(crop)
        ax.set_xlabel("N rate (kg N/ha)")
        ax.set_ylabel("EF (% of N applied)")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(crops):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig

"""Figures of the fit stage: EF(N) curves per crop (model, each N-response form, IPCC Tier 1)
and the paired-control emission factors beside them.

Built with :mod:`pipeline.plots.style` (no pyplot); the stage writes them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.methods.fitting import N_COL
from pipeline.plots import style


def _grid(n: int) -> tuple[Figure, np.ndarray]:
    ncol = min(3, max(n, 1))
    nrow = int(np.ceil(max(n, 1) / ncol))
    fig = style.new_figure(3.3 * ncol, 2.9 * nrow + 0.4)
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    return fig, axes


def _curves(ax, c: pd.DataFrame, forms: bool) -> None:
    for (model, climate), g in c.groupby(["model", "climate"], sort=True):
        is_form = str(model).startswith("form:")
        if is_form and not forms:
            continue
        label = model if climate == "all" else f"{model} ({climate})"
        if is_form and "weight" in g.columns and np.isfinite(g["weight"].iloc[0]):
            label = f"{str(model)[5:]} (w {g['weight'].iloc[0]:.2f})"
        style_ = "--" if model == "tier1" else (":" if is_form else "-")
        width = 0.9 if is_form else 1.6
        (line,) = ax.plot(g[N_COL], g["ef"] * 100, linestyle=style_, linewidth=width, label=label)
        if not is_form:
            ax.fill_between(
                g[N_COL],
                g["ef_lo95"] * 100,
                g["ef_hi95"] * 100,
                color=line.get_color(),
                alpha=style.BAND_ALPHA,
                linewidth=0,
            )


def ef_figure(curves: pd.DataFrame, label: str = "") -> Figure:
    """EF(N) per crop: the chosen model with its 95 % band, every N-response form of a model
    average (dotted, with its weight) and IPCC Tier 1 (dashed)."""
    crops = sorted(curves["crop"].unique())
    fig, axes = _grid(len(crops))
    for ax, crop in zip(axes, crops):
        _curves(ax, curves.loc[curves["crop"] == crop], forms=True)
        ax.set_title(crop)
        ax.set_xlabel("N rate (kg N/ha)")
        ax.set_ylabel("EF (% of N applied)")
        ax.legend(fontsize=6)
    for ax in axes[len(crops) :]:
        ax.set_visible(False)
    if label:
        style.stamp(
            fig,
            label=label,
            scope="fertilizer-induced EF(N) = (E(N) - E(0)) / N, annual",
            units="% of N applied",
            source="cropn2o fit stage",
        )
    return fig


def paired_ef_figure(paired: pd.DataFrame, curves: pd.DataFrame, label: str = "") -> Figure:
    """Paired-control EF (E_N - E_0) / N of each fertilised record with a zero-N control, per crop,
    beside the model-based EF(N) curves and IPCC Tier 1."""
    crops = sorted(set(curves["crop"].unique()) | set(paired["crop"].unique()))
    fig, axes = _grid(len(crops))
    for ax, crop in zip(axes, crops):
        p = paired.loc[paired["crop"] == crop]
        if len(p):
            ax.scatter(p[N_COL], p["ef"] * 100, s=6, alpha=0.45, color="0.3", label=f"paired controls (n={len(p)})")
            med = p.groupby(pd.cut(p[N_COL], [0, 100, 200, 300, 400, np.inf]), observed=True)
            m = med.agg(n=(N_COL, "median"), ef=("ef", "median"))
            ax.plot(m["n"], m["ef"] * 100, "o", color="black", markersize=4, label="median per 100 kg N bin")
        _curves(ax, curves.loc[curves["crop"] == crop], forms=False)
        ax.axhline(0.0, color="0.6", linewidth=0.6)
        ax.set_title(crop)
        ax.set_xlabel("N rate (kg N/ha)")
        ax.set_ylabel("EF (% of N applied)")
        if len(p):
            lo, hi = np.nanpercentile(p["ef"] * 100, [2, 98])
            ax.set_ylim(min(lo, -0.5), max(hi, 2.5))
        ax.legend(fontsize=6)
    for ax in axes[len(crops) :]:
        ax.set_visible(False)
    if label:
        style.stamp(
            fig,
            label=label,
            scope="fertilizer-induced EF from paired zero-N controls vs model EF(N)",
            units="% of N applied",
            source="cropn2o fit stage",
        )
    return fig

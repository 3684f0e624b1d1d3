"""Figures of the compare stage: national totals, the bridge, the difference map.

Every figure is stamped (:func:`pipeline.plots.style.stamp`) with the dataset label (SYNTHETIC on
the demo world), the scope of both sides, the units and the sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.methods.gridding import Grid
from pipeline.plots import style

GG = 1e6  # kg per Gg

_NAMES = {
    "edgar_grid": "EDGAR grid (scope-matched)",
    "edgar_national": "EDGAR national, whole country (scope-matched)",
    "faostat": "FAOSTAT synthetic N, whole country (scope-matched)",
}


def figure_totals(national: pd.DataFrame, fitted: pd.DataFrame, label: str, inventory_scope: str) -> Figure:
    """National totals: this inventory with its 95 % interval and each scope-matched reference.

    ``national``: :func:`pipeline.methods.compare.compare_totals` rows of every reference;
    ``fitted``: ``year, n2o_n_kg[, n2o_n_kg_p2_5, n2o_n_kg_p97_5]`` (kg N2O-N).
    """
    fig = style.new_figure(style.DOUBLE_COLUMN_IN, 3.6)
    ax = fig.add_subplot()
    f = fitted.sort_values("year")
    ax.plot(f["year"], f["n2o_n_kg"] / GG, label="this inventory (fitted)", color=style.PALETTE[0], linestyle="-")
    if {"n2o_n_kg_p2_5", "n2o_n_kg_p97_5"} <= set(f.columns):
        ax.fill_between(
            f["year"],
            f["n2o_n_kg_p2_5"] / GG,
            f["n2o_n_kg_p97_5"] / GG,
            alpha=style.BAND_ALPHA,
            linewidth=0,
            color=style.PALETTE[0],
            label="95 % interval (Monte Carlo)",
        )
    notes = []
    fitted_rows = national[national["inventory"] == "fitted"] if "inventory" in national.columns else national
    for i, (ref, g) in enumerate(fitted_rows.groupby("reference", sort=True)):
        if ref not in _NAMES:
            continue
        g = g.sort_values("year")
        ax.plot(
            g["year"],
            g["reference_n2o_n_kg"] / GG,
            label=_NAMES[ref],
            color=style.PALETTE[1 + i % 5],
            linestyle=style.LINESTYLES[1 + i % 5],
            marker=style.MARKERS[1 + i % 5],
            markersize=3,
        )
        notes.append(f"{ref}: {g['scope_note'].iloc[0]}")
    ax.set_xlabel("year")
    ax.set_ylabel("Gg N2O-N per year")
    ax.set_title("National totals, scope-matched")
    ax.legend(loc="upper left")
    style.stamp(
        fig,
        label=label,
        scope=f"{inventory_scope}. References: " + "; ".join(notes),
        units="Gg N2O-N yr-1 (N2O = N2O-N x 44/28)",
        source="cropn2o estimate stage; EDGAR; FAOSTAT",
    )
    return fig


def figure_bridge(bridge: pd.DataFrame, label: str, scope: str) -> Figure:
    """Stacked bars per year: activity-data term (Tier 1 - EDGAR) and emission-model term
    (fitted - Tier 1), with the total difference (fitted - EDGAR) as a line."""
    fig = style.new_figure(style.DOUBLE_COLUMN_IN, 3.6)
    ax = fig.add_subplot()
    y = bridge["year"].to_numpy()
    a = bridge["activity_data_n2o_n_kg"].to_numpy() / GG
    m = bridge["emission_model_n2o_n_kg"].to_numpy() / GG
    ax.bar(y, a, color=style.OKABE_ITO["sky_blue"], label="different activity data (Tier 1 here - EDGAR)")
    # the second bar stacks on the first when both have the same sign, else starts at zero
    ax.bar(
        y,
        m,
        bottom=np.where(np.sign(m) == np.sign(a), a, 0.0),
        color=style.OKABE_ITO["orange"],
        label="different emission model (fitted - Tier 1 here)",
    )
    ax.plot(
        y,
        bridge["total_difference_n2o_n_kg"] / GG,
        color="black",
        marker="o",
        markersize=3,
        label="total difference (fitted - EDGAR)",
    )
    ax.axhline(0, color="#555555", linewidth=0.8)
    ax.set_xlabel("year")
    ax.set_ylabel("Gg N2O-N per year")
    ax.set_title("Bridge from EDGAR to this inventory")
    # Above the axes: inside, the legend sat on the bars of some years.
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncol=2)
    style.stamp(
        fig,
        label=label,
        scope=scope,
        units="Gg N2O-N yr-1",
        source="cropn2o estimate (fitted, Tier 1); EDGAR aggregated to counties with the grid weights",
    )
    return fig


def _outline(ax: Any, geom: Any) -> None:
    polys = getattr(geom, "geoms", [geom])
    for p in polys:
        for ring in [p.exterior, *p.interiors]:
            x, y = ring.xy
            ax.plot(x, y, color="#333333", linewidth=0.4, linestyle="-")


def figure_difference_map(
    diff: np.ndarray, grid: Grid, provinces: Any, year: int, label: str, scope: Mapping[str, Any]
) -> Figure:
    """Map of inventory - scope-matched EDGAR per 0.1° cell (kg N2O-N), province outlines."""
    fig = style.new_figure(style.DOUBLE_COLUMN_IN, 4.6)
    ax = fig.add_subplot()
    w, s, e, n = grid.bounds
    norm = style.diverging_norm(diff)
    im = ax.imshow(
        np.ma.masked_invalid(diff),
        origin="lower",
        extent=(w, e, s, n),
        cmap=style.CMAP_DIVERGING,
        norm=norm,
        interpolation="nearest",
    )
    for geom in provinces:
        _outline(ax, geom)
    ax.set_xlim(w, e)
    ax.set_ylim(s, n)
    ax.set_aspect(1.0 / max(np.cos(np.deg2rad(0.5 * (s + n))), 0.2))
    ax.set_xlabel("longitude (deg E)")
    ax.set_ylabel("latitude (deg N)")
    ax.grid(False)
    ax.set_title(f"Inventory minus EDGAR, {year}")
    style.colorbar(fig, im, ax, "kg N2O-N per cell per year")
    style.stamp(
        fig,
        label=label,
        scope=f"{scope['scope_inventory']} minus {scope['scope_reference']}; {scope['scope_note']}",
        units="kg N2O-N cell-1 yr-1 (0.1 deg cells)",
        source="cropn2o grid stage; EDGAR",
    )
    return fig

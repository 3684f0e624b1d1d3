"""Report figures of the model and the inventory: EF(N) curves, national and provincial series,
breakpoints over Monte Carlo draws, attribution and counterfactuals.

Every function returns a stamped :class:`pipeline.plots.style.StyledFigure` (label, scope, units,
source in the footer); the caller saves it with :func:`pipeline.plots.style.save_figure`.
Series are in Gg N2O-N yr-1 (1 Gg = 1e6 kg); bands are 95 % Monte Carlo intervals
(2.5th-97.5th percentiles of the draws) unless a caption says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.methods.lmdi import EFFECTS
from pipeline.plots import style

__all__ = [
    "attribution_bars",
    "break_distribution",
    "counterfactual_lines",
    "ef_curves",
    "national_emissions",
    "provincial_emissions",
]

KG_PER_GG = 1e6
FITTED, TIER1 = style.PALETTE[0], style.PALETTE[1]


def _grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncol = min(max_cols, max(n, 1))
    return math.ceil(n / ncol), ncol


def ef_curves(curves: pd.DataFrame, *, label: str, source: str, width_in: float = style.DOUBLE_COLUMN_IN) -> Figure:
    """EF(N) per crop (one panel each) with 95 % bands, every model form in the file and Tier 1.

    ``curves`` has the columns of ``fit/ef_curves.csv``: ``crop``, ``model`` (a fitted form or
    ``tier1``), ``climate`` (``all``, ``wet``, ``dry``), ``n_rate_kg_ha``, ``ef``, ``ef_lo95``,
    ``ef_hi95`` (fractions of N applied). Fitted forms are solid lines in palette colours; Tier 1
    is dashed grey/black, one line per climate zone.

    Notes
    -----
    EF(N) = (E(N) - E(0)) / N, the fertilizer-induced emission factor at N rate N (kg N2O-N per
    kg N applied), shown in % of N applied.
    """
    crops = sorted(curves["crop"].unique())
    nrow, ncol = _grid_shape(len(crops))
    fig = style.new_figure(width_in, 0.7 + 2.1 * nrow + 0.9)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True)
    forms = sorted(m for m in curves["model"].unique() if m != "tier1")
    fitted_colours = [c for c in style.PALETTE if c != style.OKABE_ITO["black"]]
    colour = {m: fitted_colours[i % len(fitted_colours)] for i, m in enumerate(forms)}
    tier1_style = {"all": ("#000000", "--"), "wet": ("#000000", "--"), "dry": ("#666666", ":")}
    handles: dict[str, Any] = {}
    for ax, crop in zip(axes.ravel(), crops):
        c = curves.loc[curves["crop"] == crop]
        for (model, climate), g in c.groupby(["model", "climate"], sort=True):
            g = g.sort_values("n_rate_kg_ha")
            x = g["n_rate_kg_ha"].to_numpy(float)
            if model == "tier1":
                col, ls = tier1_style.get(climate, ("#000000", "--"))
                name = "IPCC Tier 1" + (" (one factor)" if climate == "all" else f" ({climate} climate)")
                lw = 1.2
            else:
                col, ls = colour[model], "-"
                name = f"fitted: {model}" + ("" if climate == "all" else f" ({climate})")
                lw = 1.8
            (line,) = ax.plot(x, g["ef"] * 100, linestyle=ls, color=col, linewidth=lw)
            band_alpha = style.BAND_ALPHA if model != "tier1" else 0.10
            ax.fill_between(x, g["ef_lo95"] * 100, g["ef_hi95"] * 100, color=col, alpha=band_alpha, linewidth=0)
            handles.setdefault(name, line)
        ax.set_title(crop)
        ax.set_ylim(bottom=0)
    for ax in axes[-1]:
        ax.set_xlabel("N rate (kg N ha⁻¹)")
    for ax in axes[:, 0]:
        ax.set_ylabel("EF (% of N applied)")
    for ax in axes.ravel()[len(crops) :]:
        ax.set_visible(False)
    # Three columns: with four, the long form labels ran past the right edge of the figure.
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside upper center", ncol=min(3, len(handles)))
    style.stamp(
        fig,
        label=label,
        scope="direct N2O, fertilizer-induced emission factor (background subtracted)",
        units="% of N applied (kg N2O-N per 100 kg N); bands 95 % intervals of the model parameters",
        source=source,
    )
    return fig


def _band(ax, frame: pd.DataFrame, color: str, name: str, *, marker: str | None = None, ls: str = "-"):
    f = frame.sort_values("year")
    t = f["year"].to_numpy(float)
    ax.fill_between(
        t,
        f["n2o_n_kg_p2_5"] / KG_PER_GG,
        f["n2o_n_kg_p97_5"] / KG_PER_GG,
        color=color,
        alpha=style.BAND_ALPHA,
        linewidth=0,
    )
    (line,) = ax.plot(
        t, f["n2o_n_kg_mean"] / KG_PER_GG, color=color, linestyle=ls, marker=marker, markersize=3, label=name
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return line


def national_emissions(
    fitted: pd.DataFrame,
    tier1: pd.DataFrame | None,
    *,
    label: str,
    scope: str,
    source: str,
    by_crop: pd.DataFrame | None = None,
    width_in: float = style.DOUBLE_COLUMN_IN,
) -> Figure:
    """National total per year, fitted model vs IPCC Tier 1 with 95 % bands; per-crop beside it.

    ``fitted`` / ``tier1``: one row per year with ``year``, ``n2o_n_kg_mean``, ``n2o_n_kg_p2_5``,
    ``n2o_n_kg_p97_5`` (kg N2O-N yr-1). ``by_crop`` (optional): the same columns plus ``crop``,
    fitted model, drawn as a second panel.
    """
    two = by_crop is not None and not by_crop.empty
    fig = style.new_figure(width_in, 3.4)
    axes = fig.subplots(1, 2, width_ratios=[1.25, 1]) if two else [fig.add_subplot()]
    ax = axes[0]
    _band(ax, fitted, FITTED, "fitted model (mean, 95 % MC)", marker="o")
    if tier1 is not None and not tier1.empty:
        _band(ax, tier1, TIER1, "IPCC Tier 1 (mean, 95 % MC)", ls="--", marker="s")
    ax.set_xlabel("year")
    ax.set_ylabel("Gg N2O-N yr⁻¹")
    ax.set_ylim(bottom=0)
    ax.set_title("National total")
    ax.legend(loc="lower right")
    if two:
        assert by_crop is not None  # two implies by_crop
        ax2 = axes[1]
        for i, (crop, g) in enumerate(by_crop.groupby("crop", sort=True)):
            _band(ax2, g, style.PALETTE[i % len(style.PALETTE)], crop)
            ax2.lines[-1].set_linestyle(style.LINESTYLES[i % len(style.LINESTYLES)])
        ax2.set_xlabel("year")
        ax2.set_ylabel("Gg N2O-N yr⁻¹")
        ax2.set_ylim(bottom=0)
        ax2.set_title("By crop (fitted model)")
        ax2.legend(loc="upper left", ncol=2, fontsize=style.FONT_SIZE - 2)
    style.stamp(
        fig,
        label=label,
        scope=scope,
        units="Gg N2O-N yr-1 (1 Gg = 10^6 kg); bands 95 % Monte Carlo intervals",
        source=source,
    )
    return fig


def provincial_emissions(
    fitted: pd.DataFrame,
    tier1: pd.DataFrame | None,
    provinces: Sequence[int],
    names: Mapping[int, str] | None = None,
    *,
    label: str,
    scope: str,
    source: str,
    width_in: float = style.DOUBLE_COLUMN_IN,
) -> Figure:
    """Small multiples, one per province: fitted vs Tier 1 with 95 % bands.

    ``fitted`` / ``tier1``: ``province_code``, ``year`` and the interval columns (``crop`` = all
    rows only). Panels share the x axis; each has its own y scale.
    """
    provinces = list(provinces)
    nrow, ncol = _grid_shape(len(provinces), 4)
    fig = style.new_figure(width_in, 0.5 + 1.6 * nrow + 0.9)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True)
    for ax, code in zip(axes.ravel(), provinces):
        f = fitted[fitted["province_code"] == code]
        h1 = _band(ax, f, FITTED, "fitted model")
        h2 = None
        if tier1 is not None:
            t = tier1[tier1["province_code"] == code]
            if not t.empty:
                h2 = _band(ax, t, TIER1, "IPCC Tier 1", ls="--")
        ax.set_title((names or {}).get(code, f"province {code}"), fontsize=style.FONT_SIZE)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=style.FONT_SIZE - 2)
    for ax in axes.ravel()[len(provinces) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("Gg N2O-N yr⁻¹")
    handles = [h for h in (h1, h2) if h is not None]
    fig.legend(handles, [h.get_label() for h in handles], loc="outside upper center", ncol=2)
    style.stamp(fig, label=label, scope=scope, units="Gg N2O-N yr-1; bands 95 % Monte Carlo intervals", source=source)
    return fig


def break_distribution(
    national: pd.DataFrame,
    slope_change: Mapping[str, Any],
    break_years: np.ndarray | None,
    *,
    label: str,
    scope: str,
    source: str,
    width_in: float = style.DOUBLE_COLUMN_IN,
) -> Figure:
    """Left: the national series with the segmented fit and each break's 95 % interval.
    Right: the distribution of the break year over the Monte Carlo draws.

    ``slope_change`` is ``breaks.json["national"]["slope_change"]`` (``fitted`` values in kg,
    ``breaks`` with ``break_year``, ``ci_low``, ``ci_high``); ``break_years`` the per-draw break
    years of ``trend/break_draws.csv`` (None or empty: right panel left out).
    """
    draws = np.asarray(break_years if break_years is not None else [], float)
    draws = draws[np.isfinite(draws)]
    two = draws.size > 0
    fig = style.new_figure(width_in, 3.3)
    axes = fig.subplots(1, 2, width_ratios=[1.4, 1]) if two else [fig.add_subplot()]
    ax = axes[0]
    s = national.sort_values("year")
    _band(ax, s, FITTED, "inventory (mean, 95 % MC)", marker="o")
    ax.lines[-1].set_linestyle("none")
    fitted = slope_change.get("fitted")
    if fitted is not None and len(fitted) == len(s):
        ax.plot(
            s["year"],
            np.asarray(fitted, float) / KG_PER_GG,
            color="black",
            linewidth=1.4,
            label=f"segmented fit ({slope_change.get('n_breaks', 0)} break(s))",
        )
    for i, b in enumerate(slope_change.get("breaks", [])):
        ax.axvline(b["break_year"], color=style.OKABE_ITO["vermillion"], linewidth=1.0)
        if b.get("ci_low") is not None and b.get("ci_high") is not None:
            ax.axvspan(
                b["ci_low"],
                b["ci_high"],
                color=style.OKABE_ITO["vermillion"],
                alpha=0.12,
                linewidth=0,
                label="break, 95 % interval" if i == 0 else None,
            )
    ax.set_xlabel("year")
    ax.set_ylabel("Gg N2O-N yr⁻¹")
    ax.set_title("National series and slope-change break(s)")
    ax.legend(loc="upper left")
    if two:
        ax2 = axes[1]
        lo, hi = math.floor(draws.min()), math.ceil(draws.max())
        bins = np.arange(lo - 0.5, hi + 1.5, 1.0) if hi - lo < 40 else 30
        ax2.hist(draws, bins=bins, color=style.PALETTE[3], edgecolor="white")
        for b in slope_change.get("breaks", [])[:1]:
            if b.get("ci_low") is not None:
                ax2.axvspan(
                    b["ci_low"],
                    b["ci_high"],
                    color=style.OKABE_ITO["vermillion"],
                    alpha=0.12,
                    linewidth=0,
                    label="series 95 % interval",
                )
        q = np.quantile(draws, [0.025, 0.5, 0.975])
        ax2.axvline(q[1], color="black", linewidth=1.2, label=f"median {q[1]:.1f}")
        ax2.axvline(q[0], color="black", linewidth=0.8, linestyle=":", label=f"2.5-97.5 %: {q[0]:.1f}-{q[2]:.1f}")
        ax2.axvline(q[2], color="black", linewidth=0.8, linestyle=":")
        ax2.set_xlabel("break year")
        ax2.set_ylabel("draws")
        ax2.set_title(f"Break year over {draws.size} draws")
        ax2.legend(
            loc="upper left",
            fontsize=style.FONT_SIZE - 2,
            frameon=True,
            facecolor="white",
            edgecolor="none",
            framealpha=0.9,
        )
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_ylim(top=ax2.get_ylim()[1] * 1.35)
        left, right = ax2.get_xlim()
        ax2.set_xlim(min(left, lo - 1.5), max(right, hi + 1.5))  # >= 2 whole years: integer ticks
    style.stamp(
        fig,
        label=label,
        scope=scope,
        units="Gg N2O-N yr-1; break year on the year axis (continuous broken line)",
        source=source,
    )
    return fig


def attribution_bars(
    periods: pd.DataFrame, *, label: str, scope: str, source: str, width_in: float = style.DOUBLE_COLUMN_IN * 0.8
) -> Figure:
    """LMDI contributions to the change in each period (``before``/``after`` rows of
    ``trend/attribution_periods.csv``; kg N2O-N yr-1 in the effect columns and ``total``).

    Notes
    -----
    The effects add up to the change of the annual emission between the period's first and
    last year: :math:`\\Delta E = \\sum_k \\Delta E_k` (LMDI-I, no residual).
    """
    cols = [c for c in (*EFFECTS, "total") if c in periods.columns]
    p = periods[periods["period"] != "all"].reset_index(drop=True)
    fig = style.new_figure(width_in, 3.2)
    ax = fig.add_subplot()
    width = 0.8 / max(len(p), 1)
    hatches = ["", "///", "xx", ".."]
    for i, row in p.iterrows():
        x = np.arange(len(cols)) + (i - (len(p) - 1) / 2) * width
        ax.bar(
            x,
            [row[c] / KG_PER_GG for c in cols],
            width,
            color=style.PALETTE[i % len(style.PALETTE)],
            hatch=hatches[i % len(hatches)],
            edgecolor="white",
            label=f"{row['period']} ({int(row['year_from'])}-{int(row['year_to'])})",
        )
    ax.set_xticks(np.arange(len(cols)), [c.replace("_", " ") for c in cols])
    ax.axhline(0, color="black", linewidth=0.7)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("contribution, Gg N2O-N yr⁻¹")
    ax.set_title("Attribution of the change (LMDI)")
    ax.legend(loc="best")
    style.stamp(
        fig,
        label=label,
        scope=scope,
        units="Gg N2O-N yr-1: change of the annual emission over the period, by driver",
        source=source,
    )
    return fig


def counterfactual_lines(
    cf: pd.DataFrame,
    break_year: int | None,
    *,
    label: str,
    scope: str,
    source: str,
    width_in: float = style.DOUBLE_COLUMN_IN * 0.8,
) -> Figure:
    """National totals with one driver held at its break-year level (``trend/counterfactuals.csv``:
    ``scenario``, ``year``, ``n2o_n_kg``), point estimates of the fitted model."""
    fig = style.new_figure(width_in, 3.2)
    ax = fig.add_subplot()
    names = {
        "actual": "as reported",
        "n_rate_held": "N rate held",
        "area_held": "sown area held",
        "irrigation_held": "irrigation held",
    }
    order = ["actual", *sorted(s for s in cf["scenario"].unique() if s != "actual")]
    for i, sc in enumerate(order):
        g = cf[cf["scenario"] == sc].sort_values("year")
        ax.plot(
            g["year"],
            g["n2o_n_kg"] / KG_PER_GG,
            color=style.PALETTE[i % len(style.PALETTE)],
            linestyle=style.LINESTYLES[i % len(style.LINESTYLES)],
            linewidth=1.8 if sc == "actual" else 1.4,
            label=names.get(sc, sc),
        )
    if break_year is not None:
        ax.axvline(break_year, color="#777777", linewidth=0.8)
        ax.annotate(
            f"held from {break_year}",
            (break_year, 0),
            xycoords=("data", "axes fraction"),
            xytext=(3, 4),
            textcoords="offset points",
            fontsize=style.FONT_SIZE - 2,
            color="#555555",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("year")
    ax.set_ylabel("Gg N2O-N yr⁻¹")
    ax.set_title("Counterfactuals: one driver held at its break-year level")
    ax.legend(loc="upper left")
    style.stamp(fig, label=label, scope=scope, units="Gg N2O-N yr-1 (point estimates, fitted model)", source=source)
    return fig

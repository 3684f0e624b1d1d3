"""Figures of data coverage: observations per crop and N-rate ranges against activity N rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.plots import style

__all__ = ["n_rate_ranges", "observations_per_crop", "weighted_quantiles"]

OBS_SCOPE = "field N2O flux observations (measured totals, background included)"


def observations_per_crop(
    obs: pd.DataFrame, *, label: str, source: str, width_in: float = style.SINGLE_COLUMN_IN * 1.45
) -> Figure:
    """Horizontal bars of records and sites per crop (``crop``, ``site_id`` columns)."""
    per = obs.groupby("crop").agg(records=("crop", "size"), sites=("site_id", "nunique")).sort_values("records")
    y = np.arange(len(per))
    fig = style.new_figure(width_in, 0.9 + 0.32 * len(per) + 0.8)
    ax = fig.add_subplot()
    h = 0.38
    b1 = ax.barh(y + h / 2, per["records"], h, color=style.PALETTE[0], label="records")
    b2 = ax.barh(y - h / 2, per["sites"], h, color=style.PALETTE[1], hatch="///", edgecolor="white", label="sites")
    ax.bar_label(b1, padding=2, fontsize=style.FONT_SIZE - 2)
    ax.bar_label(b2, padding=2, fontsize=style.FONT_SIZE - 2)
    ax.set_yticks(y, per.index.tolist())
    ax.set_xlabel("count")
    ax.set_xlim(0, per["records"].max() * 1.18)
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right")
    ax.set_title("Observations per crop")
    style.stamp(fig, label=label, scope=OBS_SCOPE, units="records (flux measurements); sites", source=source)
    return fig


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantiles ``q`` (0-1) of ``values`` weighted by ``weights`` (e.g. sown area).

    Notes
    -----
    The weighted empirical CDF at the i-th sorted value is
    :math:`F_i = (\\sum_{j \\le i} w_j - w_i / 2) / \\sum_j w_j`; quantiles are interpolated
    linearly in it (Hyndman & Fan 1996 type 5 with weights).
    """
    v = np.asarray(values, float)
    w = np.asarray(weights, float)
    ok = np.isfinite(v) & np.isfinite(w) & (w > 0)
    v, w = v[ok], w[ok]
    if v.size == 0:
        return np.full(np.shape(q), np.nan)
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cdf = (np.cumsum(w) - w / 2) / w.sum()
    return np.interp(q, cdf, v)


def n_rate_ranges(
    obs: pd.DataFrame,
    activity: pd.DataFrame,
    *,
    label: str,
    source: str,
    width_in: float = style.DOUBLE_COLUMN_IN * 0.75,
) -> Figure:
    """Per crop, the N rates of the observations against those of the activity data.

    Thin bar: 0-100 % range; thick bar: 5-95 %; tick: median. Observations are unweighted;
    activity N rates are weighted by sown area (county x crop x year rows). Where the activity
    range reaches beyond the observed one, the EF model extrapolates.
    """
    crops = sorted(set(obs["crop"]) | set(activity["crop"]))
    fig = style.new_figure(width_in, 1.0 + 0.42 * len(crops) + 0.9)
    ax = fig.add_subplot()
    q = np.array([0.0, 0.05, 0.5, 0.95, 1.0])
    rows = []
    for i, crop in enumerate(crops):
        o = obs.loc[obs["crop"] == crop, "n_rate_kg_ha"].to_numpy(float)
        a = activity.loc[activity["crop"] == crop]
        qo = np.quantile(o, q) if o.size else np.full(5, np.nan)
        qa = weighted_quantiles(a["n_rate_kg_ha"].to_numpy(float), a["area_ha"].to_numpy(float), q)
        rows.append((i, qo, qa))
    for i, qo, qa in rows:
        for off, qq, color, name in (
            (0.17, qo, style.PALETTE[0], "observations"),
            (-0.17, qa, style.PALETTE[1], "activity (area-weighted)"),
        ):
            if not np.isfinite(qq).all():
                continue
            ax.hlines(i + off, qq[0], qq[4], color=color, linewidth=1.2, label=name if i == 0 else None)
            ax.hlines(i + off, qq[1], qq[3], color=color, linewidth=6.0, alpha=0.9)
            ax.vlines(qq[2], i + off - 0.13, i + off + 0.13, color="black", linewidth=1.2)
    ax.set_yticks(range(len(crops)), crops)
    ax.set_ylim(-0.6, len(crops) - 0.4)
    ax.set_xlabel("N rate (kg N ha⁻¹)")
    ax.grid(axis="y", visible=False)
    ax.set_title("N rates: observations vs activity data")
    fig.legend(loc="outside upper center", ncol=2)
    style.stamp(
        fig,
        label=label,
        scope="fertilizer N applied per hectare of sown area, as given by the inputs",
        units="kg N ha-1; thin bar 0-100 %, thick bar 5-95 %, tick median",
        source=source,
    )
    return fig

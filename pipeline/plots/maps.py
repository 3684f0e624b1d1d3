"""Maps: gridded emissions at the grid's resolution, their change, and province choropleths.

Polygons are drawn with plain matplotlib collections built from shapely geometries (no
geopandas plotting, so no pyplot), on longitude/latitude axes with the aspect of the mean
latitude. Gridded fields are drawn with ``imshow`` on the regular grid (one raster image, so the
SVG stays small). Colour maps come from :mod:`pipeline.plots.style`: sequential ``viridis`` for
amounts, diverging ``PuOr_r`` centred at zero for changes.

:func:`grid_total` reads the total emission per cell and year from an opened grid dataset,
whatever the variable layout (see its notes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure
from matplotlib.path import Path as MplPath

from pipeline.plots import style

__all__ = ["GridTotal", "change_maps", "grid_maps", "grid_total", "province_value_map", "site_map"]

EARTH_RADIUS_M = 6_371_007.2  # authalic sphere radius used when the file has no cell areas


@dataclass(frozen=True)
class GridTotal:
    """Total emission per grid cell and year, read from a grid file.

    Attributes
    ----------
    lon, lat
        Cell-centre coordinates, degrees (ascending).
    years
        Integer years, one per slab of ``kg``.
    kg
        Array ``(year, lat, lon)``, kg N2O-N per cell per year (NaN outside the domain).
    cell_area_km2
        Array ``(lat, lon)``, km2.
    variable
        Which variable(s) of the file the total came from (for captions).
    """

    lon: np.ndarray
    lat: np.ndarray
    years: np.ndarray
    kg: np.ndarray
    cell_area_km2: np.ndarray
    variable: str

    @property
    def resolution_deg(self) -> float:
        """Cell edge, degrees (from the longitude spacing)."""
        return float(np.median(np.diff(self.lon))) if self.lon.size > 1 else float("nan")

    def density(self, year: int) -> np.ndarray:
        """kg N2O-N km-2 yr-1 in ``year`` (``kg / cell_area_km2``)."""
        i = int(np.nonzero(self.years == year)[0][0])
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.kg[i] / self.cell_area_km2


def _find_coord(ds, names: Sequence[str], axis: str, standard: str):
    for name in list(ds.coords) + list(ds.data_vars):
        var = ds[name]
        attrs = var.attrs
        if (
            attrs.get("axis") == axis or attrs.get("standard_name") == standard or str(name).lower() in names
        ) and var.ndim == 1:
            return name
    raise KeyError(f"the grid file has no {standard} coordinate (looked for {', '.join(names)})")


def _is_mass_per_cell(var) -> bool:
    units = str(var.attrs.get("units", "")).replace(" ", "").lower()
    return units in ("kg", "kgyr-1", "kg/yr", "kgn2o-n", "kga-1", "kgyear-1") or (
        units.startswith("kg") and "m-2" not in units and "/m2" not in units and "s-1" not in units
    )


def grid_total(ds, lon_name: str | None = None, lat_name: str | None = None) -> GridTotal:
    """Total kg N2O-N per cell and year from an opened grid dataset (:class:`xarray.Dataset`).

    Parameters
    ----------
    ds
        The grid file opened with :func:`xarray.open_dataset`.
    lon_name, lat_name
        Coordinate names; found from ``axis``/``standard_name`` attributes or common names when
        not given.

    Returns
    -------
    GridTotal

    Notes
    -----
    The total is taken, in this order of preference, from: a variable named or standard-named
    as the total (``n2o_n_total``, ``total``, ``n2o_n`` without a crop dimension); a variable
    with a crop dimension (string labels or an integer index with ``flag_values``), summed over
    it; or the per-crop variables (one per crop, all on the same (time, lat, lon) grid and in
    kg per cell), summed. Flux-density variables (kg m-2 s-1) and interval layers
    (``*_lo95``/``*_hi95``/``p2_5``/``p97_5``) are never summed. The year comes from a ``year``
    variable or coordinate, else from the time coordinate. Cell areas come from ``cell_area``
    (m2) or, failing that, from the spherical cell area
    :math:`A = R^2 \\Delta\\lambda (\\sin\\varphi_2 - \\sin\\varphi_1)` with the authalic radius.
    """
    lon_name = lon_name or _find_coord(ds, ("lon", "longitude", "x"), "X", "longitude")
    lat_name = lat_name or _find_coord(ds, ("lat", "latitude", "y"), "Y", "latitude")
    spatial = {lon_name, lat_name}
    skip_words = (
        "lo95",
        "hi95",
        "p2_5",
        "p97_5",
        "lower",
        "upper",
        "_sd",
        "bnds",
        "bounds",
        "flux",
        "density",
        "area",
        "median",
    )

    def candidates():
        for name, var in ds.data_vars.items():
            low = str(name).lower()
            if not spatial <= set(var.dims) or any(w in low for w in skip_words):
                continue
            if var.attrs.get("standard_name", "").endswith("flux") or not np.issubdtype(var.dtype, np.number):
                continue
            if "units" in var.attrs and not _is_mass_per_cell(var):
                continue
            yield str(name), var

    cands = dict(candidates())
    if not cands:
        raise KeyError("the grid file has no emission variable in kg per cell")
    extra_dims = {n: [d for d in v.dims if d not in spatial] for n, v in cands.items()}
    plain = [n for n in cands if len(extra_dims[n]) <= 1]
    total_names = [
        n
        for n in plain
        if "total" in n.lower()
        or "total" in str(cands[n].attrs.get("long_name", "")).lower()
        or "all crops" in str(cands[n].attrs.get("long_name", "")).lower()
    ]
    if total_names:
        chosen, used = cands[total_names[0]], total_names[0]
    elif any(len(d) == 2 for d in extra_dims.values()):  # (time, crop) or (crop, time)
        name = next(n for n, d in extra_dims.items() if len(d) == 2)
        var = cands[name]
        time_like = [d for d in extra_dims[name] if d in ("time", "year", "t") or "time" in d or "year" in d]
        crop_dim = next(d for d in extra_dims[name] if d not in time_like) if time_like else extra_dims[name][1]
        chosen, used = var.sum(crop_dim, skipna=True, min_count=1), f"{name} summed over {crop_dim}"
    elif len(plain) == 1:
        chosen, used = cands[plain[0]], plain[0]
    else:  # one variable per crop
        chosen = None
        for n in plain:
            chosen = cands[n].fillna(0.0) if chosen is None else chosen + cands[n].fillna(0.0)
        mask = np.all([np.isnan(cands[n].values) for n in plain], axis=0)
        chosen = chosen.where(~mask)
        used = " + ".join(plain)
    time_dims = [d for d in chosen.dims if d not in spatial]
    if len(time_dims) > 1:
        raise KeyError(f"cannot tell the time dimension of {used} (dimensions {chosen.dims})")
    if time_dims:
        tdim = time_dims[0]
        if "year" in ds.variables and ds["year"].dims == (tdim,):
            years = np.asarray(ds["year"].values).astype(int)
        elif np.issubdtype(ds[tdim].dtype, np.datetime64):
            years = pd.DatetimeIndex(ds[tdim].values).year.to_numpy()
        else:
            years = np.asarray(ds[tdim].values).astype(int)
        arr = chosen.transpose(tdim, lat_name, lon_name).values.astype(float)
    else:
        years = np.asarray([int(np.atleast_1d(ds["year"].values)[0])]) if "year" in ds.variables else np.array([0])
        arr = chosen.transpose(lat_name, lon_name).values.astype(float)[None]
    lat = np.asarray(ds[lat_name].values, float)
    lon = np.asarray(ds[lon_name].values, float)
    if "cell_area" in ds.variables and set(ds["cell_area"].dims) == spatial:
        area_m2 = ds["cell_area"].transpose(lat_name, lon_name).values.astype(float)
    else:
        dlat = float(np.median(np.abs(np.diff(lat)))) if lat.size > 1 else 1.0
        dlon = float(np.median(np.abs(np.diff(lon)))) if lon.size > 1 else 1.0
        band = np.sin(np.radians(lat + dlat / 2)) - np.sin(np.radians(lat - dlat / 2))
        area_m2 = np.outer(EARTH_RADIUS_M**2 * np.radians(dlon) * band, np.ones(lon.size))
    if lat.size > 1 and lat[0] > lat[-1]:
        lat, arr, area_m2 = lat[::-1], arr[:, ::-1, :], area_m2[::-1, :]
    if lon.size > 1 and lon[0] > lon[-1]:
        lon, arr, area_m2 = lon[::-1], arr[:, :, ::-1], area_m2[:, ::-1]
    return GridTotal(lon=lon, lat=lat, years=years, kg=arr, cell_area_km2=area_m2 / 1e6, variable=used)


# --- polygons -------------------------------------------------------------------------------------


def _rings(geom) -> Iterable:
    if geom is None or geom.is_empty:
        return
    if geom.geom_type == "Polygon":
        yield geom
    elif hasattr(geom, "geoms"):
        for g in geom.geoms:
            yield from _rings(g)


def _polygon_path(geom) -> MplPath | None:
    verts: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    for poly in _rings(geom):
        for ring in (poly.exterior, *poly.interiors):
            xy = np.asarray(ring.coords)[:, :2]
            if len(xy) < 3:
                continue
            c = np.full(len(xy), MplPath.LINETO, dtype=np.uint8)
            c[0] = MplPath.MOVETO
            c[-1] = MplPath.CLOSEPOLY
            verts.append(xy)
            codes.append(c)
    if not verts:
        return None
    return MplPath(np.concatenate(verts), np.concatenate(codes))


def _outline_segments(geoms) -> list[np.ndarray]:
    segs: list[np.ndarray] = []
    for geom in geoms:
        for poly in _rings(geom):
            segs.extend(np.asarray(r.coords)[:, :2] for r in (poly.exterior, *poly.interiors))
    return segs


def draw_outlines(
    ax: Axes, geoms, *, color: str = "#222222", linewidth: float = 0.5, halo: bool = False
) -> LineCollection:
    """Province (or any polygon) outlines as one line collection.

    With ``halo`` a wider white line is drawn under it, so the outline reads on dark and light
    cells alike (and in greyscale).
    """
    segs = _outline_segments(geoms)
    if halo:
        ax.add_collection(LineCollection(segs, colors="white", linewidths=linewidth + 1.0, zorder=3))
    lc = LineCollection(segs, colors=color, linewidths=linewidth, zorder=4)
    ax.add_collection(lc)
    return lc


def _geo_axes(ax: Axes, west: float, east: float, south: float, north: float) -> None:
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    ax.set_aspect(1.0 / max(math.cos(math.radians((south + north) / 2)), 0.2))
    ax.grid(False)
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.tick_params(labelsize=style.FONT_SIZE - 2)


def _label_outer(axes: np.ndarray, n: int) -> None:
    """Axis labels on the left column and on the lowest panel of each column only."""
    nrow, ncol = axes.shape
    for k, ax in enumerate(axes.ravel()[:n]):
        r, c = divmod(k, ncol)
        if c > 0:
            ax.set_ylabel("")
        if k + ncol < n:
            ax.set_xlabel("")


def _bounds_of(geoms, pad_frac: float = 0.03) -> tuple[float, float, float, float]:
    b = np.array([g.bounds for g in geoms if g is not None and not g.is_empty])
    w, s, e, n = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    pad = pad_frac * max(e - w, n - s)
    return w - pad, e + pad, s - pad, n + pad


def _panel_layout(n: int, aspect_hw: float, width_in: float) -> tuple[int, int, float]:
    ncol = 1 if n == 1 else (2 if n in (2, 4) else 3)
    nrow = math.ceil(n / ncol)
    panel_w = (width_in - 0.9) / ncol
    height = nrow * (panel_w * aspect_hw + 0.55) + 0.9
    return nrow, ncol, height


def _map_aspect(west: float, east: float, south: float, north: float) -> float:
    """Height / width of a lon-lat map drawn with the mean-latitude aspect."""
    k = 1.0 / max(math.cos(math.radians((south + north) / 2)), 0.2)
    return min(max((north - south) * k / max(east - west, 1e-9), 0.35), 1.6)


def _grid_panels(
    grid: GridTotal, provinces, n_panels: int, width_in: float, cmap_name: str
) -> tuple[
    Figure,
    np.ndarray,
    mcolors.ListedColormap,
    tuple[float, float, float, float],
    list,
    tuple[float, float, float, float],
]:
    """Figure, panel axes ``(nrow, ncol)``, colour map (white where NaN), image extent (degrees),
    outline geometries and the map window ``(west, east, south, north)`` of a grid-map figure.

    The window is the provinces' bounds, or the grid's extent (cell edges) without provinces.
    """
    dlon = grid.resolution_deg
    dlat = float(np.median(np.diff(grid.lat))) if grid.lat.size > 1 else dlon
    extent = (grid.lon[0] - dlon / 2, grid.lon[-1] + dlon / 2, grid.lat[0] - dlat / 2, grid.lat[-1] + dlat / 2)
    geoms = list(provinces)
    w, e, s, n = _bounds_of(geoms) if geoms else extent
    nrow, ncol, height = _panel_layout(n_panels, _map_aspect(w, e, s, n), width_in)
    fig = style.new_figure(width_in, height)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    cmap = mcolors.ListedColormap(style_cmap(cmap_name))
    cmap.set_bad("white")
    return fig, axes, cmap, extent, geoms, (w, e, s, n)


def grid_maps(
    grid: GridTotal,
    years: Sequence[int],
    provinces,
    *,
    label: str,
    scope: str,
    source: str,
    width_in: float = style.DOUBLE_COLUMN_IN,
) -> Figure:
    """Emission density per grid cell for ``years`` (one panel each), province outlines over it.

    ``provinces`` is a sequence of shapely geometries (dissolved from the inventory's boundary
    file). One colour scale for every panel: ``viridis`` from 0 to the 99th percentile of the
    positive cells (brighter = more), with an arrow for the cells above it.

    Notes
    -----
    Density (kg N2O-N km-2 yr-1) = cell total (kg N2O-N yr-1) / cell area (km2).
    """
    years = [int(y) for y in years if int(y) in set(grid.years.tolist())]
    if not years:
        raise ValueError("grid_maps: none of the requested years is in the grid")
    dens = [grid.density(y) for y in years]
    pos = np.concatenate([d[np.isfinite(d) & (d > 0)] for d in dens]) if dens else np.array([])
    vmax = float(np.percentile(pos, 99)) if pos.size else 1.0
    dlon = grid.resolution_deg
    fig, axes, cmap, extent, geoms, (w, e, s, n) = _grid_panels(
        grid, provinces, len(years), width_in, style.CMAP_SEQUENTIAL
    )
    norm = mcolors.Normalize(0.0, vmax)
    im = None
    for ax, year, d in zip(axes.ravel(), years, dens):
        shown = np.where(d > 0, d, np.nan)
        im = ax.imshow(shown, origin="lower", extent=extent, cmap=cmap, norm=norm, interpolation="nearest", zorder=1)
        draw_outlines(ax, geoms, halo=True)
        _geo_axes(ax, w, e, s, n)
        ax.set_title(str(year))
    for ax in axes.ravel()[len(years) :]:
        ax.set_visible(False)
    _label_outer(axes, len(years))
    sm = ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=0.85, extend="max", pad=0.02)
    cb.set_label("kg N2O-N km⁻² yr⁻¹")
    del im
    style.stamp(
        fig,
        label=label,
        scope=scope,
        units="kg N2O-N km-2 yr-1 (cell total / cell area)",
        source=f"{source}; {dlon:g}° grid ({grid.variable}); province outlines dissolved from the "
        "inventory's boundary file",
    )
    return fig


def style_cmap(name: str, n: int = 256) -> np.ndarray:
    """RGBA table of a named matplotlib colour map (``n`` entries)."""
    return colormaps[name](np.linspace(0.0, 1.0, n))


def change_maps(
    grid: GridTotal,
    pairs: Sequence[tuple[int, int]],
    provinces,
    *,
    label: str,
    scope: str,
    source: str,
    width_in: float = style.DOUBLE_COLUMN_IN,
) -> Figure:
    """Change in emission density between the years of each pair (one panel per pair).

    Diverging ``PuOr_r`` centred at zero (purple = decrease, orange = increase), one symmetric
    scale for every panel (the 99th percentile of the absolute changes).

    Notes
    -----
    Change (kg N2O-N km-2 yr-1) = density(year_to) - density(year_from); the rate is per year of
    emission, not per year of elapsed time.
    """
    have = set(grid.years.tolist())
    pairs = [(int(a), int(b)) for a, b in pairs if int(a) in have and int(b) in have and a != b]
    if not pairs:
        raise ValueError("change_maps: no pair of years is in the grid")
    diffs = [grid.density(b) - grid.density(a) for a, b in pairs]
    finite = np.concatenate([np.abs(d[np.isfinite(d)]) for d in diffs])
    vmax = float(np.percentile(finite[finite > 0], 99)) if (finite > 0).any() else 1.0
    norm = style.diverging_norm(vmax=vmax)
    dlon = grid.resolution_deg
    fig, axes, cmap, extent, geoms, (w, e, s, n) = _grid_panels(
        grid, provinces, len(pairs), width_in, style.CMAP_DIVERGING
    )
    for ax, (a, b), d in zip(axes.ravel(), pairs, diffs):
        ax.imshow(d, origin="lower", extent=extent, cmap=cmap, norm=norm, interpolation="nearest", zorder=1)
        draw_outlines(ax, geoms, halo=True)
        _geo_axes(ax, w, e, s, n)
        ax.set_title(f"{a} → {b}")
    for ax in axes.ravel()[len(pairs) :]:
        ax.set_visible(False)
    _label_outer(axes, len(pairs))
    cb = fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), shrink=0.85, extend="both", pad=0.02
    )
    cb.set_label("change, kg N2O-N km⁻² yr⁻¹")
    style.stamp(
        fig,
        label=label,
        scope=scope,
        units="kg N2O-N km-2 yr-1 (density in the later year minus the earlier)",
        source=f"{source}; {dlon:g}° grid; purple = decrease, orange = increase",
    )
    return fig


def province_value_map(
    provinces: pd.DataFrame,
    values: pd.Series,
    *,
    title: str,
    colorbar_label: str,
    label: str,
    scope: str,
    units: str,
    source: str,
    diverging: bool = True,
    width_in: float = style.SINGLE_COLUMN_IN * 1.3,
) -> Figure:
    """Choropleth of one value per province.

    ``provinces`` has ``province_code`` and ``geometry`` (shapely) columns; ``values`` is indexed
    by province code. Provinces without a value are hatched grey.
    """
    geoms = list(provinces["geometry"])
    w, e, s, n = _bounds_of(geoms)
    aspect = min(_map_aspect(w, e, s, n), 1.25)
    fig = style.new_figure(width_in, (width_in - 1.3) * aspect + 1.5)
    ax = fig.add_subplot()
    vals = values.reindex(provinces["province_code"].to_numpy()).to_numpy(float)
    if diverging:
        norm = style.diverging_norm(vals)
        cmap = mcolors.ListedColormap(style_cmap(style.CMAP_DIVERGING))
    else:
        finite = vals[np.isfinite(vals)]
        norm = mcolors.Normalize(
            float(finite.min()) if finite.size else 0.0, float(finite.max()) if finite.size else 1.0
        )
        cmap = mcolors.ListedColormap(style_cmap(style.CMAP_SEQUENTIAL))
    paths, facecolors, missing = [], [], []
    for geom, v in zip(geoms, vals):
        p = _polygon_path(geom)
        if p is None:
            continue
        if np.isfinite(v):
            paths.append(p)
            facecolors.append(cmap(norm(v)))
        else:
            missing.append(p)
    if paths:
        ax.add_collection(PathCollection(paths, facecolors=facecolors, edgecolors="#333333", linewidths=0.5, zorder=2))
    if missing:
        ax.add_collection(
            PathCollection(missing, facecolors="#dddddd", edgecolors="#333333", linewidths=0.5, hatch="///", zorder=2)
        )
    _geo_axes(ax, w, e, s, n)
    ax.set_title(title)
    style.colorbar(fig, ScalarMappable(norm=norm, cmap=cmap), ax, colorbar_label)
    style.stamp(fig, label=label, scope=scope, units=units, source=source)
    return fig


def site_map(
    sites: pd.DataFrame, provinces, *, label: str, source: str, width_in: float = style.SINGLE_COLUMN_IN * 1.3
) -> Figure:
    """Observation sites (``lon``, ``lat``, ``crop``, ``n_records`` columns) over province outlines.

    One marker and colour per crop (Okabe-Ito with distinct shapes, so the map reads in grey);
    marker area grows with the number of records at the site.
    """
    geoms = list(provinces)
    pts = sites.dropna(subset=["lon", "lat"])
    if geoms:
        w, e, s, n = _bounds_of(geoms)
    else:
        w, e, s, n = pts["lon"].min() - 1, pts["lon"].max() + 1, pts["lat"].min() - 1, pts["lat"].max() + 1
    aspect = min(_map_aspect(w, e, s, n), 1.25)
    fig = style.new_figure(width_in, (width_in - 0.7) * aspect + 1.9)
    ax = fig.add_subplot()
    if geoms:
        draw_outlines(ax, geoms, color="#777777")
    for i, (crop, g) in enumerate(pts.groupby("crop", sort=True)):
        ax.scatter(
            g["lon"],
            g["lat"],
            s=8 + 3 * np.sqrt(g["n_records"]),
            marker=style.MARKERS[i % len(style.MARKERS)],
            facecolor="none" if i % 2 else style.PALETTE[i % len(style.PALETTE)],
            edgecolor=style.PALETTE[i % len(style.PALETTE)],
            linewidth=0.9,
            label=crop,
            zorder=4,
        )
    _geo_axes(ax, w, e, s, n)
    ax.set_title("Observation sites")
    fig.legend(loc="outside upper center", ncol=min(3, max(1, pts["crop"].nunique())), title="crop")
    style.stamp(
        fig,
        label=label,
        scope="field N2O flux observations (measured totals, background included)",
        units="site positions in degrees (WGS84); marker area ~ records per site",
        source=source,
    )
    return fig

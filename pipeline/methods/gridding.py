"""Mass-conserving allocation of county emissions onto regular latitude-longitude grids.

The stage turns the county x crop x year table of the estimate stage into gridded annual totals
(kg N2O-N per cell per year) and provides the way back (grid -> county / province) that the
compare stage uses for EDGAR grids. Everything here is a pure function of arrays and frames;
the grid stage (:mod:`pipeline.stages.grid`) reads and writes the files.

Allocation
----------
For county ``c`` and grid cell ``k`` let ``f_ck`` be the exact fraction of the cell covered by
the county polygon (exactextract), ``A_k`` the cell's area on the sphere and ``p_k`` the proxy
(cropland fraction resampled to the grid; 1 when no proxy is configured). The weight is

    w_ck = f_ck A_k p_k / sum_j f_cj A_j p_j,

so ``sum_k w_ck = 1`` for every county and the grid holds every county's total by construction.
A county whose proxy is zero everywhere falls back to ``p = 1`` (area weights), with a log line.
A county too small to own a cell centre still has non-zero coverage fractions, so it keeps its
mass. The weights are a sparse county x cell matrix computed once per (boundaries, grid, proxy)
and cached under a SHA-256 of their content.

References
----------
Baston, D. (2023) exactextract: fast and accurate raster zonal statistics,
https://github.com/isciences/exactextract (exact cell coverage fractions).
Janssens-Maenhout, G. et al. (2019) EDGAR v4.3.2 Global Atlas of the three major greenhouse gas
emissions for the period 1970-2012, Earth Syst. Sci. Data 11, 959-1002 (0.1 deg grid layout).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.errors import ConfigError, InputError
from pipeline.methods.options import GridOptions

log = logging.getLogger(__name__)

#: Radius (m) of the sphere with the surface area of the WGS84 ellipsoid (authalic radius).
EARTH_AUTHALIC_RADIUS_M = 6_371_007.181
#: Bumped whenever the weight algorithm changes, so stale caches are never reused.
WEIGHTS_VERSION = "grid-weights-v1"
#: Coverage fractions at or below this are floating-point slivers (see coverage_fractions).
COVERAGE_EPS = 1e-9
# Tolerance, in cells, when snapping an extent to cell edges (absorbs 0.1 * 3 != 0.3).
_SNAP_TOL = 1e-6


# ---------------------------------------------------------------------------------------------
# Grid definition
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """A regular lat-lon grid whose cell edges are integer multiples of the resolution.

    Rows run south to north (latitude ascending, as EDGAR and CF files store it); the flat
    cell index is ``row * nlon + col``.

    Attributes
    ----------
    name
        Grid name (used in file names).
    resolution_deg
        Cell edge length, degrees.
    i_west, i_south
        West and south edges as integer multiples of the resolution.
    nlon, nlat
        Number of columns and rows.
    """

    name: str
    resolution_deg: float
    i_west: int
    i_south: int
    nlon: int
    nlat: int

    @property
    def shape(self) -> tuple[int, int]:
        """(nlat, nlon)."""
        return (self.nlat, self.nlon)

    @property
    def ncells(self) -> int:
        """Number of cells."""
        return self.nlat * self.nlon

    def _edges(self, start: int, n: int) -> np.ndarray:
        # Integer multiples then one rounding: 0.1 * 731 must print as 73.1, not 73.10000000000001.
        return np.round((start + np.arange(n + 1)) * self.resolution_deg, 10)

    @property
    def lon_edges(self) -> np.ndarray:
        """Cell edges in longitude, degrees east, ascending (nlon + 1)."""
        return self._edges(self.i_west, self.nlon)

    @property
    def lat_edges(self) -> np.ndarray:
        """Cell edges in latitude, degrees north, ascending (nlat + 1)."""
        return self._edges(self.i_south, self.nlat)

    @property
    def lon(self) -> np.ndarray:
        """Cell-centre longitudes, degrees east."""
        e = self.lon_edges
        return np.round(0.5 * (e[:-1] + e[1:]), 10)

    @property
    def lat(self) -> np.ndarray:
        """Cell-centre latitudes, degrees north, ascending."""
        e = self.lat_edges
        return np.round(0.5 * (e[:-1] + e[1:]), 10)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north), degrees."""
        lo, la = self.lon_edges, self.lat_edges
        return float(lo[0]), float(la[0]), float(lo[-1]), float(la[-1])

    def spec_bytes(self) -> bytes:
        """Canonical description used in the weights cache key."""
        return (f"{self.resolution_deg!r}|{self.i_west}|{self.i_south}|{self.nlon}|{self.nlat}").encode()


def make_grid(spec: GridOptions, boundary_bounds: Sequence[float] | None = None) -> Grid:
    """Build a :class:`Grid` from its config, filling unset sides from the boundaries.

    Parameters
    ----------
    spec
        Grid config: name, resolution (degrees) and optional west/east/south/north (degrees).
    boundary_bounds
        (west, south, east, north) of all county polygons, degrees; needed when a side is unset.

    Returns
    -------
    Grid
        Edges snapped outward to integer multiples of the resolution.
    """
    res = float(spec.resolution_deg)
    sides = {"west": spec.west, "south": spec.south, "east": spec.east, "north": spec.north}
    if any(v is None for v in sides.values()):
        if boundary_bounds is None:
            raise ConfigError(
                f"grid '{spec.name}': extent not set and no boundaries given. "
                "Fix: set west/east/south/north in the grid section of the config"
            )
        for key, value in zip(("west", "south", "east", "north"), boundary_bounds):
            if sides[key] is None:
                sides[key] = float(value)
    west, south, east, north = (float(sides[k]) for k in ("west", "south", "east", "north"))  # type: ignore[arg-type]
    i_w = math.floor(west / res + _SNAP_TOL)
    i_s = math.floor(south / res + _SNAP_TOL)
    i_e = math.ceil(east / res - _SNAP_TOL)
    i_n = math.ceil(north / res - _SNAP_TOL)
    if i_e <= i_w or i_n <= i_s:
        raise ConfigError(
            f"grid '{spec.name}': empty extent (west {sides['west']}, east {sides['east']}, "
            f"south {sides['south']}, north {sides['north']}). Fix: east > west and north > south"
        )
    return Grid(spec.name, res, i_w, i_s, i_e - i_w, i_n - i_s)


def cell_area_m2(grid: Grid) -> np.ndarray:
    """Area of each grid row's cells on the authalic sphere, m2 (one value per row, south first).

    Returns
    -------
    numpy.ndarray
        Shape (nlat,); every cell in a row has the same area.

    Notes
    -----
    A cell between latitudes phi1 < phi2 and longitudes lambda1 < lambda2 (radians) has area
    ``R**2 (lambda2 - lambda1) (sin phi2 - sin phi1)`` on a sphere of radius R. R is the WGS84
    authalic radius (6,371,007.181 m), so the sphere has the ellipsoid's total surface area. A
    0.1 deg cell at the equator is about 123.6 km2.

    References
    ----------
    Snyder, J. P. (1987) Map Projections - A Working Manual, USGS Prof. Paper 1395, p. 16-17
    (authalic sphere).
    """
    lat = np.deg2rad(grid.lat_edges)
    dlon = np.deg2rad(grid.resolution_deg)
    return EARTH_AUTHALIC_RADIUS_M**2 * dlon * np.diff(np.sin(lat))


# ---------------------------------------------------------------------------------------------
# Proxy resampling
# ---------------------------------------------------------------------------------------------
def _overlap_matrix(target_edges: np.ndarray, source_edges: np.ndarray) -> sp.csr_matrix:
    """Overlap length of every target interval with every source interval (both ascending)."""
    n_t, n_s = len(target_edges) - 1, len(source_edges) - 1
    rows, cols, vals = [], [], []
    # Each target interval meets a contiguous run of source intervals: find it by bisection.
    first = np.clip(np.searchsorted(source_edges, target_edges[:-1], side="right") - 1, 0, n_s - 1)
    last = np.clip(np.searchsorted(source_edges, target_edges[1:], side="left") - 1, 0, n_s - 1)
    for t in range(n_t):
        s = np.arange(first[t], last[t] + 1)
        ov = np.minimum(target_edges[t + 1], source_edges[s + 1]) - np.maximum(target_edges[t], source_edges[s])
        keep = ov > 0
        rows.append(np.full(int(keep.sum()), t))
        cols.append(s[keep])
        vals.append(ov[keep])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_t, n_s))


def resample_proxy(
    values: np.ndarray, west: float, north: float, xres: float, yres: float, grid: Grid, nodata: float | None = None
) -> np.ndarray:
    """Area-weighted average of a north-up lat-lon raster over each grid cell.

    Parameters
    ----------
    values
        Proxy raster (rows north to south), e.g. cropland fraction 0-1.
    west, north
        Coordinates of the raster's upper-left corner, degrees.
    xres, yres
        Pixel size, degrees (both positive).
    grid
        Target grid.
    nodata
        Value marking missing pixels (NaN is always missing).

    Returns
    -------
    numpy.ndarray
        (nlat, nlon) float64, rows south to north. Missing pixels and the part of a cell outside
        the raster count as proxy 0 (no cropland), so the result is the mean over the whole cell.

    Notes
    -----
    On the sphere the area of a lat-lon rectangle is proportional to
    ``(lambda2 - lambda1)(sin phi2 - sin phi1)``, which separates into a longitude factor and a
    latitude factor. The exact area-weighted mean over cell (i, j) is therefore
    ``(Y P X^T)_ij / a_ij`` with ``X`` the overlap lengths in longitude, ``Y`` the overlaps in
    sin(latitude) and ``a_ij`` the cell's own extent in those coordinates: two sparse products,
    no polygon clipping, exact for any pair of lat-lon grids.
    """
    v = np.asarray(values, dtype=np.float64)[::-1]  # rows south to north
    missing = ~np.isfinite(v)
    if nodata is not None and np.isfinite(nodata):
        missing |= v == nodata
    v = np.where(missing, 0.0, v)
    ny, nx = v.shape
    src_lon = west + xres * np.arange(nx + 1)
    src_lat = (north - yres * ny) + yres * np.arange(ny + 1)
    x = _overlap_matrix(grid.lon_edges, src_lon)
    y = _overlap_matrix(np.sin(np.deg2rad(grid.lat_edges)), np.sin(np.deg2rad(src_lat)))
    summed = np.asarray((y @ sp.csr_matrix(v) @ x.T).todense())
    cell = np.outer(np.diff(np.sin(np.deg2rad(grid.lat_edges))), np.diff(grid.lon_edges))
    return summed / cell


# ---------------------------------------------------------------------------------------------
# Coverage fractions and weights
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Coverage:
    """Exact polygon-cell coverage fractions, one entry per (county, cell) pair.

    ``county_idx`` indexes ``county_codes`` (sorted); ``cell`` is the flat south-up cell index;
    ``fraction`` is the share of the cell's (lon-lat) area inside the polygon, in (0, 1].
    """

    county_codes: np.ndarray
    county_idx: np.ndarray
    cell: np.ndarray
    fraction: np.ndarray


def coverage_fractions(geometries: Sequence, county_codes: Sequence[int], grid: Grid) -> Coverage:
    """Exact coverage fraction of every grid cell by every county polygon (exactextract).

    Parameters
    ----------
    geometries
        Shapely polygons or multipolygons, EPSG:4326, one per county.
    county_codes
        6-digit codes, unique, aligned with ``geometries``.
    grid
        Target grid.

    Returns
    -------
    Coverage
        Entries sorted by (county, cell). A county outside the grid has no entry.

    Notes
    -----
    exactextract clips each polygon against the cell edges and returns the exact covered share
    of each cell, in lon-lat coordinates; it therefore also credits counties smaller than a
    cell, which a cell-centre rasterisation would drop.

    References
    ----------
    Baston, D. (2023) exactextract, https://github.com/isciences/exactextract.
    """
    import geopandas as gpd
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    codes = np.asarray(county_codes, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    codes_sorted = codes[order]
    if len(codes_sorted) and (np.diff(codes_sorted) == 0).any():
        dup = codes_sorted[1:][np.diff(codes_sorted) == 0][0]
        raise ValueError(f"duplicate county code {dup}")
    w, s, e, n = grid.bounds
    # exactextract needs a raster to define the grid; one byte per cell is the cheapest.
    dummy = np.zeros(grid.shape, dtype=np.uint8)
    src = NumPyRasterSource(dummy, xmin=w, ymin=s, xmax=e, ymax=n)
    gdf = gpd.GeoDataFrame({"_i": np.arange(len(codes))}, geometry=list(geometries), crs="EPSG:4326")
    gdf = gdf.iloc[order].reset_index(drop=True)
    gdf["_i"] = np.arange(len(gdf))
    gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
    if len(gdf) == 0:
        return Coverage(codes_sorted, np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0))
    df = exact_extract(src, gdf, ["cell_id", "coverage"], include_cols=["_i"], output="pandas")
    sizes = df["cell_id"].map(len).to_numpy()
    county_idx = np.repeat(df["_i"].to_numpy(np.int32), sizes)
    cell_top = np.concatenate(df["cell_id"].to_list()).astype(np.int64) if sizes.sum() else np.zeros(0, np.int64)
    frac = np.concatenate(df["coverage"].to_list()).astype(np.float64) if sizes.sum() else np.zeros(0)
    # exactextract numbers rows from the north; this module's rows run south to north.
    row_top, col = np.divmod(cell_top, grid.nlon)
    cell = (grid.nlat - 1 - row_top) * grid.nlon + col
    # Polygon edges that lie on cell edges leave slivers of ~1e-13 of a cell in the neighbour
    # (0.1 is not a binary fraction). They are rounding noise (< 0.1 m2), dropped unless they are
    # all a county has.
    big = frac > COVERAGE_EPS
    has_big = np.bincount(county_idx[big], minlength=len(codes)) > 0
    keep = big | ((frac > 0) & ~has_big[county_idx])
    county_idx, cell, frac = county_idx[keep], cell[keep], frac[keep]
    o = np.lexsort((cell, county_idx))
    return Coverage(codes_sorted, county_idx[o], cell[o], frac[o])


@dataclass(frozen=True)
class Weights:
    """Allocation weights county -> cell, and the structures that apply them fast.

    Attributes
    ----------
    grid
        The grid.
    county_codes
        Sorted county codes (rows of the weight matrix).
    county_idx, cell, coverage, weight
        One entry per (county, cell) pair, sorted by (county, cell); ``weight`` sums to 1 per
        county.
    fallback_codes
        Counties whose proxy was zero everywhere and that were allocated by area instead.
    key
        Content hash the weights were cached under.
    """

    grid: Grid
    county_codes: np.ndarray
    county_idx: np.ndarray
    cell: np.ndarray
    coverage: np.ndarray
    weight: np.ndarray
    fallback_codes: tuple[int, ...] = ()
    key: str = ""
    _fast: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def matrix(self) -> sp.csr_matrix:
        """Weights as a (counties x cells) CSR matrix."""
        return sp.csr_matrix(
            (self.weight, (self.county_idx, self.cell)), shape=(len(self.county_codes), self.grid.ncells)
        )

    def gather_plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, sp.csr_matrix]:
        """Structures for :func:`allocate`: cells owned by one county, and the rest.

        Returns ``(owner, owner_weight, shared_cells, shared_matrix)``: ``owner`` (ncells,)
        holds the county index of the only county touching each cell (``n_counties`` -- a
        zero row -- when none or several do); ``shared_matrix`` (len(shared_cells) x counties)
        holds the weights of cells touched by several counties.
        """
        if "plan" not in self._fast:
            n_c, ncells = len(self.county_codes), self.grid.ncells
            counts = np.bincount(self.cell, minlength=ncells)
            single = counts[self.cell] == 1
            owner = np.full(ncells, n_c, dtype=np.intp)
            owner[self.cell[single]] = self.county_idx[single]
            owner_weight = np.zeros(ncells, dtype=np.float64)
            owner_weight[self.cell[single]] = self.weight[single]
            shared_cells, inverse = np.unique(self.cell[~single], return_inverse=True)
            shared = sp.csr_matrix(
                (self.weight[~single], (inverse.ravel(), self.county_idx[~single])), shape=(len(shared_cells), n_c)
            )
            self._fast["plan"] = (owner, owner_weight, shared_cells, shared)
        return self._fast["plan"]


def allocation_weights(cov: Coverage, grid: Grid, proxy: np.ndarray | None = None) -> Weights:
    """Normalised allocation weights from coverage fractions, cell areas and an optional proxy.

    Parameters
    ----------
    cov
        Coverage fractions from :func:`coverage_fractions`.
    grid
        The grid they refer to.
    proxy
        (nlat, nlon) proxy on the grid (cropland fraction, rows south to north), or ``None``.

    Returns
    -------
    Weights
        ``weight`` sums to one for every county that touches the grid.

    Raises
    ------
    ConfigError
        A county has no cell in the grid (the extent does not cover it).

    Notes
    -----
    ``w_ck = f_ck A_k p_k / sum_j f_cj A_j p_j`` with coverage fraction ``f``, spherical cell area
    ``A`` (m2) and proxy ``p``. A county whose ``sum_j f_cj A_j p_j`` is zero falls back to
    ``p = 1``. Because the weights are normalised per county, mass is conserved exactly up to
    floating-point rounding, whatever the proxy.
    """
    n_c = len(cov.county_codes)
    present = np.bincount(cov.county_idx, minlength=n_c) > 0
    if not present.all():
        missing = cov.county_codes[~present]
        raise ConfigError(
            f"grid '{grid.name}': {len(missing)} county polygon(s) lie outside the grid extent "
            f"{grid.bounds} or are empty (first: {', '.join(str(c) for c in missing[:5])}). "
            "Fix: widen or unset west/east/south/north of this grid in the config"
        )
    area = cell_area_m2(grid)[cov.cell // grid.nlon]
    base = cov.fraction * area
    fallback: tuple[int, ...] = ()
    raw = base
    if proxy is not None:
        p = np.asarray(proxy, dtype=np.float64).ravel()
        if p.shape[0] != grid.ncells:
            raise ValueError(f"proxy has {p.shape[0]} cells, grid has {grid.ncells}")
        p = np.where(np.isfinite(p) & (p > 0), p, 0.0)
        raw = base * p[cov.cell]
        total = np.bincount(cov.county_idx, weights=raw, minlength=n_c)
        zero = total <= 0
        if zero.any():
            fallback = tuple(int(c) for c in cov.county_codes[zero])
            log.info(
                "grid %s: proxy is zero over %d county(ies), allocated by area instead: %s",
                grid.name,
                len(fallback),
                ", ".join(map(str, fallback[:20])) + (" ..." if len(fallback) > 20 else ""),
            )
            raw = np.where(zero[cov.county_idx], base, raw)
    total = np.bincount(cov.county_idx, weights=raw, minlength=n_c)
    weight = raw / total[cov.county_idx]
    return Weights(grid, cov.county_codes, cov.county_idx, cov.cell, cov.fraction, weight, fallback)


def weights_key(geometries: Sequence, county_codes: Sequence[int], grid: Grid, proxy: np.ndarray | None) -> str:
    """SHA-256 of everything the weights depend on: geometry WKB + codes, grid, proxy values.

    The key follows content, not file names: renaming a file keeps the cache, moving one
    vertex or one proxy pixel invalidates it.
    """
    import shapely

    h = hashlib.sha256(WEIGHTS_VERSION.encode())
    codes = np.asarray(county_codes, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    h.update(codes[order].tobytes())
    geoms = np.asarray(list(geometries), dtype=object)[order]
    for wkb in shapely.to_wkb(geoms, hex=False, output_dimension=2, byte_order=1):
        h.update(len(wkb).to_bytes(8, "little"))
        h.update(wkb)
    h.update(grid.spec_bytes())
    if proxy is None:
        h.update(b"no-proxy")
    else:
        p = np.ascontiguousarray(proxy, dtype=np.float64)
        h.update(repr(p.shape).encode())
        h.update(p.tobytes())
    return h.hexdigest()


def weights_to_arrays(w: Weights) -> dict[str, np.ndarray]:
    """The arrays that persist a :class:`Weights` (for the cache)."""
    g = w.grid
    return {
        "county_codes": w.county_codes,
        "county_idx": w.county_idx,
        "cell": w.cell,
        "coverage": w.coverage,
        "weight": w.weight,
        "fallback_codes": np.asarray(w.fallback_codes, dtype=np.int64),
        "grid": np.asarray([g.i_west, g.i_south, g.nlon, g.nlat], dtype=np.int64),
        "resolution_deg": np.asarray([g.resolution_deg]),
        "key": np.asarray([w.key]),
    }


def weights_from_arrays(arrays: dict[str, np.ndarray], grid: Grid) -> Weights:
    """Rebuild :class:`Weights` from :func:`weights_to_arrays`; checks the grid matches."""
    gi = tuple(int(v) for v in arrays["grid"])
    if (
        gi != (grid.i_west, grid.i_south, grid.nlon, grid.nlat)
        or float(arrays["resolution_deg"][0]) != grid.resolution_deg
    ):
        raise ValueError("cached weights belong to another grid")
    return Weights(
        grid,
        arrays["county_codes"],
        arrays["county_idx"],
        arrays["cell"],
        arrays["coverage"],
        arrays["weight"],
        tuple(int(c) for c in arrays["fallback_codes"]),
        str(arrays["key"][0]),
    )


# ---------------------------------------------------------------------------------------------
# Applying the weights
# ---------------------------------------------------------------------------------------------
def allocate(weights: Weights, county_values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Spread county values over the grid: ``grid_k = sum_c w_ck v_c`` for each layer.

    Parameters
    ----------
    weights
        Allocation weights.
    county_values
        (n_counties,) or (n_counties, n_layers) values aligned with ``weights.county_codes``,
        e.g. kg N2O-N per year per crop.
    out
        Optional preallocated float64 buffer of shape (n_layers, nlat, nlon).

    Returns
    -------
    numpy.ndarray
        (n_layers, nlat, nlon) float64 (or (nlat, nlon) for 1-D input), rows south to north.

    Notes
    -----
    Most cells touch a single county: for those the product is an index gather,
    ``grid_k = w_k v[owner_k]`` (a dense pass at memory bandwidth). Cells shared by several
    counties (borders) go through a small sparse product. The result equals ``W^T v``.
    """
    v = np.asarray(county_values, dtype=np.float64)
    squeeze = v.ndim == 1
    v2 = v[:, None] if squeeze else v
    n_c, n_layers = v2.shape
    if n_c != len(weights.county_codes):
        raise ValueError(f"{n_c} county values for {len(weights.county_codes)} counties")
    owner, owner_weight, shared_cells, shared = weights.gather_plan()
    g = weights.grid
    if out is None:
        out = np.empty((n_layers, g.nlat, g.nlon), dtype=np.float64)
    flat = out.reshape(n_layers, g.ncells)
    table = np.zeros(n_c + 1, dtype=np.float64)  # last row: cells owned by nobody get 0
    shared_vals = shared @ v2
    for j in range(n_layers):
        table[:n_c] = v2[:, j]
        # mode="clip" lets numpy write straight into `out` (mode="raise" buffers a copy);
        # owner indices are in range by construction.
        np.take(table, owner, out=flat[j], mode="clip")
        np.multiply(flat[j], owner_weight, out=flat[j])
        flat[j, shared_cells] = shared_vals[:, j]
    return out[0] if squeeze else out


def zonal_matrix(weights: Weights) -> sp.csr_matrix:
    """Grid -> county aggregation matrix Z (counties x cells) from the cached coverage.

    Notes
    -----
    ``Z_ck = f_ck / sum_d f_dk``: a cell's mass is shared among the counties that cover it in
    proportion to their coverage, so mass in cells touched by counties is conserved; mass in
    cells no county touches (open sea) is not attributed. On polygons aligned to cell edges
    ``Z = (W > 0)`` and ``Z W^T = I``: an allocated field aggregates back to every county total.
    """
    cover_sum = np.bincount(weights.cell, weights=weights.coverage, minlength=weights.grid.ncells)
    z = weights.coverage / cover_sum[weights.cell]
    return sp.csr_matrix(
        (z, (weights.county_idx, weights.cell)), shape=(len(weights.county_codes), weights.grid.ncells)
    )


def aggregate_to_counties(weights: Weights, grid_values: np.ndarray) -> np.ndarray:
    """Sum a gridded field (mass per cell) to counties with :func:`zonal_matrix`.

    Parameters
    ----------
    weights
        Weights of the grid the field is on.
    grid_values
        (nlat, nlon) or (n_layers, nlat, nlon), rows south to north, mass per cell.

    Returns
    -------
    numpy.ndarray
        (n_counties,) or (n_counties, n_layers), aligned with ``weights.county_codes``.
    """
    z = weights._fast.get("zonal")
    if z is None:
        z = weights._fast["zonal"] = zonal_matrix(weights)
    gv = np.asarray(grid_values, dtype=np.float64)
    if gv.ndim == 2:
        return z @ gv.ravel()
    return np.asarray(z @ gv.reshape(gv.shape[0], -1).T)


def aggregate_to_provinces(county_codes: np.ndarray, county_values: np.ndarray) -> pd.DataFrame:
    """Sum county values (1-D) by province (first two digits of the code)."""
    df = pd.DataFrame({"province_code": np.asarray(county_codes) // 10_000, "value": county_values})
    return df.groupby("province_code", as_index=False)["value"].sum()


# ---------------------------------------------------------------------------------------------
# County table -> yearly slabs
# ---------------------------------------------------------------------------------------------
def county_matrix(
    table: pd.DataFrame,
    county_codes: np.ndarray,
    crops: Sequence[str],
    value: str = "n2o_n_kg_mean",
    source: str = "county.parquet",
) -> tuple[np.ndarray, np.ndarray]:
    """Pivot the county table into (years, counties, crops) aligned with the weights' counties.

    Counties in ``county_codes`` absent from the table get zero. A county in the table but not
    in the boundaries raises :class:`InputError` naming it.

    Returns
    -------
    years, values
        Sorted years and the float64 array of ``value`` (kg N2O-N per year).
    """
    codes = np.asarray(county_codes, dtype=np.int64)
    tc = table["county_code"].to_numpy(np.int64)
    pos = np.searchsorted(codes, tc)
    pos_c = np.clip(pos, 0, max(len(codes) - 1, 0))
    unknown = (len(codes) == 0) | (codes[pos_c] != tc) if len(codes) else np.ones(len(tc), bool)
    if unknown.any():
        bad = sorted(set(tc[unknown].tolist()))
        row = int(np.flatnonzero(unknown)[0]) + 1
        raise InputError(
            source,
            f"{len(bad)} county code(s) have emissions but no boundary polygon "
            f"({', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''})",
            "map them to present-day codes in the crosswalk, or add their polygons to the boundaries",
            row=row,
            column="county_code",
        )
    crop_pos = {c: i for i, c in enumerate(crops)}
    unknown_crop = ~table["crop"].isin(list(crops)).to_numpy()
    if unknown_crop.any():
        row = int(np.flatnonzero(unknown_crop)[0]) + 1
        raise InputError(
            source,
            f"crop '{table['crop'].iloc[row - 1]}' is not a configured crop",
            f"use one of {', '.join(crops)}",
            row=row,
            column="crop",
        )
    years = np.unique(table["year"].to_numpy(np.int64))
    out = np.zeros((len(years), len(codes), len(crops)), dtype=np.float64)
    yi = np.searchsorted(years, table["year"].to_numpy(np.int64))
    ci = table["crop"].map(crop_pos).to_numpy(np.int64)
    vals = table[value].to_numpy(np.float64)
    if not np.isfinite(vals).all():
        row = int(np.flatnonzero(~np.isfinite(vals))[0]) + 1
        raise InputError(
            source, f"'{value}' is missing or not finite", "re-run the estimate stage", row=row, column=value
        )
    np.add.at(out, (yi, pos, ci), vals)
    return years, out


#: Rows of the grid processed at once by :func:`year_layers` (a few MB of float64 per layer,
#: so the per-layer passes run from cache instead of from memory). Fixed, not tuned to the
#: machine: the block sums of the mass check depend on it, and must not depend on the machine.
BLOCK_ROWS = 64


def year_layers(
    weights: Weights,
    values_year: np.ndarray,
    n_crops: int,
    cell_area_row_m2: np.ndarray,
    seconds: float,
    domain: np.ndarray,
    fill: float,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One year's float32 output layers, allocated and derived in one pass over the grid.

    Parameters
    ----------
    weights
        Allocation weights.
    values_year
        (n_counties, n_crops + n_extra) float, aligned with ``weights.county_codes``: kg N2O-N
        per year per crop, then any further layers to allocate (e.g. interval bounds).
    n_crops
        Number of crop layers at the start of ``values_year``.
    cell_area_row_m2
        (nlat,) cell area per row, m2 (:func:`cell_area_m2`).
    seconds
        Length of the calendar year, s (:func:`year_seconds`).
    domain
        (nlat, nlon) bool from :func:`grid_domain`.
    fill
        Value written outside the domain.
    out
        Optional float32 array (n_crops + 2 + n_extra, nlat, nlon) to write into, rows south to
        north; it may be a view, e.g. ``buf[:, ::-1]`` of a north-up buffer that a GeoTIFF
        writer then takes as it is. Reused from year to year, it saves faulting in fresh pages
        of a new gigabyte array every year.

    Returns
    -------
    stack, layer_sums
        ``stack``: float32 ``[total, crop_1 .. crop_n, flux, extra ...]``, rows south to north;
        ``layer_sums``: float64 (n_crops + n_extra,), the sum over the grid of each allocated
        layer before the cast to float32 (what the mass check compares with the unit totals).

    Notes
    -----
    Per layer ``m_k = w_k v[owner_k]`` on cells owned by one county and ``m_k = (W^T v)_k`` on
    cells shared by several (:func:`allocate`); ``total = sum_crops m`` (kg per cell per year)
    and the flux density ``F = total / (A_row * seconds)`` in kg m-2 s-1. Everything is computed
    in float64 and cast to float32 once (relative rounding 6e-8 per cell).

    The grid is processed in blocks of :data:`BLOCK_ROWS` rows, so each layer's gather,
    product, sum and cast touch a few megabytes that stay in cache, instead of making a pass
    over a full float64 slab per step. ``layer_sums`` adds the per-block sums in block order:
    the same bits for the same inputs on any machine, thread or worker.
    """
    v = np.asarray(values_year, dtype=np.float64)
    n_c, n_layers = v.shape
    if n_c != len(weights.county_codes):
        raise ValueError(f"{n_c} county values for {len(weights.county_codes)} counties")
    if not 0 < n_crops <= n_layers:
        raise ValueError(f"n_crops = {n_crops} for {n_layers} layers")
    owner, owner_weight, shared_cells, shared = weights.gather_plan()
    nlat, nlon = weights.grid.shape
    n_out = n_layers + 2
    if out is None:
        out = np.empty((n_out, nlat, nlon), dtype=np.float32)
    elif out.shape != (n_out, nlat, nlon) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {(n_out, nlat, nlon)}, got {out.dtype} {out.shape}")
    tables = np.zeros((n_layers, n_c + 1), dtype=np.float64)  # last entry: cells owned by nobody
    tables[:, :n_c] = v.T
    shared_vals = np.ascontiguousarray((shared @ v).T)  # (n_layers, n_shared)
    per_second = np.asarray(cell_area_row_m2, dtype=np.float64) * seconds  # m2 s per row
    outside = ~np.asarray(domain, dtype=bool)
    # Where each layer of ``values_year`` goes in the stack: crops after the total, extras after the flux.
    dest = [1 + j if j < n_crops else 2 + j for j in range(n_layers)]
    n_blocks = -(-nlat // BLOCK_ROWS)
    block_sums = np.zeros((n_blocks, n_layers), dtype=np.float64)
    cells = BLOCK_ROWS * nlon
    layer = np.empty(cells, dtype=np.float64)
    total = np.empty(cells, dtype=np.float64)
    for b in range(n_blocks):
        r0, r1 = b * BLOCK_ROWS, min((b + 1) * BLOCK_ROWS, nlat)
        a, z = r0 * nlon, r1 * nlon
        s0, s1 = np.searchsorted(shared_cells, (a, z))
        at_shared = shared_cells[s0:s1] - a
        own, ow = owner[a:z], owner_weight[a:z]
        m, tot = layer[: z - a], total[: z - a]
        m_rows, tot_rows = m.reshape(r1 - r0, nlon), tot.reshape(r1 - r0, nlon)
        for j in range(n_layers):
            # mode="clip" writes straight into ``m`` (mode="raise" buffers a copy); the owner
            # indices are in range by construction.
            np.take(tables[j], own, out=m, mode="clip")
            np.multiply(m, ow, out=m)
            m[at_shared] = shared_vals[j, s0:s1]
            block_sums[b, j] = m.sum()
            if j < n_crops:
                if j == 0:
                    tot[:] = m
                else:
                    tot += m
            out[dest[j], r0:r1] = m_rows  # by rows: ``out`` may be a view (e.g. flipped north-up)
        out[0, r0:r1] = tot_rows
        np.divide(tot_rows, per_second[r0:r1, None], out=tot_rows)
        out[1 + n_crops, r0:r1] = tot_rows
        mask = outside[r0:r1]
        if mask.any():
            for k in range(n_out):
                np.copyto(out[k, r0:r1], np.float32(fill), where=mask)
    return out, block_sums.sum(axis=0)


def iter_year_stacks(
    weights: Weights,
    values: np.ndarray,
    n_crops: int,
    years: Sequence[int] | np.ndarray,
    fill: float,
    years_in_flight: int = 2,
    client: object | None = None,
    buffer: Callable[[], np.ndarray] | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(year_index, stack, layer_sums)`` of :func:`year_layers` in year order.

    Parameters
    ----------
    weights
        Allocation weights.
    values
        (n_years, n_counties, n_layers) kg N2O-N per year (crops first, then extra layers).
    n_crops, fill
        As in :func:`year_layers`.
    years
        Calendar years of ``values`` (for the length of each year in seconds).
    years_in_flight
        Years computed at once (in parallel over years).
    client
        A ``distributed.Client``: the years run on its workers (the weights are scattered to
        every worker once); otherwise on the active local Dask scheduler.
    buffer
        Local scheduler only: a function returning the float32 buffer the next year is written
        into (the caller recycles the buffers of years it has finished with, so no new pages
        are faulted in year after year); ``None`` allocates one per year.

    Notes
    -----
    Both paths run the same function on the same inputs, so the stacks and sums are the same
    bits on threads and on a cluster.
    """
    import dask

    n_years = values.shape[0]
    area_row = cell_area_m2(weights.grid)
    domain = grid_domain(weights)
    seconds = year_seconds(years)
    args = (n_crops, area_row)
    if client is not None:
        w_ref = client.scatter(weights, broadcast=True, hash=False)  # type: ignore[attr-defined]
        d_ref = client.scatter(domain, broadcast=True, hash=False)  # type: ignore[attr-defined]
        for start in range(0, n_years, years_in_flight):
            idx = list(range(start, min(start + years_in_flight, n_years)))
            futures = [
                client.submit(year_layers, w_ref, values[i], *args, seconds[i], d_ref, fill, pure=False)  # type: ignore[attr-defined]
                for i in idx
            ]
            for i, f in zip(idx, futures):
                stack, sums = f.result()
                f.release()
                yield i, stack, sums
        return
    # Named explicitly: tokenising the weight arrays or the buffers would hash gigabytes.
    w_ref = dask.delayed(weights, name=f"grid-weights-{weights.key or id(weights)}", traverse=False)
    d_ref = dask.delayed(domain, name=f"grid-domain-{weights.key or id(weights)}", traverse=False)
    for start in range(0, n_years, years_in_flight):
        idx = list(range(start, min(start + years_in_flight, n_years)))
        tasks = [
            dask.delayed(year_layers, pure=False)(
                w_ref, values[i], *args, seconds[i], d_ref, fill, buffer() if buffer is not None else None
            )
            for i in idx
        ]
        for i, (stack, sums) in zip(idx, dask.compute(*tasks)):
            yield i, stack, sums


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------
def mass_check(years: np.ndarray, crops: Sequence[str], values: np.ndarray, grid_totals: np.ndarray) -> pd.DataFrame:
    """Per year x crop: county total, grid total (kg N2O-N) and relative difference."""
    county = values.sum(axis=1)
    rows = []
    for i, y in enumerate(years):
        for j, c in enumerate(crops):
            a, b = float(county[i, j]), float(grid_totals[i, j])
            rows.append(
                {
                    "year": int(y),
                    "crop": c,
                    "county_total_kg": a,
                    "grid_total_kg": b,
                    "rel_diff": 0.0 if a == b else abs(b - a) / max(abs(a), 1e-300),
                }
            )
    return pd.DataFrame(rows)


def zonal_check(weights: Weights, county_totals: np.ndarray, grid_field: np.ndarray) -> pd.DataFrame:
    """Grid -> county round trip: per-county aggregated vs original totals and relative difference."""
    back = aggregate_to_counties(weights, grid_field)
    orig = np.asarray(county_totals, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(orig > 0, (back - orig) / np.where(orig > 0, orig, 1.0), np.nan)
    return pd.DataFrame(
        {
            "grid": weights.grid.name,
            "county_code": weights.county_codes,
            "province_code": weights.county_codes // 10_000,
            "county_total_kg": orig,
            "grid_to_county_kg": back,
            "rel_diff": rel,
        }
    )


def province_zonal_check(county_check: pd.DataFrame) -> pd.DataFrame:
    """Province sums of :func:`zonal_check` and their relative difference."""
    p = county_check.groupby(["grid", "province_code"], as_index=False)[["county_total_kg", "grid_to_county_kg"]].sum()
    p["rel_diff"] = np.where(
        p["county_total_kg"] > 0,
        (p["grid_to_county_kg"] - p["county_total_kg"]) / p["county_total_kg"].where(p["county_total_kg"] > 0, 1.0),
        np.nan,
    )
    return p


# ---------------------------------------------------------------------------------------------
# Output layers
# ---------------------------------------------------------------------------------------------
def grid_domain(weights: Weights) -> np.ndarray:
    """(nlat, nlon) bool: True where at least one unit polygon covers part of the cell.

    Cells outside it (sea, neighbouring countries) are ``_FillValue`` / nodata in the outputs;
    cells inside with no emission are 0.
    """
    d = np.zeros(weights.grid.ncells, dtype=bool)
    d[weights.cell] = True
    return d.reshape(weights.grid.shape)


def year_seconds(years: Sequence[int] | np.ndarray) -> np.ndarray:
    """Length of each calendar year in seconds (365 or 366 days of 86,400 s, Gregorian)."""
    y = np.asarray(years, dtype=np.int64)
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    return np.where(leap, 366.0, 365.0) * 86_400.0

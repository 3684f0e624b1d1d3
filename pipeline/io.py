"""All file input and output of the pipeline.

Readers turn user files into frames carrying ``_file``/``_row`` so errors can point at a cell;
writers never leave a half-written file (write to a temporary file in the same folder, then
``os.replace``). Stage modules call these functions and do no file I/O of their own.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipeline.errors import InputError

TABLE_SUFFIXES = (".csv", ".txt", ".parquet", ".pq", ".xlsx", ".xls")


# ---------------------------------------------------------------------------------------------
# Locating and hashing inputs
# ---------------------------------------------------------------------------------------------
def expand_paths(path: str | Path, suffixes: Sequence[str] = TABLE_SUFFIXES) -> list[Path]:
    """A file, every table file in a folder, or every match of a glob, sorted by name."""
    p = Path(path)
    if p.is_dir():
        files = [f for f in sorted(p.iterdir()) if f.suffix.lower() in suffixes and not f.name.startswith(".")]
    elif any(ch in str(path) for ch in "*?["):
        files = [Path(f) for f in sorted(glob.glob(str(path)))]
    else:
        files = [p]
    if not files:
        raise InputError(path, "no input files found", "check the path in the config's `inputs:`")
    missing = [f for f in files if not f.exists()]
    if missing:
        raise InputError(
            missing[0],
            "file not found",
            "check the path in the config's `inputs:`, or run `make demo-data` for the demo world",
        )
    return files


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inputs_sha256(paths: Sequence[str | Path]) -> dict[str, str]:
    """SHA-256 of each file, keyed by file name (not by the machine's absolute path)."""
    return {Path(p).name: file_sha256(p) for p in paths}


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a Parquet table written by this pipeline (a clear error if missing or corrupt)."""
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise InputError(path, "file not found", "run the stage that writes it first (see `make help`)") from None
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(
            path,
            f"cannot read Parquet ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            "check permissions and disk; if the file is corrupt, delete it and re-run the stage that writes it",
        ) from None


def read_json(path: str | Path) -> Any:
    """Read a JSON document (a clear error if missing or corrupt)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file not found", "run the stage that writes it first (see `make help`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})", "delete it and re-run the stage that writes it") from None


# ---------------------------------------------------------------------------------------------
# Atomic writers
# ---------------------------------------------------------------------------------------------
#: Temporary files of :func:`atomic_path` are ``.<target name>.<random>.tmp`` beside the target.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` only on success.

    A process killed with SIGKILL cannot remove its temporary file
    (``.<name>.<random>.tmp``); :func:`remove_temp_files` does so when the stage next starts.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Remove the leftover temporary files of :func:`atomic_path` under ``folder`` (recursively).

    Called when a stage starts (the build lock keeps another run from writing there at the
    same time); returns the files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for f in sorted(folder.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")):
        if f.is_file() and f.name.startswith(TEMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed.append(f)
    return removed


def invalidate(manifest: str | Path) -> None:
    """Remove a stage's manifest before the stage rewrites its outputs.

    Every file is written atomically, but a stage writes several; without its manifest a stage
    that failed half-way is visibly incomplete, and ``make`` reruns it.
    """
    with contextlib.suppress(FileNotFoundError):
        os.remove(manifest)


def write_with(target: str | Path, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result onto ``target``."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_parquet(
    df: pd.DataFrame,
    target: str | Path,
    metadata: dict[str, str] | None = None,
    column_units: dict[str, str] | None = None,
) -> Path:
    """Write a frame as Parquet, deterministically (no index, fixed compression).

    ``metadata`` goes into the file's key-value schema metadata (e.g. units, scope, label, input
    hashes: ``pyarrow.parquet.read_schema(path).metadata``); ``column_units`` adds a ``units``
    entry to the field metadata of the named columns.
    """
    if not metadata and not column_units:
        return write_with(target, lambda p: df.to_parquet(p, index=False, compression="zstd"))
    return write_with(
        target, lambda p: _write_arrow(_with_metadata(pa_table_from_pandas(df), metadata, column_units), p)
    )


def pa_table_from_pandas(df: pd.DataFrame) -> Any:
    """The Arrow table pandas would write (no index)."""
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False)


def _with_metadata(table: Any, metadata: dict[str, str] | None, column_units: dict[str, str] | None) -> Any:
    import pyarrow as pa

    fields = []
    for f in table.schema:
        if column_units and f.name in column_units:
            f = f.with_metadata({**(f.metadata or {}), b"units": column_units[f.name].encode()})
        fields.append(f)
    meta = dict(table.schema.metadata or {})
    meta.update({str(k).encode(): str(v).encode() for k, v in sorted((metadata or {}).items())})
    return table.cast(pa.schema(fields, metadata=meta))


def _write_arrow(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path, compression="zstd")


def write_geoparquet(
    gdf: Any, target: str | Path, metadata: dict[str, str] | None = None, column_units: dict[str, str] | None = None
) -> Path:
    """Write a GeoDataFrame as GeoParquet 1.0 (WKB, ``geo`` metadata) plus our schema metadata."""
    import pyarrow as pa

    def write(p: Path) -> None:
        gdf.to_parquet(p, index=False, compression="zstd", schema_version="1.0.0")
        if metadata or column_units:
            import pyarrow.parquet as pq

            table = pq.read_table(p)
            _write_arrow(_with_metadata(pa.table(table), metadata, column_units), p)

    return write_with(target, write)


def write_png(fig: Any, target: str | Path, label: str = "", dpi: int = 120) -> Path:
    """Write a matplotlib Figure as PNG without a date or software stamp (reproducible bytes).

    ``label`` (e.g. "SYNTHETIC demo world") is added as a footer. Figures are built with
    :class:`matplotlib.figure.Figure`, not pyplot, so there is nothing to close.
    """
    if label:
        fig.text(0.99, 0.005, label, ha="right", va="bottom", fontsize=7, color="0.35")
    return write_with(target, lambda p: fig.savefig(p, format="png", dpi=dpi, metadata={"Software": None}))


def write_csv(
    df: pd.DataFrame, target: str | Path, float_format: str | None = "%.10g", encoding: str = "utf-8"
) -> Path:
    """Write a frame as CSV (UTF-8 unless told otherwise, e.g. GBK for statistics-style files)."""
    return write_with(
        target, lambda p: df.to_csv(p, index=False, float_format=float_format, lineterminator="\n", encoding=encoding)
    )


def write_gpkg(gdf: Any, target: str | Path, layer: str, layer_metadata: dict[str, str] | None = None) -> Path:
    """Write a GeoDataFrame as a GeoPackage, byte-identical for identical content.

    GDAL stamps GeoPackages with the current time; a fixed ``OGR_CURRENT_DATE`` removes it.
    ``layer_metadata`` (e.g. units, scope) is stored as GDAL layer metadata (the GeoPackage
    ``gpkg_metadata`` tables; ``pyogrio.read_info(path)["layer_metadata"]``, ``ogrinfo``).
    """
    import warnings

    import pyogrio

    def write(p: Path) -> None:
        p.unlink(missing_ok=True)  # the temporary file exists; GDAL must create it itself
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": "2000-01-01T00:00:00.000Z"})
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The filename extension should be 'gpkg'")
                gdf.to_file(
                    p,
                    driver="GPKG",
                    layer=layer,
                    engine="pyogrio",
                    **({"layer_metadata": layer_metadata} if layer_metadata else {}),
                )
        finally:
            pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})

    return write_with(target, write)


def write_json(obj: Any, target: str | Path) -> Path:
    """Write JSON with sorted keys (byte-identical for identical content)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default) + "\n"
    return write_with(target, lambda p: p.write_text(text, encoding="utf-8"))


def write_text(text: str, target: str | Path) -> Path:
    """Write a UTF-8 text file."""
    return write_with(target, lambda p: p.write_text(text, encoding="utf-8"))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------------------------
# Arrays, rasters and grids (grid stage)
# ---------------------------------------------------------------------------------------------
def write_npz(arrays: dict[str, np.ndarray], target: str | Path) -> Path:
    """Write named arrays as an uncompressed ``.npz`` (used for caches), atomically."""

    def _write(p: Path) -> None:
        with open(p, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle

    return write_with(target, _write)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file into memory."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_raster(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float, float], float | None]:
    """Read band 1 of a north-up EPSG:4326 raster (e.g. the cropland-fraction proxy).

    Returns
    -------
    values, (west, north, xres, yres), nodata
        Pixel values (rows north to south), the upper-left corner and pixel size in degrees,
        and the nodata value (or ``None``).
    """
    import rasterio

    path = Path(path)
    if not path.exists():
        raise InputError(
            path, "proxy raster not found", "check `inputs.proxy.path`, remove `inputs.proxy`, or run `make demo-data`"
        )
    try:
        with rasterio.open(path) as ds:
            values = ds.read(1).astype(np.float64)
            t, crs, nodata = ds.transform, ds.crs, ds.nodata
    except rasterio.errors.RasterioError as e:
        raise InputError(
            path, f"cannot read the raster ({str(e).splitlines()[0]})", "supply a GeoTIFF in EPSG:4326"
        ) from None
    if crs is None or crs.to_epsg() != 4326:
        raise InputError(
            path, f"raster CRS is {crs}, not EPSG:4326", "reproject it to EPSG:4326 (e.g. gdalwarp -t_srs EPSG:4326)"
        )
    if t.b != 0 or t.d != 0 or t.e >= 0 or t.a <= 0:
        raise InputError(path, "raster is rotated or not north-up", "warp it to a north-up EPSG:4326 grid")
    return values, (float(t.c), float(t.f), float(t.a), float(-t.e)), nodata


def write_geotiff(
    values: np.ndarray,
    bounds: tuple[float, float, float, float],
    target: str | Path,
    tile: int = 256,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write one (nlat, nlon) south-up grid as a tiled, DEFLATE-compressed float32 GeoTIFF.

    The file is north-up (GIS convention), EPSG:4326, with ``bounds`` = (west, south, east,
    north) in degrees; no timestamp tag is written, so identical arrays give identical bytes.
    """
    import rasterio
    from rasterio.transform import Affine

    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float32)[::-1])
    h, w = arr.shape
    west, south, east, north = bounds
    block = max(16, (min(tile, 4096) // 16) * 16)
    profile = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:4326",
        "transform": Affine((east - west) / w, 0.0, west, 0.0, -(north - south) / h, north),
        "compress": "deflate",
        "predictor": 3,
        "zlevel": 6,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
    }

    def _write(p: Path) -> None:
        with rasterio.open(p, "w", **profile) as ds:
            ds.write(arr, 1)
            if tags:
                ds.update_tags(**tags)

    return write_with(target, _write)


#: ``_FillValue`` of float32 grids and nodata of the GeoTIFFs: netCDF's default float fill, so
#: readers that ignore the attribute still see the netCDF convention.
GRID_FILL_F4 = 9.969209968386869e36

#: EPSG:4326 (WGS 84, latitude-longitude) as GDAL writes it in WKT 1; stored verbatim in the
#: NetCDF ``crs`` variable (``crs_wkt`` and GDAL's ``spatial_ref``) so the bytes never depend on
#: the PROJ version of the machine.
WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
    'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,'
    'AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
    'AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]'
)


@dataclass(frozen=True)
class NetcdfCodec:
    """How the NetCDF grids are compressed (``grid.netcdf_*`` in the config).

    Attributes
    ----------
    compression
        ``"zlib"`` (DEFLATE, HDF5 filter 1: every netCDF-4 reader, e.g. stock ``ncdump`` 4.9 and
        GDAL 3.6) or ``"zstd"`` (HDF5 filter 32015: needs netCDF-C >= 4.9 *with* its filter
        plugins; Debian's ``ncdump`` 4.9.0 and GDAL 3.6 fail with "undefined filter").
    level
        Compression level (zlib 1-9; zstd 1-22).
    shuffle
        HDF5 byte shuffle before compression (smaller files for float32 fields).
    deflate_engine
        Library producing the DEFLATE stream for ``"zlib"``: ``"zlib-ng"`` (about 3x faster
        than zlib at level 1, ~25 % larger there) or ``"zlib"`` (the standard library). Both
        write standard zlib streams (RFC 1950) that any reader decodes, and both give the same
        bytes for the same chunk whatever the threads. (Intel ISA-L, tried first, did not: under
        threads about one chunk in a thousand came out different, still valid, between reruns.)
    threads
        Threads compressing chunks at once (the compressors release the GIL).
    """

    compression: Literal["zlib", "zstd"] = "zlib"
    level: int = 1
    shuffle: bool = True
    deflate_engine: Literal["zlib-ng", "zlib"] = "zlib-ng"
    threads: int = 2


@dataclass(frozen=True)
class GeotiffCodec:
    """How the Cloud-Optimised GeoTIFFs are compressed (``grid.geotiff_*`` in the config).

    Attributes
    ----------
    compression
        GDAL ``COMPRESS``: ``"deflate"`` (every TIFF reader), ``"zstd"`` (GDAL >= 2.3, e.g. 3.6;
        not every non-GDAL reader) or ``"lzw"``.
    level
        ``LEVEL`` (deflate 1-12, zstd 1-22; ignored by lzw).
    predictor
        Floating-point predictor (``PREDICTOR=FLOATING_POINT``, TIFF predictor 3).
    threads
        GDAL ``NUM_THREADS`` for compressing tiles.
    """

    compression: Literal["deflate", "zstd", "lzw"] = "deflate"
    level: int = 1
    predictor: bool = False
    threads: int = 2


@dataclass(frozen=True)
class GridVariable:
    """One float32 (time, lat, lon) variable of :func:`write_netcdf_grid`: name and attributes."""

    name: str
    attrs: dict[str, str]


class CogWriter:
    """Writes same-shaped (bands, nlat, nlon) float32 layers as Cloud-Optimised GeoTIFFs, one
    file per call, through one in-memory dataset kept open between calls.

    Parameters
    ----------
    shape
        (bands, nlat, nlon) of every array written.
    bounds
        (west, south, east, north), degrees, EPSG:4326.
    nodata
        Value of cells outside the domain (also the TIFF nodata tag).
    codec, tile
        Compression and the tile edge (cells, at least 128).
    overviews
        Internal overviews (factors 2, 4, ... down to one tile): ``"average"`` (the mean per-cell
        mass of the finer cells, nodata ignored: not their sum), ``"nearest"`` (a sample) or
        ``"none"`` (still a valid COG; viewers then read full resolution).

    Notes
    -----
    Each array is copied into the in-memory (GDAL MEM) dataset, whose overviews GDAL builds;
    GDAL's GTiff driver then copies it with ``COPY_SRC_OVERVIEWS=YES``, which writes every IFD
    before the tiles (the COG layout), bands interleaved by band (one crop is read without the
    others), tiles entirely nodata not stored (``SPARSE_OK``). The dataset is reused, because
    a new one per year would fault in a fresh gigabyte of pages at 0.01 deg. No timestamp tag
    is written, so identical arrays give identical bytes. Use as a context manager (or call
    :meth:`close`).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        bounds: tuple[float, float, float, float],
        *,
        nodata: float = GRID_FILL_F4,
        codec: GeotiffCodec = GeotiffCodec(),
        tile: int = 256,
        overviews: Literal["none", "nearest", "average"] = "average",
    ) -> None:
        import rasterio
        from rasterio.transform import Affine

        n, h, w = shape
        self.shape = (n, h, w)
        self.overviews = overviews
        west, south, east, north = bounds
        block = max(128, (min(tile, 4096) // 16) * 16)  # COG readers expect tiles of >= 128 cells
        self.options: dict[str, Any] = {
            "TILED": "YES",
            "BLOCKXSIZE": block,
            "BLOCKYSIZE": block,
            "COMPRESS": codec.compression.upper(),
            "PREDICTOR": 3 if codec.predictor else 1,
            "INTERLEAVE": "BAND",
            "COPY_SRC_OVERVIEWS": "YES",
            "SPARSE_OK": "TRUE",
            "NUM_THREADS": max(1, codec.threads),
            "BIGTIFF": "IF_SAFER",
        }
        if codec.compression == "deflate":
            self.options["ZLEVEL"] = codec.level
        elif codec.compression == "zstd":
            self.options["ZSTD_LEVEL"] = codec.level
        self.factors: list[int] = []
        while overviews != "none" and max(h, w) / (2 ** (len(self.factors) + 1)) >= block / 2:
            self.factors.append(2 ** (len(self.factors) + 1))
        self._tag_keys: set[str] = set()
        self._src = rasterio.open(
            f"/vsimem/cog-{id(self)}",
            "w",
            driver="MEM",
            height=h,
            width=w,
            count=n,
            dtype="float32",
            crs="EPSG:4326",
            nodata=nodata,
            transform=Affine((east - west) / w, 0.0, west, 0.0, -(north - south) / h, north),
        )

    def write(
        self,
        values: np.ndarray,
        target: str | Path,
        *,
        band_names: Sequence[str],
        band_units: str,
        tags: dict[str, str] | None = None,
    ) -> Path:
        """Write ``values`` (bands, nlat, nlon), rows south to north, as ``target``, north-up.

        ``band_names`` and ``band_units`` give the band descriptions (one per band) and the
        udunits string of every band; ``tags`` the dataset metadata (the same keys in every
        call: GDAL can replace a value but not drop a key).
        """
        import rasterio.shutil
        from rasterio.enums import Resampling

        arr = np.asarray(values)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.shape != self.shape or arr.dtype != np.float32:
            raise ValueError(f"COG layers must be float32 {self.shape}, got {arr.dtype} {arr.shape}")
        if len(band_names) != self.shape[0]:
            raise ValueError(f"{len(band_names)} band names for {self.shape[0]} bands")
        src = self._src
        src.write(arr[:, ::-1])  # a flipped view: GDAL reads it with a negative line stride
        for b, name in enumerate(band_names):
            src.set_band_description(b + 1, str(name))
        src.units = tuple(band_units for _ in band_names)
        tags = dict(tags or {})
        if not self._tag_keys <= set(tags):  # GDAL cannot drop a key: it would carry over
            raise ValueError(f"COG tags must repeat the previous file's keys {sorted(self._tag_keys)}")
        self._tag_keys = set(tags)
        if tags:
            src.update_tags(**tags)
        if self.factors:
            src.build_overviews(self.factors, Resampling.average if self.overviews == "average" else Resampling.nearest)

        def _write(p: Path) -> None:
            p.unlink(missing_ok=True)  # GDAL must create the file itself
            rasterio.shutil.copy(src, p, driver="GTiff", **self.options)

        return write_with(target, _write)

    def close(self) -> None:
        """Release the in-memory dataset."""
        self._src.close()

    def __enter__(self) -> CogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_cog(
    values: np.ndarray,
    bounds: tuple[float, float, float, float],
    target: str | Path,
    *,
    band_names: Sequence[str],
    band_units: str,
    nodata: float = GRID_FILL_F4,
    tags: dict[str, str] | None = None,
    codec: GeotiffCodec = GeotiffCodec(),
    tile: int = 256,
    overviews: Literal["none", "nearest", "average"] = "average",
) -> Path:
    """Write (bands, nlat, nlon) south-up float32 layers as one Cloud-Optimised GeoTIFF.

    One file of :class:`CogWriter` (which see for the layout and the parameters); for a series
    of same-shaped files, keep one :class:`CogWriter` open instead.
    """
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    with CogWriter(arr.shape, bounds, nodata=nodata, codec=codec, tile=tile, overviews=overviews) as cw:
        return cw.write(arr, target, band_names=band_names, band_units=band_units, tags=tags)


def _deflate_function(codec: NetcdfCodec) -> Callable[[bytes], bytes]:
    """zlib-stream compressor of ``codec`` (zlib-ng or the standard library's zlib)."""
    if codec.deflate_engine == "zlib-ng":
        from zlib_ng import zlib_ng

        return lambda b: zlib_ng.compress(b, codec.level)
    import zlib

    return lambda b: zlib.compress(b, codec.level)


def shuffle_bytes(chunk: np.ndarray) -> bytes:
    """HDF5 byte shuffle of a contiguous array: all first bytes of the elements, then the second...

    Notes
    -----
    Equals the HDF5 shuffle filter (H5Z_FILTER_SHUFFLE) with element size ``itemsize``: byte
    ``k`` of element ``i`` (memory order) moves to position ``k * n + i``.
    """
    a = np.ascontiguousarray(chunk)
    return a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes()  # tobytes copies in C order


def _chunk_origins(domain: np.ndarray | None, shape: tuple[int, int], ch: tuple[int, int]) -> list[tuple[int, int]]:
    """Origins (row, col) of the chunks holding at least one domain cell, row-major."""
    nlat, nlon = shape
    origins = [(r, c) for r in range(0, nlat, ch[0]) for c in range(0, nlon, ch[1])]
    if domain is None:
        return origins
    d = np.asarray(domain, dtype=bool)
    return [(r, c) for r, c in origins if d[r : r + ch[0], c : c + ch[1]].any()]


def write_netcdf_grid(
    target: str | Path,
    slabs: Iterator[tuple[int, np.ndarray]],
    *,
    lat: np.ndarray,
    lon: np.ndarray,
    lat_edges: np.ndarray,
    lon_edges: np.ndarray,
    cell_area_m2: np.ndarray,
    years: Sequence[int] | np.ndarray,
    variables: Sequence[GridVariable],
    global_attrs: dict[str, str],
    domain: np.ndarray | None = None,
    chunk: int = 256,
    codec: NetcdfCodec = NetcdfCodec(),
) -> Path:
    """Stream yearly stacks of 2-D layers into a CF-1.8 NetCDF-4 file, atomically.

    Parameters
    ----------
    slabs
        Iterator of ``(year_index, stack)``; ``stack`` is float32 (len(variables), nlat, nlon),
        rows south to north, cells outside ``domain`` already set to :data:`GRID_FILL_F4`. Each
        stack is written before the next one is requested (the caller may then reuse it).
    lat, lon, lat_edges, lon_edges
        Cell centres and edges, degrees (ascending).
    cell_area_m2
        Cell area per row (nlat,) or per cell (nlat, nlon), m2; stored as ``cell_area`` (lat, lon).
    years
        Calendar years; ``time`` is the middle of each year in days since 1970-01-01, with
        ``time_bnds`` from 1 January to 1 January of the next year; ``year(time)`` is an
        auxiliary coordinate.
    variables
        Name and attributes of each (time, lat, lon) float32 variable, in stack order; each gets
        ``_FillValue``, ``grid_mapping = "crs"`` and ``coordinates = "year"``.
    global_attrs
        Global attributes (no wall-clock time should appear in them: outputs are reproducible).
    domain
        (nlat, nlon) bool, True where a unit covers the cell; chunks without a domain cell are
        not stored at all (readers return ``_FillValue``).
    chunk, codec
        Spatial chunk edge (cells; chunks are (1, chunk, chunk)) and compression.

    Notes
    -----
    The file layout (dimensions, coordinates, the ``crs`` grid mapping, attributes) is written
    by netCDF-C. With ``codec.compression == "zlib"`` the data chunks are then shuffled and
    compressed in ``codec.threads`` threads and stored with HDF5 direct chunk writes (h5py), in
    a fixed order, so the bytes do not depend on thread timing; the result is the file
    netCDF-C would write with ``zlib=True, shuffle=True`` (any netCDF-4 reader opens it).
    """
    import netCDF4

    years = [int(y) for y in years]
    nlat, nlon = len(lat), len(lon)
    epoch = np.datetime64("1970-01-01", "D")
    starts = np.array([(np.datetime64(f"{y}-01-01", "D") - epoch).astype(int) for y in years], dtype=np.float64)
    ends = np.array([(np.datetime64(f"{y + 1}-01-01", "D") - epoch).astype(int) for y in years], dtype=np.float64)
    area = np.asarray(cell_area_m2, dtype=np.float64)
    if area.ndim == 1:
        area = np.broadcast_to(area[:, None], (nlat, nlon))
    ch = (min(chunk, nlat), min(chunk, nlon))
    names = [v.name for v in variables]
    direct = codec.compression == "zlib"
    comp: dict[str, Any]
    if direct:
        comp = {"zlib": True, "complevel": min(max(codec.level, 1), 9), "shuffle": codec.shuffle}
    else:
        comp = {"compression": codec.compression, "complevel": codec.level, "shuffle": codec.shuffle}

    def _layout(ds: Any) -> None:
        for k in sorted(global_attrs):
            ds.setncattr(k, global_attrs[k])
        ds.createDimension("time", len(years))
        ds.createDimension("lat", nlat)
        ds.createDimension("lon", nlon)
        ds.createDimension("nv", 2)
        t = ds.createVariable("time", "f8", ("time",))
        t.setncatts(
            {
                "standard_name": "time",
                "long_name": "time",
                "units": "days since 1970-01-01 00:00:00",
                "calendar": "standard",
                "bounds": "time_bnds",
                "axis": "T",
            }
        )
        t[:] = 0.5 * (starts + ends)
        tb = ds.createVariable("time_bnds", "f8", ("time", "nv"))
        tb[:] = np.stack([starts, ends], axis=1)
        yv = ds.createVariable("year", "i4", ("time",))
        yv.setncatts({"long_name": "calendar year", "units": "1"})
        yv[:] = np.asarray(years, dtype=np.int32)
        la = ds.createVariable("lat", "f8", ("lat",))
        la.setncatts(
            {
                "standard_name": "latitude",
                "long_name": "latitude",
                "units": "degrees_north",
                "axis": "Y",
                "bounds": "lat_bnds",
            }
        )
        la[:] = lat
        lb = ds.createVariable("lat_bnds", "f8", ("lat", "nv"))
        lb[:] = np.stack([lat_edges[:-1], lat_edges[1:]], axis=1)
        lo = ds.createVariable("lon", "f8", ("lon",))
        lo.setncatts(
            {
                "standard_name": "longitude",
                "long_name": "longitude",
                "units": "degrees_east",
                "axis": "X",
                "bounds": "lon_bnds",
            }
        )
        lo[:] = lon
        lob = ds.createVariable("lon_bnds", "f8", ("lon", "nv"))
        lob[:] = np.stack([lon_edges[:-1], lon_edges[1:]], axis=1)
        crs = ds.createVariable("crs", "i4", ())
        crs.setncatts(
            {
                "grid_mapping_name": "latitude_longitude",
                "long_name": "WGS 84 (EPSG:4326)",
                "semi_major_axis": 6378137.0,
                "inverse_flattening": 298.257223563,
                "longitude_of_prime_meridian": 0.0,
                "crs_wkt": WGS84_WKT,
                "spatial_ref": WGS84_WKT,
            }
        )
        ca = ds.createVariable("cell_area", "f8", ("lat", "lon"), chunksizes=ch, zlib=True, complevel=1, shuffle=True)
        ca.setncatts(
            {
                "standard_name": "cell_area",
                "long_name": "area of the grid cell",
                "units": "m2",
                "grid_mapping": "crs",
                "comment": "area of the cell on the authalic sphere (R = 6371007.181 m)",
            }
        )
        ca[:] = area
        for var in variables:
            v = ds.createVariable(
                var.name, "f4", ("time", "lat", "lon"), chunksizes=(1, *ch), fill_value=np.float32(GRID_FILL_F4), **comp
            )
            v.setncatts({**var.attrs, "grid_mapping": "crs", "coordinates": "year"})

    def _check_stack(i: int, stack: np.ndarray) -> np.ndarray:
        s = np.asarray(stack)
        if s.dtype != np.float32 or s.shape != (len(names), nlat, nlon):
            raise ValueError(f"year {i}: stack must be float32 {(len(names), nlat, nlon)}, got {s.dtype} {s.shape}")
        return s

    def _write(p: Path) -> None:
        done = np.zeros(len(years), dtype=bool)
        ds = netCDF4.Dataset(p, "w", format="NETCDF4")
        try:
            _layout(ds)
            if not direct:
                for i, stack in slabs:
                    s = _check_stack(i, stack)
                    for j, name in enumerate(names):
                        ds[name][i] = s[j]
                    done[i] = True
        finally:
            ds.close()
        if direct:
            _write_chunks_direct(p, slabs, names, (nlat, nlon), ch, domain, codec, _check_stack, done)
        if not done.all():
            raise RuntimeError(
                f"NetCDF {Path(target).name}: years not written: {[y for y, d in zip(years, done) if not d]}"
            )

    return write_with(target, _write)


def _write_chunks_direct(
    path: Path,
    slabs: Iterator[tuple[int, np.ndarray]],
    names: Sequence[str],
    shape: tuple[int, int],
    ch: tuple[int, int],
    domain: np.ndarray | None,
    codec: NetcdfCodec,
    check: Callable[[int, np.ndarray], np.ndarray],
    done: np.ndarray,
) -> None:
    """Shuffle + DEFLATE every domain chunk in threads; store them in order with H5Dwrite_chunk."""
    from concurrent.futures import ThreadPoolExecutor

    import h5py

    deflate = _deflate_function(codec)
    origins = _chunk_origins(domain, shape, ch)
    pad = np.full(ch, GRID_FILL_F4, dtype=np.float32)

    def encode(block: np.ndarray) -> bytes:
        if block.shape != ch:  # edge chunk: HDF5 stores full chunks; the padding is never read
            full = pad.copy()
            full[: block.shape[0], : block.shape[1]] = block
            block = full
        raw = shuffle_bytes(block) if codec.shuffle else np.ascontiguousarray(block).tobytes()
        return deflate(raw)

    with h5py.File(path, "r+") as f, ThreadPoolExecutor(max(1, codec.threads)) as pool:
        dsets = [f[n] for n in names]
        for i, stack in slabs:
            s = check(i, stack)
            for j, d in enumerate(dsets):
                layer = s[j]
                blocks = (layer[r : r + ch[0], c : c + ch[1]] for r, c in origins)
                for (r, c), data in zip(origins, pool.map(encode, blocks)):
                    d.id.write_direct_chunk((i, r, c), data, filter_mask=0)
            done[i] = True

"""All file input and output of the pipeline.

Readers turn user files into frames carrying ``_file``/``_row`` so errors can point at a cell;
writers never leave a half-written file (write to a temporary file in the same folder, then
``os.replace``). Stage modules call these functions and do no file I/O of their own.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io as _io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import ColumnMapping
from pipeline.contract import SOURCE_FILE, SOURCE_ROW
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
        raise InputError(missing[0], "file not found",
                         "check the path in the config's `inputs:`, or run `make demo-data` for the demo world")
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


# ---------------------------------------------------------------------------------------------
# Reading tables
# ---------------------------------------------------------------------------------------------
def _decode(raw: bytes, path: Path, encoding: str) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    candidates = ["utf-8", "gb18030"] if encoding == "auto" else [encoding]
    for enc in candidates:
        try:
            return raw.decode(enc)
        except UnicodeDecodeError as e:
            last = e
    line = raw[: last.start].count(b"\n") + 1
    raise InputError(path, f"cannot decode the file as {' or '.join(candidates)} (byte {last.start})",
                     "save it as UTF-8, or set `encoding:` for this input in the config",
                     row=line)


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(path, "the file is empty", "supply a header line and data rows")
    text = _decode(raw, path, encoding)
    try:
        df = pd.read_csv(_io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""],
                         skipinitialspace=True, on_bad_lines="error", engine="c")
    except pd.errors.ParserError as e:
        msg = str(e)
        row = None
        if "line" in msg:
            with contextlib.suppress(ValueError, IndexError):
                row = int(msg.split("line")[1].split(",")[0].strip())
        raise InputError(path, f"malformed CSV ({msg.strip()})",
                         "check the delimiter and quoting; a truncated last line is the usual cause",
                         row=row) from None
    if df.shape[1] > 1 and df.iloc[:, -1].isna().all() and str(df.columns[-1]).startswith("Unnamed"):
        df = df.iloc[:, :-1]
    # A file cut mid-row ends without a newline and its last line has fewer fields than the
    # header (pandas would pad it with empty cells). A complete last line without a newline is fine.
    if len(df) and not text.endswith(("\n", "\r")):
        last_line = text.splitlines()[-1]
        n_fields = len(next(csv.reader([last_line])))
        if n_fields < df.shape[1]:
            raise InputError(path, f"the last line has {n_fields} of {df.shape[1]} fields (file truncated?)",
                             "re-export or re-download the file", row=len(df) + 1)
    df[SOURCE_ROW] = np.arange(2, len(df) + 2)
    return df


def _read_one(path: Path, encoding: str = "auto", sheet: str | int = 0) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        df = _read_csv(path, encoding)
    elif suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise InputError(path, f"cannot read Parquet ({type(e).__name__}: {str(e).splitlines()[0]})",
                             "re-write the file; it may be truncated") from None
        df = df.astype({c: "string" for c in df.columns if df[c].dtype == object})
        df[SOURCE_ROW] = np.arange(1, len(df) + 1)
    elif suffix in (".xlsx", ".xls"):
        try:
            df = pd.read_excel(path, sheet_name=sheet, dtype=str)
        except Exception as e:
            raise InputError(path, f"cannot read the spreadsheet ({type(e).__name__}: {str(e).splitlines()[0]})",
                             "check the sheet name in the config, or save as CSV") from None
        df[SOURCE_ROW] = np.arange(2, len(df) + 2)
    else:
        raise InputError(path, f"unknown file type '{suffix}'", "use CSV, Parquet or XLSX")
    if len(df) == 0:
        raise InputError(path, "the file has a header but no data rows", "supply at least one data row")
    df[SOURCE_FILE] = str(path)
    return df


def read_tables(
    path: str | Path,
    encoding: str = "auto",
    sheet: str | int = 0,
    mapping: ColumnMapping | None = None,
) -> pd.DataFrame:
    """Read one file, a folder or a glob of tables into one frame, in parallel with Dask.

    Every cell is read as text (typing is the contract's job, so errors can name the cell).
    The column mapping, when given, is applied to each file before concatenation.
    """
    import dask

    files = expand_paths(path)
    tasks = [dask.delayed(_read_one)(f, encoding, sheet) for f in files]
    frames = list(dask.compute(*tasks)) if len(tasks) > 1 else [_read_one(files[0], encoding, sheet)]
    if mapping is not None:
        frames = [apply_mapping(f, mapping) for f in frames]
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    return df


def apply_mapping(df: pd.DataFrame, mapping: ColumnMapping) -> pd.DataFrame:
    """Rename, recode, rescale and complete a foreign table into contract names.

    See :class:`pipeline.config.ColumnMapping`. The user's file is not modified.
    """
    file = str(df[SOURCE_FILE].iloc[0]) if SOURCE_FILE in df.columns and len(df) else "<table>"
    missing = [src for src in mapping.columns.values() if src not in df.columns]
    if missing:
        raise InputError(file, f"column '{missing[0]}' named in the column mapping is not in the file",
                         "correct `columns:` in the mapping file", column=missing[0])
    # Unmapped columns stay (the contract ignores columns it does not know); one source column
    # may feed several contract columns (e.g. a study id used as site id too).
    out = df.copy()
    for target, src in mapping.columns.items():
        out[target] = df[src]
    for target, value in mapping.constants.items():
        out[target] = str(value)
    for target, recode in mapping.values.items():
        if target in out.columns:
            out[target] = out[target].astype("string").replace(recode)
    for target, factor in mapping.scale.items():
        if target in out.columns:
            num = pd.to_numeric(out[target], errors="coerce")
            out[target] = (num * factor).where(num.notna(), out[target])
    for target, src in mapping.default_from.items():
        if target not in out.columns:
            out[target] = out[src]
        else:
            out[target] = out[target].where(out[target].notna(), out[src])
    if mapping.id_from_row:
        stem = Path(file).stem
        out[mapping.id_from_row] = [f"{stem}:{r}" for r in df[SOURCE_ROW]]
    return out


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a Parquet table written by this pipeline (a clear error if missing or corrupt)."""
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise InputError(path, "file not found", "run the stage that writes it first (see `make help`)") from None
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(path, f"cannot read Parquet ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                         "check permissions and disk; if the file is corrupt, delete it and re-run "
                         "the stage that writes it") from None


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
@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def invalidate(manifest: str | Path) -> None:
    """Remove a stage's manifest before the stage rewrites its outputs.

    Every file is written atomically, but a stage writes several; without its manifest a stage
    that failed half-way is visibly incomplete, and ``make`` reruns it.
    """
    with contextlib.suppress(FileNotFoundError):
        os.remove(manifest)


def write_with(target: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result onto ``target``."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_parquet(df: pd.DataFrame, target: str | Path) -> Path:
    """Write a frame as Parquet, deterministically (no index, fixed compression)."""
    return write_with(target, lambda p: df.to_parquet(p, index=False, compression="zstd"))


def write_png(fig: Any, target: str | Path, label: str = "", dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG without a date or software stamp (reproducible bytes),
    then close it. ``label`` (e.g. "SYNTHETIC demo world") is added as a footer."""
    import matplotlib.pyplot as plt

    if label:
        fig.text(0.99, 0.005, label, ha="right", va="bottom", fontsize=7, color="0.35")
    try:
        return write_with(target, lambda p: fig.savefig(p, format="png", dpi=dpi, metadata={"Software": None}))
    finally:
        plt.close(fig)


def write_csv(df: pd.DataFrame, target: str | Path, float_format: str | None = "%.10g",
              encoding: str = "utf-8") -> Path:
    """Write a frame as CSV (UTF-8 unless told otherwise, e.g. GBK for statistics-style files)."""
    return write_with(target, lambda p: df.to_csv(p, index=False, float_format=float_format, lineterminator="\n",
                                                  encoding=encoding))


def write_gpkg(gdf: Any, target: str | Path, layer: str) -> Path:
    """Write a GeoDataFrame as a GeoPackage, byte-identical for identical content.

    GDAL stamps GeoPackages with the current time; a fixed ``OGR_CURRENT_DATE`` removes it.
    """
    import warnings

    import pyogrio

    def write(p: Path) -> None:
        p.unlink(missing_ok=True)  # the temporary file exists; GDAL must create it itself
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": "2000-01-01T00:00:00.000Z"})
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The filename extension should be 'gpkg'")
                gdf.to_file(p, driver="GPKG", layer=layer, engine="pyogrio")
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
            np.savez(f, **arrays)

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
        raise InputError(path, "proxy raster not found",
                         "check `inputs.proxy.path`, remove `inputs.proxy`, or run `make demo-data`")
    try:
        with rasterio.open(path) as ds:
            values = ds.read(1).astype(np.float64)
            t, crs, nodata = ds.transform, ds.crs, ds.nodata
    except rasterio.errors.RasterioError as e:
        raise InputError(path, f"cannot read the raster ({str(e).splitlines()[0]})",
                         "supply a GeoTIFF in EPSG:4326") from None
    if crs is None or crs.to_epsg() != 4326:
        raise InputError(path, f"raster CRS is {crs}, not EPSG:4326",
                         "reproject it to EPSG:4326 (e.g. gdalwarp -t_srs EPSG:4326)")
    if t.b != 0 or t.d != 0 or t.e >= 0 or t.a <= 0:
        raise InputError(path, "raster is rotated or not north-up", "warp it to a north-up EPSG:4326 grid")
    return values, (float(t.c), float(t.f), float(t.a), float(-t.e)), nodata


def write_geotiff(values: np.ndarray, bounds: tuple[float, float, float, float], target: str | Path,
                  tile: int = 256, tags: dict[str, str] | None = None) -> Path:
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
        "driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "float32",
        "crs": "EPSG:4326", "transform": Affine((east - west) / w, 0.0, west, 0.0, -(north - south) / h, north),
        "compress": "deflate", "predictor": 3, "zlevel": 6,
        "tiled": True, "blockxsize": block, "blockysize": block,
    }

    def _write(p: Path) -> None:
        with rasterio.open(p, "w", **profile) as ds:
            ds.write(arr, 1)
            if tags:
                ds.update_tags(**tags)

    return write_with(target, _write)


def write_netcdf_grid(
    target: str | Path,
    slabs: Iterator[tuple[int, np.ndarray]],
    *,
    lat: np.ndarray,
    lon: np.ndarray,
    lat_edges: np.ndarray,
    lon_edges: np.ndarray,
    cell_area_m2: np.ndarray,
    years: Sequence[int],
    crops: Sequence[str],
    var_name: str,
    var_attrs: dict[str, str],
    global_attrs: dict[str, str],
    chunk: int = 256,
    complevel: int = 4,
) -> Path:
    """Stream yearly (crop, lat, lon) slabs into a CF-1.8 NetCDF-4 file, atomically.

    Parameters
    ----------
    slabs
        Iterator of ``(year_index, array)`` with arrays of shape (len(crops), nlat, nlon), rows
        south to north; each is written as soon as it arrives, so only one slab is held here.
    lat, lon, lat_edges, lon_edges
        Cell centres and edges, degrees (ascending).
    cell_area_m2
        Cell area per row (nlat,) or per cell (nlat, nlon), m2; stored as ``cell_area`` (lat, lon).
    years
        Calendar years; ``time`` is the middle of each year in days since 1970-01-01, with
        ``time_bnds`` from 1 January to 1 January of the next year.
    var_name, var_attrs
        Name and attributes of the data variable (float32, dims time, crop, lat, lon).
    global_attrs
        Global attributes (no wall-clock time should appear in them: outputs are reproducible).
    chunk, complevel
        Spatial chunk edge (cells) and zlib level; chunks are (1, 1, chunk, chunk).
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

    def _write(p: Path) -> None:
        ds = netCDF4.Dataset(p, "w", format="NETCDF4")
        try:
            for k in sorted(global_attrs):
                ds.setncattr(k, global_attrs[k])
            ds.createDimension("time", len(years))
            ds.createDimension("crop", len(crops))
            ds.createDimension("lat", nlat)
            ds.createDimension("lon", nlon)
            ds.createDimension("nv", 2)
            t = ds.createVariable("time", "f8", ("time",))
            t.setncatts({"standard_name": "time", "units": "days since 1970-01-01 00:00:00",
                         "calendar": "standard", "bounds": "time_bnds", "axis": "T"})
            t[:] = 0.5 * (starts + ends)
            tb = ds.createVariable("time_bnds", "f8", ("time", "nv"))
            tb[:] = np.stack([starts, ends], axis=1)
            yv = ds.createVariable("year", "i4", ("time",))
            yv.long_name = "calendar year"
            yv[:] = np.asarray(years, dtype=np.int32)
            cv = ds.createVariable("crop", str, ("crop",))
            cv.long_name = "crop class"
            for i, c in enumerate(crops):
                cv[i] = str(c)
            la = ds.createVariable("lat", "f8", ("lat",))
            la.setncatts({"standard_name": "latitude", "units": "degrees_north", "axis": "Y", "bounds": "lat_bnds"})
            la[:] = lat
            lb = ds.createVariable("lat_bnds", "f8", ("lat", "nv"))
            lb[:] = np.stack([lat_edges[:-1], lat_edges[1:]], axis=1)
            lo = ds.createVariable("lon", "f8", ("lon",))
            lo.setncatts({"standard_name": "longitude", "units": "degrees_east", "axis": "X", "bounds": "lon_bnds"})
            lo[:] = lon
            lob = ds.createVariable("lon_bnds", "f8", ("lon", "nv"))
            lob[:] = np.stack([lon_edges[:-1], lon_edges[1:]], axis=1)
            ch = (min(chunk, nlat), min(chunk, nlon))
            ca = ds.createVariable("cell_area", "f8", ("lat", "lon"), zlib=True, complevel=complevel,
                                   shuffle=True, chunksizes=ch)
            ca.setncatts({"standard_name": "cell_area", "units": "m2",
                          "comment": "area of the cell on the authalic sphere (R = 6371007.181 m)"})
            ca[:] = area
            v = ds.createVariable(var_name, "f4", ("time", "crop", "lat", "lon"), zlib=True,
                                  complevel=complevel, shuffle=True, chunksizes=(1, 1, *ch), fill_value=False)
            v.setncatts(var_attrs)
            done = np.zeros(len(years), dtype=bool)
            for i, slab in slabs:
                v[i] = np.asarray(slab, dtype=np.float32)
                done[i] = True
            if not done.all():
                raise RuntimeError(f"NetCDF {Path(target).name}: years not written: "
                                   f"{[y for y, d in zip(years, done) if not d]}")
        finally:
            ds.close()

    return write_with(target, _write)

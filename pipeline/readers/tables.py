"""Read user tables (CSV in UTF-8 or GBK, Parquet, XLSX; a file, a folder or a glob) through a
column mapping, every cell as text with ``_file``/``_row`` so the contract's errors can name the
cell in the user's own file."""

from __future__ import annotations

import contextlib
import csv
import io as _io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import ColumnMapping
from pipeline.contract import SOURCE_FILE, SOURCE_ROW
from pipeline.errors import ConfigError, InputError
from pipeline.io import expand_paths

# ---------------------------------------------------------------------------------------------
# Reading tables
# ---------------------------------------------------------------------------------------------
#: Leading bytes of binary formats that are sometimes renamed to .csv, and what they are.
_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (
        b"PK\x03\x04",
        "a ZIP archive (or an .xlsx workbook, which is a ZIP)",
        "unzip it and point the config at the CSV inside, or name a workbook .xlsx",
    ),
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it (gunzip) and point the config at the CSV"),
    (b"PAR1", "a Parquet file", "name it .parquet"),
    (b"\xd0\xcf\x11\xe0", "an old-style Excel workbook (.xls)", "name it .xls, or save it as CSV"),
    (b"%PDF", "a PDF document", "export the table as CSV"),
)


def _not_text(raw: bytes, path: Path) -> None:
    """Raise when a file named as text is a known binary format (a renamed ZIP, workbook, ...)."""
    for magic, what, fix in _MAGIC:
        if raw.startswith(magic):
            raise InputError(path, f"the file is {what}, not a text CSV", fix)


def _decode(raw: bytes, path: Path, encoding: str) -> str:
    _not_text(raw, path)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    candidates = ["utf-8", "gb18030"] if encoding == "auto" else [encoding]
    for enc in candidates:
        try:
            return raw.decode(enc)
        except UnicodeDecodeError as e:
            last = e
    line = raw[: last.start].count(b"\n") + 1
    raise InputError(
        path,
        f"cannot decode the file as {' or '.join(candidates)} (byte {last.start})",
        "save it as UTF-8, or set `encoding:` for this input in the config",
        row=line,
    )


def _check_delimiter(text: str, path: Path) -> None:
    """Raise when the header is separated by ';', tab or '|' instead of commas."""
    header = next((ln for ln in text.splitlines() if ln.strip()), "")
    if "," in header:
        return
    for delim, name in ((";", "semicolons (';')"), ("\t", "tabs"), ("|", "'|'")):
        if header.count(delim) >= 1:
            raise InputError(
                path,
                f"the header is separated by {name}, not commas ({header.count(delim) + 1} fields: {header[:60]!r})",
                "save the file as comma-separated CSV (decimal point '.', not ',')",
                row=1,
            )


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(path, "the file is empty", "supply a header line and data rows")
    text = _decode(raw, path, encoding)
    _check_delimiter(text, path)
    try:
        df = pd.read_csv(
            _io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skipinitialspace=True,
            on_bad_lines="error",
            engine="c",
        )
    except pd.errors.ParserError as e:
        msg = str(e)
        row = None
        if "line" in msg:
            with contextlib.suppress(ValueError, IndexError):
                row = int(msg.split("line")[1].split(",")[0].strip())
        raise InputError(
            path,
            f"malformed CSV ({msg.strip()})",
            "check the delimiter and quoting; a truncated last line is the usual cause",
            row=row,
        ) from None
    if df.shape[1] > 1 and df.iloc[:, -1].isna().all() and str(df.columns[-1]).startswith("Unnamed"):
        df = df.iloc[:, :-1]
    # A file cut mid-row ends without a newline and its last line has fewer fields than the
    # header (pandas would pad it with empty cells). A complete last line without a newline is fine.
    if len(df) and not text.endswith(("\n", "\r")):
        last_line = text.splitlines()[-1]
        n_fields = len(next(csv.reader([last_line])))
        if n_fields < df.shape[1]:
            raise InputError(
                path,
                f"the last line has {n_fields} of {df.shape[1]} fields (file truncated?)",
                "re-export or re-download the file",
                row=len(df) + 1,
            )
    df.columns = [str(c).strip() for c in df.columns]
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
            raise InputError(
                path,
                f"cannot read Parquet ({type(e).__name__}: {str(e).splitlines()[0]})",
                "re-write the file; it may be truncated",
            ) from None
        df = df.astype({c: "string" for c in df.columns if df[c].dtype == object})
        df[SOURCE_ROW] = np.arange(1, len(df) + 1)
    elif suffix in (".xlsx", ".xls"):
        try:
            df = pd.read_excel(path, sheet_name=sheet, dtype=str)
        except Exception as e:
            raise InputError(
                path,
                f"cannot read the spreadsheet ({type(e).__name__}: {str(e).splitlines()[0]})",
                "check the sheet name in the config, or save as CSV",
            ) from None
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


def check_mapping(mapping: ColumnMapping, targets: Sequence[str], where: str) -> None:
    """Raise :class:`ConfigError` when a mapping names a contract column the table does not have.

    Parameters
    ----------
    mapping
        The column mapping of one source.
    targets
        The contract's column names of the table (docs/data_contract.md).
    where
        The mapping file (or input) named in the message.
    """
    known = set(targets)
    used = [*mapping.columns, *mapping.constants, *mapping.values, *mapping.scale, *mapping.default_from]
    if mapping.id_from_row:
        used.append(mapping.id_from_row)
    unknown = sorted({t for t in used if t not in known})
    if unknown:
        raise ConfigError(
            f"{where}: the mapping names column(s) {', '.join(repr(u) for u in unknown)} that the "
            f"contract's table does not have. Fix: map to one of {', '.join(targets)}"
        )


def source_names(mapping: ColumnMapping) -> dict[str, str]:
    """Contract column -> the user's own header, for messages (identity where not mapped)."""
    names = dict(mapping.columns)
    for target, src in mapping.default_from.items():
        names.setdefault(target, src)
    return names


def apply_mapping(df: pd.DataFrame, mapping: ColumnMapping) -> pd.DataFrame:
    """Rename, recode, rescale and complete a foreign table into contract names.

    See :class:`pipeline.config.ColumnMapping`. The user's file is not modified.
    """
    file = str(df[SOURCE_FILE].iloc[0]) if SOURCE_FILE in df.columns and len(df) else "<table>"
    # default_from may name a file column or a contract column the mapping creates
    created = {*mapping.columns, *mapping.constants}
    referenced = [*mapping.columns.values(), *(v for v in mapping.default_from.values() if v not in created)]
    missing = [src for src in referenced if src not in df.columns]
    if missing:
        present = ", ".join(str(c) for c in df.columns if c not in (SOURCE_FILE, SOURCE_ROW))
        key = "default_from:" if missing[0] not in mapping.columns.values() else "columns:"
        raise InputError(
            file,
            f"column '{missing[0]}' named under `{key}` in the column mapping is not in the file "
            f"(columns present: {present})",
            f"correct `{key}` in the mapping file",
            column=missing[0],
        )
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

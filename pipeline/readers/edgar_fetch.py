"""Download EDGAR gridded files: official URLs, HTTP Range resume, sha256 manifest, unzip.

Standard library only (:mod:`urllib`). The base URL is a parameter everywhere, so the CLI or
config can point it at a mirror, and tests at a server on 127.0.0.1.

URL layout on the JRC open-data server (checked on published download scripts and dataset
pages, 2023-2025)::

    {base}/v80_FT2022_GHG/N2O/AGS/emi_nc/v8.0_FT2022_GHG_N2O_2005_AGS_emi_nc.zip
    {base}/v80_FT2022_GHG/N2O/AGS/flx_nc/v8.0_FT2022_GHG_N2O_2005_AGS_flx_nc.zip
    {base}/EDGAR_2024_GHG/N2O/AGS/emi_nc/EDGAR_2024_GHG_N2O_2023_AGS_emi_nc.zip
    {base}/EDGAR_2025_GHG/N2O/AGS/flx_nc/EDGAR_2025_GHG_N2O_2024_AGS_flx_nc.zip

with ``base = https://jeodpp.jrc.ec.europa.eu/ftp/jrc-opendata/EDGAR/datasets``.

The manifest ``edgar_manifest.json`` in the destination folder records, per downloaded file,
its URL, size, sha256 and the files unpacked from it; it is rewritten atomically after each
file, so an interrupted run keeps what finished. A file already listed with a matching hash is
skipped without any request; a partial download is kept as ``<name>.part`` and resumed with
``Range: bytes=<size>-``.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError, InputError
from pipeline.io import file_sha256, write_json

DEFAULT_BASE_URL = "https://jeodpp.jrc.ec.europa.eu/ftp/jrc-opendata/EDGAR/datasets"
MANIFEST_NAME = "edgar_manifest.json"
USER_AGENT = "cropn2o-fetch-edgar/0.1 (+python urllib)"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Release:
    """One EDGAR GHG release: server folder, file-name prefix and year coverage."""

    folder: str
    prefix: str
    first_year: int
    last_year: int


#: Releases with per-year gridded zips; keys are what users type (aliases below).
RELEASES: dict[str, Release] = {
    "v8.0": Release("v80_FT2022_GHG", "v8.0_FT2022_GHG", 1970, 2022),
    "EDGAR_2024_GHG": Release("EDGAR_2024_GHG", "EDGAR_2024_GHG", 1970, 2023),
    "EDGAR_2025_GHG": Release("EDGAR_2025_GHG", "EDGAR_2025_GHG", 1970, 2024),
}
_ALIASES = {
    "v80": "v8.0",
    "v8": "v8.0",
    "v80_FT2022_GHG": "v8.0",
    "v8.0_FT2022_GHG": "v8.0",
    "2024": "EDGAR_2024_GHG",
    "2025": "EDGAR_2025_GHG",
}
KINDS = ("emi_nc", "flx_nc")
SUBSTANCES = ("N2O", "CH4", "CO2", "CO2bio")


def release_info(release: str) -> Release:
    """The :class:`Release` for a name or alias (``v8.0``, ``2024``, ``EDGAR_2025_GHG``…)."""
    key = _ALIASES.get(release, release)
    if key not in RELEASES:
        raise ConfigError(f"unknown EDGAR release '{release}'. Fix: use one of {sorted(RELEASES)}")
    return RELEASES[key]


def edgar_urls(
    release: str,
    substance: str,
    sector: str,
    first_year: int,
    last_year: int,
    kind: str = "emi_nc",
    base_url: str | None = None,
) -> list[str]:
    """Official download URLs of the per-year gridded zips, one per year.

    Parameters
    ----------
    release
        ``v8.0``, ``EDGAR_2024_GHG`` or ``EDGAR_2025_GHG`` (aliases ``2024``, ``2025``).
    substance, sector
        E.g. ``N2O`` and ``AGS`` (agricultural soils) or ``N2O`` (indirect N2O).
    first_year, last_year
        Inclusive; must lie inside the release's coverage.
    kind
        ``emi_nc`` (t per cell per year) or ``flx_nc`` (kg m-2 s-1).
    base_url
        Server root; default :data:`DEFAULT_BASE_URL`.
    """
    rel = release_info(release)
    if kind not in KINDS:
        raise ConfigError(f"unknown EDGAR file kind '{kind}'. Fix: use one of {list(KINDS)}")
    if substance not in SUBSTANCES:
        raise ConfigError(f"unknown EDGAR substance '{substance}'. Fix: use one of {list(SUBSTANCES)}")
    if not sector or not sector.replace("_", "").isalnum():
        raise ConfigError(f"invalid EDGAR sector '{sector}'. Fix: use a sector code such as AGS")
    if not (rel.first_year <= first_year <= last_year <= rel.last_year):
        raise ConfigError(
            f"EDGAR {release} covers {rel.first_year}-{rel.last_year}, not {first_year}-{last_year}. "
            "Fix: narrow the year range"
        )
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    return [
        f"{base}/{rel.folder}/{substance}/{sector}/{kind}/{rel.prefix}_{substance}_{y}_{sector}_{kind}.zip"
        for y in range(first_year, last_year + 1)
    ]


def _rebase(url: str, base_url: str | None) -> str:
    if base_url is None:
        return url
    base = base_url.rstrip("/")
    if url.startswith(DEFAULT_BASE_URL):
        return base + url[len(DEFAULT_BASE_URL) :]
    if "://" not in url:
        return f"{base}/{url.lstrip('/')}"
    return url


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        return {"files": {}}
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise InputError(
            path,
            "the download manifest is not valid JSON",
            "delete it; files already downloaded are re-hashed on the next run",
        ) from None
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        raise InputError(path, "the download manifest has no 'files' table", "delete it and run again")
    return m


def _request(url: str, start: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if start > 0:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)


def _download(url: str, target: Path, timeout: float) -> None:
    """Download ``url`` to ``target`` through ``target.part``, resuming a partial file."""
    if not url.startswith(("http://", "https://")):
        raise InputError(url, "not an http(s) URL", "use the EDGAR server URL or --base-url http://…")
    part = target.with_name(target.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    for attempt in range(2):
        try:
            resp = _request(url, start, timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and start > 0 and attempt == 0:  # range beyond the file: start again
                part.unlink()
                start = 0
                continue
            raise InputError(
                url,
                f"HTTP {e.code} {e.reason}",
                "check release, substance, sector and years (or --base-url); the server lists its files "
                "under the release folder",
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise InputError(
                url,
                f"cannot connect ({reason})",
                "check the network or --base-url and run again; partial downloads resume",
            ) from None
        break
    with resp:
        status = resp.status
        total = None
        if status == 206:
            cr = resp.headers.get("Content-Range", "")
            try:
                first = int(cr.split()[1].split("-")[0])
                total = int(cr.split("/")[1])
            except (IndexError, ValueError):
                raise InputError(url, f"bad Content-Range '{cr}'", "run again without the .part file") from None
            if first != start:
                raise InputError(
                    url, f"server resumed at byte {first}, not {start}", f"delete {part.name} and run again"
                )
            mode = "ab"
        else:  # 200: the server ignored the range; write the whole file
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
            mode = "wb"
            start = 0
        with open(part, mode) as f:
            shutil.copyfileobj(resp, f, CHUNK_BYTES)
    size = part.stat().st_size
    if total is not None and size != total:
        raise InputError(
            url, f"download incomplete ({size} of {total} bytes)", "run again: the download resumes from the .part file"
        )
    os.replace(part, target)


def _unpack(zip_path: Path, dest: Path) -> list[Path]:
    try:
        with zipfile.ZipFile(zip_path) as z:
            out = []
            for info in z.infolist():
                name = Path(info.filename).name  # flat, no path traversal
                if info.is_dir() or not name or name.startswith((".", "_")):
                    continue
                target = dest / name
                tmp = dest / f".{name}.unzip"
                with z.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK_BYTES)
                os.replace(tmp, target)
                out.append(target)
    except zipfile.BadZipFile:
        raise InputError(zip_path, "not a valid zip file", "delete it and run again") from None
    return out


def fetch(
    urls: Sequence[str],
    dest: str | Path,
    base_url: str | None = None,
    *,
    expected_sha256: Mapping[str, str] | None = None,
    unpack: bool = True,
    timeout: float = 120.0,
) -> list[Path]:
    """Download files into ``dest`` with resume, a sha256 manifest and unzipping.

    Parameters
    ----------
    urls
        Full URLs (e.g. from :func:`edgar_urls`) or paths relative to ``base_url``.
    dest
        Destination folder (created).
    base_url
        Replaces :data:`DEFAULT_BASE_URL` at the start of each URL (a mirror, or a test server).
    expected_sha256
        Optional pinned hashes by file name; a download whose hash differs is deleted and refused.
        Hashes recorded in the manifest by an earlier run are pinned the same way.
    unpack
        Extract ``.zip`` members (flat, without ``_readme`` files) next to the zip.
    timeout
        Socket timeout per request, seconds.

    Returns
    -------
    list of pathlib.Path
        The data files: unpacked members of each zip (or the downloaded files when not zips).

    Raises
    ------
    InputError
        One line naming the URL or file: HTTP errors (404…), connection errors, incomplete
        downloads, hash mismatches.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    files: dict = manifest["files"]
    pinned = dict(expected_sha256 or {})
    out: list[Path] = []
    for raw_url in urls:
        url = _rebase(raw_url, base_url)
        name = url.rstrip("/").rsplit("/", 1)[-1]
        target = dest / name
        entry = files.get(name)
        want = pinned.get(name) or (entry or {}).get("sha256")
        if (
            target.exists()
            and entry
            and entry.get("sha256") == file_sha256(target)
            and (want is None or want == entry["sha256"])
        ):
            members = [dest / m for m in entry.get("unpacked", [])]
            if unpack and name.lower().endswith(".zip") and not all(m.exists() for m in members):
                members = _unpack(target, dest)
            out.extend(members if (unpack and members) else [target])
            continue
        if target.exists():  # present but not recorded or not matching: fetch again
            target.unlink()
        _download(url, target, timeout)
        digest = file_sha256(target)
        if want is not None and digest != want:
            target.unlink()
            raise InputError(
                target,
                f"sha256 {digest[:12]}… does not match the expected {want[:12]}…",
                "the server's file changed or the download is corrupt: delete its manifest entry "
                "to accept the new file, or run again",
            )
        members = _unpack(target, dest) if unpack and name.lower().endswith(".zip") else []
        files[name] = {
            "url": url,
            "bytes": target.stat().st_size,
            "sha256": digest,
            "unpacked": [m.name for m in members],
            "unpacked_sha256": {m.name: file_sha256(m) for m in members},
        }
        write_json(manifest, manifest_path)
        out.extend(members or [target])
    return out


def fetch_edgar_command(
    release: str,
    substance: str,
    sector: str,
    first_year: int,
    last_year: int,
    dest: str | Path,
    base_url: str | None = None,
    kind: str = "emi_nc",
) -> list[Path]:
    """``cropn2o fetch-edgar``: download and unpack one release/substance/sector for a year range.

    Returns the unpacked data files (``.nc``), one per year, in year order.
    """
    urls = edgar_urls(release, substance, sector, first_year, last_year, kind=kind)
    return fetch(urls, dest, base_url=base_url)


__all__ = ["DEFAULT_BASE_URL", "RELEASES", "Release", "edgar_urls", "fetch", "fetch_edgar_command", "release_info"]

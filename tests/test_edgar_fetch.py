"""fetch-edgar: URLs, download with Range resume, sha256 manifest, unzip; against a local server
on 127.0.0.1 (no test touches the internet)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, InputError
from pipeline.readers import edgar_fetch

REL = "v80_FT2022_GHG/N2O/AGS/emi_nc"


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (url path -> bytes), honouring ``Range: bytes=N-`` unless disabled."""

    def do_GET(self):
        self.server.log.append((self.path, self.headers.get("Range")))
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        rng = self.headers.get("Range")
        if rng and self.server.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            chunk = body[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            chunk = body
            self.send_response(200)
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.files, srv.log, srv.ranges = {}, [], True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def make_zip(tmp_path: Path, year: int) -> bytes:
    inner = f"v8.0_FT2022_GHG_N2O_{year}_AGS_emi.nc"
    zp = tmp_path / f"src_{year}.zip"
    with zipfile.ZipFile(zp, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(inner, (f"fake netcdf {year} " * 5000).encode())
        z.writestr("_readme.html", "<html></html>")
    return zp.read_bytes()


def serve_years(server, tmp_path, years) -> dict[int, bytes]:
    blobs = {}
    for y in years:
        blobs[y] = make_zip(tmp_path, y)
        server.files[f"/{REL}/v8.0_FT2022_GHG_N2O_{y}_AGS_emi_nc.zip"] = blobs[y]
    return blobs


def test_official_urls():
    urls = edgar_fetch.edgar_urls("v8.0", "N2O", "AGS", 2005, 2006)
    assert urls[0] == (
        "https://jeodpp.jrc.ec.europa.eu/ftp/jrc-opendata/EDGAR/datasets/v80_FT2022_GHG/N2O/AGS/"
        "emi_nc/v8.0_FT2022_GHG_N2O_2005_AGS_emi_nc.zip"
    )
    assert len(urls) == 2
    f = edgar_fetch.edgar_urls("2024", "N2O", "AGS", 2023, 2023, kind="flx_nc", base_url="http://mirror/x/")
    assert f == ["http://mirror/x/EDGAR_2024_GHG/N2O/AGS/flx_nc/EDGAR_2024_GHG_N2O_2023_AGS_flx_nc.zip"]
    with pytest.raises(ConfigError, match="covers 1970-2022"):
        edgar_fetch.edgar_urls("v8.0", "N2O", "AGS", 1990, 2023)
    with pytest.raises(ConfigError, match="unknown EDGAR release"):
        edgar_fetch.edgar_urls("v9", "N2O", "AGS", 1990, 1991)


def test_fetch_unpacks_writes_manifest_and_skips(server, tmp_path):
    blobs = serve_years(server, tmp_path, [2004, 2005])
    dest = tmp_path / "dl"
    paths = edgar_fetch.fetch_edgar_command("v8.0", "N2O", "AGS", 2004, 2005, dest, base_url=server.base)
    assert [p.name for p in paths] == ["v8.0_FT2022_GHG_N2O_2004_AGS_emi.nc", "v8.0_FT2022_GHG_N2O_2005_AGS_emi.nc"]
    assert paths[0].read_bytes().startswith(b"fake netcdf 2004")
    assert not (dest / "_readme.html").exists()
    manifest = json.loads((dest / edgar_fetch.MANIFEST_NAME).read_text())
    entry = manifest["files"]["v8.0_FT2022_GHG_N2O_2005_AGS_emi_nc.zip"]
    assert entry["sha256"] == hashlib.sha256(blobs[2005]).hexdigest()
    assert entry["bytes"] == len(blobs[2005]) and entry["url"].startswith(server.base)
    assert not list(dest.glob("*.part")) and not list(dest.glob(".*tmp"))
    n = len(server.log)
    again = edgar_fetch.fetch_edgar_command("v8.0", "N2O", "AGS", 2004, 2005, dest, base_url=server.base)
    assert again == paths and len(server.log) == n  # complete with matching hash: no request
    # a corrupted local zip is fetched again
    (dest / "v8.0_FT2022_GHG_N2O_2004_AGS_emi_nc.zip").write_bytes(b"garbage")
    edgar_fetch.fetch_edgar_command("v8.0", "N2O", "AGS", 2004, 2005, dest, base_url=server.base)
    assert len(server.log) == n + 1
    assert (dest / "v8.0_FT2022_GHG_N2O_2004_AGS_emi_nc.zip").read_bytes() == blobs[2004]


@pytest.mark.parametrize("ranges", [True, False])
def test_resume_partial_download(server, tmp_path, ranges):
    server.ranges = ranges
    blobs = serve_years(server, tmp_path, [2010])
    dest = tmp_path / "dl"
    dest.mkdir()
    name = "v8.0_FT2022_GHG_N2O_2010_AGS_emi_nc.zip"
    cut = len(blobs[2010]) // 3
    (dest / (name + ".part")).write_bytes(blobs[2010][:cut])
    urls = edgar_fetch.edgar_urls("v8.0", "N2O", "AGS", 2010, 2010)
    edgar_fetch.fetch(urls, dest, base_url=server.base)
    assert server.log[-1][1] == f"bytes={cut}-"
    assert (dest / name).read_bytes() == blobs[2010]
    assert not (dest / (name + ".part")).exists()


def test_part_file_longer_than_remote_restarts(server, tmp_path):
    blobs = serve_years(server, tmp_path, [2011])
    dest = tmp_path / "dl"
    dest.mkdir()
    name = "v8.0_FT2022_GHG_N2O_2011_AGS_emi_nc.zip"
    (dest / (name + ".part")).write_bytes(b"x" * (len(blobs[2011]) + 10))
    edgar_fetch.fetch(edgar_fetch.edgar_urls("v8.0", "N2O", "AGS", 2011, 2011), dest, base_url=server.base)
    assert (dest / name).read_bytes() == blobs[2011]


def test_404_and_hash_mismatch_are_one_line(server, tmp_path):
    serve_years(server, tmp_path, [2000])
    dest = tmp_path / "dl"
    with pytest.raises(InputError) as e:
        edgar_fetch.fetch_edgar_command("v8.0", "N2O", "AGS", 2000, 2001, dest, base_url=server.base)
    msg = str(e.value)
    assert "HTTP 404" in msg and "2001_AGS_emi_nc.zip" in msg and "\n" not in msg and "Fix:" in msg
    # 2000 completed before the failure and is in the manifest
    assert (
        "v8.0_FT2022_GHG_N2O_2000_AGS_emi_nc.zip" in json.loads((dest / edgar_fetch.MANIFEST_NAME).read_text())["files"]
    )
    name = "v8.0_FT2022_GHG_N2O_2000_AGS_emi_nc.zip"
    other = tmp_path / "dl2"
    with pytest.raises(InputError) as e:
        edgar_fetch.fetch(
            edgar_fetch.edgar_urls("v8.0", "N2O", "AGS", 2000, 2000),
            other,
            base_url=server.base,
            expected_sha256={name: "0" * 64},
        )
    assert "does not match" in str(e.value) and "\n" not in str(e.value)
    assert not (other / name).exists()


def test_connection_refused_is_one_line(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(InputError, match="cannot connect"):
        edgar_fetch.fetch(["a.zip"], tmp_path, base_url=f"http://127.0.0.1:{port}", timeout=5)

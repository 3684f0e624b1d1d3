"""The report stage on a small SYNTHETIC demo run: every section, self-contained HTML, a real
browser (headless Chromium), sections that skip when their inputs are absent, and the grid reader
on the NetCDF layouts the grid stage may write."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipeline import io
from pipeline.cli import main
from pipeline.plots import maps
from pipeline.plots.coverage import weighted_quantiles
from tests.conftest import REPO, demo_input_overrides
from tests.report_browser import browser_unavailable, render_in_browser

STAGES = ["ingest", "fit", "estimate", "grid", "trend", "report"]
pytestmark = pytest.mark.xdist_group("report_run")  # one demo run per worker with --dist loadgroup


def _args(raw: Path, processed: Path) -> list[str]:
    args = ["--config", str(REPO / "config" / "default.yaml"), "-q"]
    for key, value in demo_input_overrides(raw).items():
        args += ["--set", f"{key}={value}"]
    return args + [
        "--set",
        f"processed_dir={processed}",
        "--set",
        "ingest.first_year=1990",
        "--set",
        "ingest.last_year=1995",
        "--set",
        "estimate.draws=40",
        "--set",
        "fit.cv_folds=2",
        "--set",
        "fit.ef_curve_draws=40",
        "--set",
        "fit.model=single_family",
        "--set",
        "trend.n_sim=199",
        "--set",
        "trend.max_breaks=1",
        "--set",
        "trend.min_segment_years=2",
        "--set",
        "grid.grids=[{name: 0p1deg, resolution_deg: 0.1}]",
    ]


@pytest.fixture(scope="module")
def report_run(demo_slice, tmp_path_factory) -> tuple[list[str], Path]:
    raw = demo_slice.path(demo_slice.inputs.boundaries.path).parent
    processed = tmp_path_factory.mktemp("report_run") / "processed"
    args = _args(raw, processed)
    for stage in STAGES:
        assert main([*args, stage]) == 0, stage
    return args, processed


def test_report_has_every_section_and_figures_in_png_and_svg(report_run) -> None:
    _, processed = report_run
    manifest = json.loads((processed / "report" / "manifest.json").read_text())
    assert {"coverage", "ef", "emissions", "breaks", "attribution", "slowdown", "maps"} <= set(manifest["sections"])
    figures = processed / "report" / "figures"
    stems = {p.stem for p in figures.glob("*.png")}
    assert stems == {p.stem for p in figures.glob("*.svg")}
    assert {"national_emissions", "maps_years", "ef_curves", "site_map", "breakpoints"} <= stems
    scope = json.loads((processed / "estimate" / "manifest.json").read_text())["emission_columns"]
    label = "SYNTHETIC demo world"
    for svg in figures.glob("*.svg"):
        text = svg.read_text(encoding="utf-8")
        assert label in text, f"{svg.name} is not labelled SYNTHETIC"
        assert "Units:" in text and "Source:" in text, svg.name
    national_svg = (figures / "national_emissions.svg").read_text(encoding="utf-8")
    assert scope.split(" (")[0] in national_svg
    for name, digest in manifest["outputs"].items():
        assert (processed / "report" / name).exists() and len(digest) == 64


def test_report_html_is_self_contained(report_run) -> None:
    _, processed = report_run
    html = (processed / "report" / "report.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(srcs) == len(list((processed / "report" / "figures").glob("*.png")))
    assert all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "SYNTHETIC" in html and "sha256" in html
    assert "observations.csv" in html  # an input file of ingest, listed with its hash


def test_report_in_headless_chromium(report_run, tmp_path) -> None:
    reason = browser_unavailable()
    if reason:
        pytest.skip(reason)
    _, processed = report_run
    shot = tmp_path / "report.png"
    r = render_in_browser(processed / "report" / "report.html", shot)
    assert r["console_errors"] == []
    assert r["images_total"] >= 10 and r["images_loaded"] == r["images_total"]
    assert r["external_requests"] == []
    assert shot.stat().st_size > 50_000
    assert r["viewport"]["scrollWidth"] <= r["viewport"]["width"] + 1, "the page scrolls sideways"
    print(f"screenshot: {shot}")


def test_sections_are_left_out_when_their_inputs_are_missing(report_run, tmp_path) -> None:
    args, processed = report_run
    copy = tmp_path / "processed"
    shutil.copytree(processed, copy, ignore=shutil.ignore_patterns("report", "geotiff", "weights"))
    (copy / "trend" / "manifest.json").unlink()  # trend "never ran"
    (copy / "grid" / "manifest.json").unlink()
    compare = copy / "compare"  # a compare stage's outputs, as it may write them
    compare.mkdir()
    png = (processed / "report" / "figures" / "attribution.png").read_bytes()
    (compare / "totals.png").write_bytes(png)
    pd.DataFrame({"year": [1990, 1991], "edgar_gg": [1.0, 2.0]}).to_csv(compare / "national.csv", index=False)
    io.write_json({"scope_note": "EDGAR 4C: direct + indirect agricultural soils"}, compare / "summary.json")
    io.write_json(
        {
            "stage": "compare",
            "outputs": {n: io.file_sha256(compare / n) for n in ("totals.png", "national.csv", "summary.json")},
        },
        compare / "manifest.json",
    )
    new_args = [a if not a.startswith("processed_dir=") else f"processed_dir={copy}" for a in args]
    assert main([*new_args, "report"]) == 0
    doc = json.loads((copy / "report" / "manifest.json").read_text())
    assert {"breaks", "attribution", "slowdown", "maps"}.isdisjoint(doc["sections"])
    assert {"coverage", "ef", "emissions", "compare"} <= set(doc["sections"])
    html = (copy / "report" / "report.html").read_text(encoding="utf-8")
    assert "EDGAR 4C: direct + indirect agricultural soils" in html
    assert not (copy / "report" / "figures" / "maps_years.png").exists()


# --- the grid reader --------------------------------------------------------------------------

CROPS = ["rice", "wheat", "maize"]


def _arrays(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lat = np.array([30.05, 30.15, 30.25])
    lon = np.array([110.05, 110.15])
    kg = rng.uniform(0, 100, size=(2, len(CROPS), lat.size, lon.size)).astype("float32")  # (year, crop, lat, lon)
    kg[:, :, 0, 0] = np.nan  # outside the domain
    return np.array([2000, 2001]), lat, lon, kg


def _expected(kg: np.ndarray) -> np.ndarray:
    total = np.nansum(kg.astype(float), axis=1)
    total[:, 0, 0] = np.nan
    return total


def test_grid_total_string_crop_dimension() -> None:
    years, lat, lon, kg = _arrays()
    time = pd.to_datetime([f"{y}-07-02" for y in years])
    ds = xr.Dataset(
        {"n2o_n": (("time", "crop", "lat", "lon"), kg, {"units": "kg"})},
        coords={"time": time, "crop": CROPS, "lat": lat, "lon": lon},
    )
    g = maps.grid_total(ds)
    np.testing.assert_array_equal(g.years, years)
    np.testing.assert_allclose(g.kg, _expected(kg), rtol=1e-6)


def test_grid_total_integer_crop_index_and_descending_lat() -> None:
    years, lat, lon, kg = _arrays(2)
    arr = np.moveaxis(kg, 1, -1)[:, ::-1]  # (time, lat descending, lon, crop)
    ds = xr.Dataset(
        {"n2o_n": (("time", "latitude", "longitude", "crop"), arr, {"units": "kg"}), "year": (("time",), years)},
        coords={
            "time": np.arange(2),
            "latitude": ("latitude", lat[::-1], {"axis": "Y"}),
            "longitude": ("longitude", lon, {"axis": "X"}),
            "crop": ("crop", np.arange(3), {"flag_values": np.arange(3), "flag_meanings": " ".join(CROPS)}),
        },
    )
    g = maps.grid_total(ds)
    np.testing.assert_array_equal(g.lat, lat)
    np.testing.assert_array_equal(g.years, years)
    np.testing.assert_allclose(g.kg, _expected(kg), rtol=1e-6)


def test_grid_total_per_crop_variables_ignores_flux_and_intervals() -> None:
    years, lat, lon, kg = _arrays(3)
    data = {f"n2o_n_{c}": (("time", "lat", "lon"), kg[:, i], {"units": "kg"}) for i, c in enumerate(CROPS)}
    data["n2o_n_flux"] = (("time", "lat", "lon"), kg[:, 0] * 1e-9, {"units": "kg m-2 s-1"})
    data["n2o_n_rice_hi95"] = (("time", "lat", "lon"), kg[:, 0] * 5, {"units": "kg"})
    data["cell_area"] = (("lat", "lon"), np.full((3, 2), 1e8), {"units": "m2"})
    ds = xr.Dataset(data, coords={"time": years, "lat": lat, "lon": lon})
    g = maps.grid_total(ds)
    np.testing.assert_allclose(g.kg, _expected(kg), rtol=1e-6)
    np.testing.assert_allclose(g.density(2001), _expected(kg)[1] / 100.0, rtol=1e-6)  # 1e8 m2 = 100 km2


def test_grid_total_prefers_a_total_variable() -> None:
    years, lat, lon, kg = _arrays(4)
    total = _expected(kg)
    ds = xr.Dataset(
        {
            "n2o_n_rice": (("time", "lat", "lon"), kg[:, 0], {"units": "kg"}),
            "n2o_n_total": (("time", "lat", "lon"), total, {"units": "kg"}),
        },
        coords={"time": years, "lat": lat, "lon": lon},
    )
    g = maps.grid_total(ds)
    np.testing.assert_allclose(g.kg, total)
    # no cell_area: spherical cell area, 0.1 deg x 0.1 deg at 30 N is about 9.6 x 11.1 km
    assert g.cell_area_km2[1, 0] == pytest.approx(111.19 * 0.1 * 111.19 * 0.1 * np.cos(np.radians(30.15)), rel=2e-3)


def test_weighted_quantiles() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=50)
    q = np.array([0.05, 0.5, 0.95])
    # equal weights: Hyndman & Fan type 5 ("hazen")
    np.testing.assert_allclose(weighted_quantiles(v, np.ones(50), q), np.quantile(v, q, method="hazen"))
    # by hand: sorted values 1, 3, 5, 9 with weights 3, 2, 1, 2 -> F = 0.1875, 0.5, 0.6875, 0.875
    got = weighted_quantiles(np.array([5.0, 1.0, 3.0, 9.0]), np.array([1.0, 3.0, 2.0, 2.0]), np.array([0.5, 0.6]))
    np.testing.assert_allclose(got, [3.0, 3.0 + 2.0 * 0.1 / 0.1875])

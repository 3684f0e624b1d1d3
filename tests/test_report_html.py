"""pipeline.plots.report_html: a self-contained, deterministic report, checked in headless Chromium."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from pipeline.plots import report_html, style
from pipeline.plots.report_html import ReportFigure, ReportTable, Section
from tests.report_browser import browser_unavailable, render_in_browser

LABEL = "SYNTHETIC demo world, not real statistics"
SCOPE = "direct N2O, fertilizer-induced, without background"
SOURCE = "cropn2o estimate stage (demo world)"


def _national_figure():
    rng = np.random.default_rng(3)
    years = np.arange(1990, 2015)
    mean = 150 + 11.2 * np.minimum(years - 1990, 13) + 2.8 * np.maximum(years - 2003, 0)
    mean = mean + rng.normal(0, 2.5, years.size)
    half = 0.12 * mean + 10
    fig = style.new_figure(style.DOUBLE_COLUMN_IN, 3.2)
    ax = fig.add_subplot()
    ax.fill_between(
        years,
        mean - half,
        mean + half,
        alpha=style.BAND_ALPHA,
        linewidth=0,
        color=style.PALETTE[0],
        label="fitted, 95 % interval",
    )
    ax.plot(years, mean, color=style.PALETTE[0], label="fitted (nonlinear EF)")
    ax.plot(years, 0.85 * mean + 20, color=style.PALETTE[1], linestyle="--", label="IPCC Tier 1")
    ax.axvline(2003, color="0.35", linewidth=0.9, linestyle=":")
    ax.annotate(
        "break 2003",
        xy=(2003, ax.get_ylim()[0]),
        xytext=(3, 4),
        textcoords="offset points",
        fontsize=style.FONT_SIZE - 1,
        color="0.25",
    )
    ax.set_xlim(years[0], years[-1])
    ax.set_xlabel("year")
    ax.set_ylabel("Gg N2O-N yr⁻¹")
    ax.set_title("National direct cropland N2O emission")
    ax.legend(loc="upper left")
    style.stamp(fig, LABEL, SCOPE, "Gg N2O-N yr-1", SOURCE)
    return fig


def _map_figure():
    lon = np.arange(73.0, 135.01, 0.5)
    lat = np.arange(18.0, 54.01, 0.5)
    glon, glat = np.meshgrid(0.5 * (lon[1:] + lon[:-1]), 0.5 * (lat[1:] + lat[:-1]))
    inside = ((glon - 105) / 30) ** 2 + ((glat - 36) / 17) ** 2 < 1
    field = np.exp(-(((glon - 115) / 9) ** 2) - ((glat - 33) / 6) ** 2) * 40 + 2
    value = np.ma.masked_where(~inside, field)
    change = np.ma.masked_where(~inside, np.sin(glon / 6) * np.cos(glat / 5) * 8)
    fig = style.new_figure(style.DOUBLE_COLUMN_IN, 3.4)
    axes = fig.subplots(1, 2)
    for ax, data, cmap, norm, title, unit in (
        (axes[0], value, style.CMAP_SEQUENTIAL, None, "2014", "kg N2O-N ha⁻¹ yr⁻¹"),
        (axes[1], change, style.CMAP_DIVERGING, style.diverging_norm(change), "change 2003→2014", "kg N2O-N ha⁻¹ yr⁻¹"),
    ):
        mesh = ax.pcolormesh(lon, lat, data, cmap=cmap, norm=norm, shading="flat", rasterized=True)
        ax.set_aspect(1 / np.cos(np.deg2rad(36)))
        ax.set_xlabel("longitude (°E)")
        ax.set_ylabel("latitude (°N)")
        ax.set_title(title)
        ax.grid(False)
        style.colorbar(fig, mesh, ax, unit)
    style.stamp(fig, LABEL, SCOPE + ", 0.5° grid", "kg N2O-N ha-1 yr-1", SOURCE)
    return fig


def _ef_svg() -> str:
    """A single-column EF(N) curve embedded as SVG only (text stays text in the browser)."""
    n = np.linspace(0, 400, 81)
    fig = style.new_figure(style.SINGLE_COLUMN_IN, 2.6)
    ax = fig.add_subplot()
    for k, (b, name) in enumerate(((0.0038, "maize"), (0.0030, "wheat"), (0.0022, "rice"))):
        ef = (np.exp(b * n) - 1) / np.where(n > 0, n, np.nan) * 100 * 0.6
        ax.plot(n, ef, color=style.PALETTE[k], linestyle=style.LINESTYLES[k], label=name)
    ax.axhline(1.0, color="0.3", linewidth=0.9, label="Tier 1 EF1")
    ax.set_xlabel("N rate (kg N ha⁻¹)")
    ax.set_ylabel("EF(N) (%)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncols=2, borderaxespad=0.0)
    style.stamp(fig, LABEL, "direct N2O, fertilizer-induced", "% of N applied", "cropn2o fit stage")
    return style.render_svg(fig)


def _table():
    return pd.DataFrame(
        {
            "province": ["Henan", "Hunan", "<script>alert(1)</script>"],
            "emission_Gg_N2O_N": [31.25, 18.5, np.nan],
            "lower_95": [25.0, 14.1, np.nan],
            "upper_95": [38.7, 23.9, np.nan],
        }
    )


def _sections():
    national = _national_figure()
    maps = _map_figure()
    return [
        Section(
            "national",
            "National emissions",
            "Fitted inventory against IPCC Tier 1 on the same activity data.\n\nShaded: 95 % Monte Carlo interval.",
            figures=[
                ReportFigure.from_matplotlib(
                    national, f"National total, Gg N2O-N yr-1; {SCOPE}; source: {SOURCE}.", svg=True
                )
            ],
            tables=[ReportTable(_table(), f"Provincial totals 2014, Gg N2O-N yr-1; {SCOPE}.")],
        ),
        Section(
            "ef",
            "Emission factors",
            "EF(N) per crop against IPCC Tier 1.",
            figures=[ReportFigure(f"EF(N), % of N applied; {SCOPE}; source: cropn2o fit stage.", svg=_ef_svg())],
        ),
        Section(
            "maps",
            "Maps",
            "Emission density and its change across the break.",
            figures=[
                ReportFigure.from_matplotlib(maps, f"Emission density, kg N2O-N ha-1 yr-1; {SCOPE}; source: {SOURCE}.")
            ],
        ),
    ]


PROVENANCE = {
    "inputs": {
        "observations": {"path": "data_raw/demo/observations.csv", "sha256": "ab" * 32},
        "n_rate": {"path": "data_raw/demo/n_rate", "sha256": "cd" * 32},
    },
    "config": {"estimate": {"draws": 1000, "seed": 42}, "fit": {"form": "exponential"}},
    "versions": {"cropn2o": "0.1.0", "matplotlib": "x"},
    "run": "demo",
}


@pytest.fixture(scope="module")
def report_text():
    return report_html.build_report(_sections(), "cropn2o inventory report", PROVENANCE, LABEL)


def test_report_is_self_contained_and_deterministic(report_text, tmp_path):
    again = report_html.build_report(_sections(), "cropn2o inventory report", PROVENANCE, LABEL)
    assert again == report_text
    # every src/href is a data: URI or an in-page anchor
    refs = re.findall(r'(?:src|href)="([^"]*)"', report_text)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [
        r[:40] for r in refs if not r.startswith(("data:", "#"))
    ]
    assert "http://" not in report_text and "https://" not in report_text
    assert "<script" not in report_text.lower().replace("&lt;script&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report_text  # table cells escaped
    assert report_text.count("data:image/png;base64,") == 2
    assert "data:image/svg+xml;base64," in report_text  # SVG download link
    assert "Content-Security-Policy" in report_text
    # header label, table of contents, provenance
    assert f'<p class="label synthetic" role="alert">{LABEL}</p>' in report_text
    assert "<title>[SYNTHETIC] cropn2o inventory report</title>" in report_text
    assert len(re.findall(r'<img class="vector" src="data:image/svg\+xml;base64,', report_text)) == 1
    for anchor in ("national", "ef", "maps", "provenance"):
        assert f'<a href="#{anchor}">' in report_text and f'id="{anchor}"' in report_text
    assert "ab" * 32 in report_text and "draws: 1000" in report_text
    path = report_html.write_report(
        tmp_path / "r" / "report.html", _sections(), "cropn2o inventory report", PROVENANCE, LABEL
    )
    assert path.read_bytes() == report_text.encode("utf-8")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="caption"):
        ReportFigure(caption=" ", png=b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="section id"):
        Section("has space", "t")
    with pytest.raises(ValueError, match="duplicate"):
        report_html.build_report([Section("a", "A"), Section("a", "B")], "t", {}, "label")
    real = report_html.build_report([Section("a", "A")], "t", {}, "Shang et al. inputs")
    assert '<p class="label">Shang et al. inputs</p>' in real
    assert "label synthetic" not in real and "[SYNTHETIC]" not in real


needs_browser = pytest.mark.skipif(browser_unavailable() is not None, reason=str(browser_unavailable()))


@needs_browser
def test_report_renders_in_headless_chromium(report_text, tmp_path):
    html_path = tmp_path / "report.html"
    html_path.write_text(report_text, encoding="utf-8")
    shot = tmp_path / "report.png"
    result = render_in_browser(html_path, shot)
    assert result["console_errors"] == []
    assert result["images_total"] == 3
    assert result["images_loaded"] == result["images_total"]
    assert result["external_requests"] == []
    assert all(im["displayedWidth"] > 300 and im["naturalHeight"] > 100 for im in result["images"])
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG")
    assert result["page_size"]["height"] > 900  # the full page, not only the viewport
    # narrow screen: images scale down, nothing overflows horizontally
    narrow = render_in_browser(html_path, tmp_path / "report_narrow.png", width=420, height=800)
    assert narrow["console_errors"] == [] and narrow["images_loaded"] == 3
    vp = narrow["viewport"]
    assert vp["width"] < 700
    assert all(im["displayedWidth"] <= vp["width"] for im in narrow["images"])
    assert vp["scrollWidth"] <= vp["width"]  # tables scroll inside their own box


@needs_browser
def test_external_image_is_detected_and_does_not_hang(report_text, tmp_path):
    import time

    broken = '<img src="http://example.com/x.png" alt="external">'
    # 1. inside the report: the CSP refuses it, and it is still reported
    html_path = tmp_path / "broken.html"
    html_path.write_text(report_text.replace("<main>\n", "<main>\n" + broken, 1), encoding="utf-8")
    t0 = time.monotonic()
    result = render_in_browser(html_path, tmp_path / "broken.png", timeout_s=20)
    assert "http://example.com/x.png" in result["external_requests"]
    assert result["images_loaded"] == result["images_total"] - 1
    assert result["console_errors"]
    # 2. a bare page without CSP: the request really goes out and fails at once
    bare = tmp_path / "bare.html"
    bare.write_text(f"<!DOCTYPE html><html><head><title>x</title></head><body>{broken}</body></html>", encoding="utf-8")
    result = render_in_browser(bare, tmp_path / "bare.png", timeout_s=20)
    assert "http://example.com/x.png" in result["requests"]
    assert result["external_requests"] == ["http://example.com/x.png"]
    assert result["images_total"] == 1 and result["images_loaded"] == 0
    assert any("example.com" in e or "ERR_" in e for e in result["console_errors"])
    assert time.monotonic() - t0 < 40

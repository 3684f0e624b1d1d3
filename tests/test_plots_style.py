"""pipeline.plots.style: deterministic, atomic PNG + SVG, stamped with the dataset label."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import colors as mcolors
from matplotlib import rcParams

from pipeline.plots import style

LABEL = "SYNTHETIC demo world, not real statistics"
UNITS = "Gg N2O-N yr-1"


def _raw(rc) -> dict:
    """rcParams values without resolving the backend (which would import pyplot)."""
    return {k: dict.__getitem__(rc, k) for k in dict.keys(rc)}


def _line_figure(seed: int = 0):
    rng = np.random.default_rng(seed)
    years = np.arange(1990, 2015)
    mean = 150 + 11 * np.minimum(years - 1990, 13) + 2.8 * np.maximum(years - 2003, 0)
    mean = mean + rng.normal(0, 3, years.size)
    fig = style.new_figure(style.DOUBLE_COLUMN_IN, 3.0)
    ax = fig.add_subplot()
    ax.fill_between(years, mean * 0.8, mean * 1.2, alpha=style.BAND_ALPHA, linewidth=0, label="95 % interval")
    ax.plot(years, mean, label="fitted")
    ax.plot(years, mean * 0.9, label="IPCC Tier 1")
    ax.set_xlabel("year")
    ax.set_ylabel(f"direct emission ({UNITS})")
    ax.legend(loc="upper left")
    style.stamp(fig, LABEL, "direct N2O, fertilizer-induced, without background", UNITS, "cropn2o estimate stage")
    return fig


def test_rerun_is_byte_identical_and_writes_png_and_svg(tmp_path):
    first = style.save_figure(_line_figure(), tmp_path / "a" / "national")
    assert [p.name for p in first] == ["national.png", "national.svg"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in first)
    bytes1 = [p.read_bytes() for p in first]
    assert bytes1[0].startswith(b"\x89PNG\r\n\x1a\n")
    assert b"<svg" in bytes1[1][:2000]
    # a rerun (fresh figure, same data) and a second save of one figure give the same bytes
    second = style.save_figure(_line_figure(), tmp_path / "b" / "national")
    assert [p.read_bytes() for p in second] == bytes1
    fig = _line_figure()
    style.save_figure(fig, tmp_path / "c" / "national")
    again = style.save_figure(fig, tmp_path / "c" / "national")
    assert [p.read_bytes() for p in again] == bytes1
    # nothing left behind by the atomic write
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["national.png", "national.svg"]


def test_metadata_has_no_date_or_software_version(tmp_path):
    png, svg = style.save_figure(_line_figure(), tmp_path / "f")
    text = svg.read_text(encoding="utf-8")
    assert "<dc:date>" not in text and "Matplotlib v" not in text
    assert b"Software" not in png.read_bytes()[:4096]
    assert b"Matplotlib" not in png.read_bytes()


def test_label_scope_units_source_in_svg_text(tmp_path):
    _, svg = style.save_figure(_line_figure(), tmp_path / "f")
    text = svg.read_text(encoding="utf-8")
    assert f">{LABEL}</text>" in text  # drawn as real text, not only in metadata
    assert "direct N2O, fertilizer-induced" in text and UNITS in text
    assert "cropn2o estimate stage" in text


def test_unstamped_figure_is_refused(tmp_path):
    fig = style.new_figure(3, 2)
    fig.add_subplot().plot([0, 1], [0, 1])
    with pytest.raises(ValueError, match="stamp"):
        style.save_figure(fig, tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_failed_render_leaves_previous_files(tmp_path, monkeypatch):
    paths = style.save_figure(_line_figure(), tmp_path / "f")
    before = [p.read_bytes() for p in paths]

    def boom(fig):
        raise RuntimeError("svg failed")

    monkeypatch.setattr(style, "render_svg", boom)
    with pytest.raises(RuntimeError):
        style.save_figure(_line_figure(seed=1), tmp_path / "f")
    assert [p.read_bytes() for p in paths] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]


def test_footer_does_not_overlap_axes():
    fig = _line_figure()
    style.stamp(fig, LABEL, "direct N2O " * 12, UNITS, "a long source description " * 4)
    style.render_png(fig)  # lays out a copy; lay out the figure itself to measure it
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    footer_top = max(t.get_window_extent(renderer).y1 for t in fig._cropn2o_footer)
    for ax in fig.axes:
        assert ax.get_tightbbox(renderer).y0 >= footer_top - 0.5
    for t in fig._cropn2o_footer:
        bb = t.get_window_extent(renderer)
        assert bb.x0 >= 0 and bb.x1 <= fig.bbox.width + 0.5 and bb.y0 >= 0


def test_style_is_scoped_and_applied():
    before = _raw(rcParams)
    fig = _line_figure()
    style.render_svg(fig)
    assert _raw(rcParams) == before  # global state untouched
    ax = fig.axes[0]
    assert ax.get_legend().get_texts()[0].get_fontsize() == style.RC["legend.fontsize"]
    assert ax.xaxis.label.get_fontsize() == style.RC["axes.labelsize"]
    ax.set_title("t")
    assert ax.title.get_fontsize() == style.RC["axes.titlesize"]
    assert ax.title.get_fontweight() == style.RC["axes.titleweight"]
    assert mcolors.to_hex(ax.lines[0].get_color()).upper() == style.PALETTE[0].upper()


def test_palette_is_greyscale_distinguishable_with_linestyles():
    def lum(hexcolor):
        r, g, b = mcolors.to_rgb(hexcolor)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    lums = [lum(c) for c in style.PALETTE]
    # neighbours in the cycle differ in lightness, and every series also has its own dash
    assert all(abs(a - b) > 0.1 for a, b in itertools.pairwise(lums))
    assert len(set(map(str, style.LINESTYLES))) == len(style.PALETTE)
    assert style.diverging_norm([-3, 1, np.nan]).vmin == -3


def test_import_has_no_side_effects():
    # raw values: reading rcParams["backend"] would resolve the backend and load pyplot
    code = (
        "import sys, matplotlib; raw = lambda: {k: dict.__getitem__(matplotlib.rcParams, k) "
        "for k in dict.keys(matplotlib.rcParams)}; before = raw(); "
        "import pipeline.plots.style, pipeline.plots.report_html; "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
        "assert raw() == before, 'rcParams changed'"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.returncode == 0, out.stderr

"""One place for the look of every cropn2o figure (issue #13, item 5).

Figures are built on :class:`matplotlib.figure.Figure` directly: no pyplot, no global backend
switch, and nothing changes matplotlib's global state at import or afterwards. The style lives in
:data:`RC` and is applied through :func:`matplotlib.rc_context` whenever a :class:`StyledFigure`
(from :func:`new_figure`) creates axes, legends or text, draws or saves itself.

Typical use::

    from pipeline.plots import style

    fig = style.new_figure(style.DOUBLE_COLUMN_IN, 3.2)
    ax = fig.add_subplot()
    ax.plot(years, mean, label="fitted")
    ax.fill_between(years, lo, hi, alpha=style.BAND_ALPHA, linewidth=0)
    style.stamp(fig, label=cfg_label, scope="direct N2O, fertilizer-induced, no background",
                units="Gg N2O-N yr-1", source="cropn2o estimate stage")
    paths = style.save_figure(fig, out_dir / "national")   # national.png + national.svg

Colour choices (readable by colour-blind readers and in greyscale):

* qualitative: the Okabe-Ito palette (:data:`PALETTE`), ordered so that neighbours differ in
  lightness, and paired with line styles (:data:`LINESTYLES`) in the default property cycle so
  series stay distinguishable when printed in grey;
* sequential: ``viridis`` (:data:`CMAP_SEQUENTIAL`) or ``cividis`` (:data:`CMAP_SEQUENTIAL_CVD`),
  both monotonic in lightness;
* diverging: ``PuOr_r`` (:data:`CMAP_DIVERGING`; purple = decrease, orange = increase), a
  ColorBrewer colour-blind-safe scheme. A diverging map in greyscale shows magnitude but not sign,
  so centre it at zero with :func:`diverging_norm` and keep the colour bar.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cycler import cycler
from matplotlib import colors as mcolors
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "BAND_ALPHA",
    "CMAP_DIVERGING",
    "CMAP_SEQUENTIAL",
    "CMAP_SEQUENTIAL_CVD",
    "DOUBLE_COLUMN_IN",
    "DPI",
    "FONT_SIZE",
    "FOOTER_FONT_SIZE",
    "LINESTYLES",
    "MARKERS",
    "OKABE_ITO",
    "PALETTE",
    "RC",
    "SINGLE_COLUMN_IN",
    "Stamp",
    "StyledAxes",
    "StyledFigure",
    "colorbar",
    "diverging_norm",
    "get_stamp",
    "new_figure",
    "render_png",
    "render_svg",
    "save_figure",
    "stamp",
    "styled",
]

# --- colours ------------------------------------------------------------------------------------

#: The eight Okabe-Ito colours by name (Okabe & Ito 2008, "Color Universal Design").
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: Qualitative palette in cycle order: alternating dark / light so neighbours differ in grey.
#: Yellow is left out (too light on white for lines); use it only for fills.
PALETTE: tuple[str, ...] = (
    OKABE_ITO["blue"],
    OKABE_ITO["orange"],
    OKABE_ITO["bluish_green"],
    OKABE_ITO["sky_blue"],
    OKABE_ITO["vermillion"],
    OKABE_ITO["reddish_purple"],
    OKABE_ITO["black"],
)

#: Line styles paired with :data:`PALETTE` in the default cycle (greyscale-readable series).
LINESTYLES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 2)), (0, (8, 2)))
#: Markers for scatter-like series, same order as :data:`PALETTE`.
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")

CMAP_SEQUENTIAL = "viridis"
CMAP_SEQUENTIAL_CVD = "cividis"
CMAP_DIVERGING = "PuOr_r"
#: Opacity of uncertainty bands drawn with ``fill_between``.
BAND_ALPHA = 0.25

# --- sizes --------------------------------------------------------------------------------------

SINGLE_COLUMN_IN = 3.5  # typical journal single column, inches
DOUBLE_COLUMN_IN = 7.2  # typical journal full width, inches
DPI = 200
FONT_SIZE = 9.0
FOOTER_FONT_SIZE = 7.0
_FOOTER_LINE_IN = FOOTER_FONT_SIZE * 1.35 / 72.0  # height of one footer line, inches
_FOOTER_PAD_IN = 0.06
_SVG_HASHSALT = "cropn2o"

#: rcParams applied (only inside :func:`styled`) to every cropn2o figure.
RC: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE + 1,
    "axes.titleweight": "bold",
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": FONT_SIZE - 1,
    "ytick.labelsize": FONT_SIZE - 1,
    "legend.fontsize": FONT_SIZE - 1,
    "legend.title_fontsize": FONT_SIZE - 1,
    "legend.frameon": False,
    "figure.titlesize": FONT_SIZE + 2,
    "figure.dpi": 100,
    "axes.prop_cycle": cycler(color=list(PALETTE)) + cycler(linestyle=list(LINESTYLES)),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d9d9d9",
    "grid.linewidth": 0.5,
    "axes.axisbelow": True,
    "axes.linewidth": 0.8,
    "lines.linewidth": 1.6,
    "lines.markersize": 4.5,
    "image.cmap": CMAP_SEQUENTIAL,
    "savefig.dpi": DPI,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    "svg.hashsalt": _SVG_HASHSALT,  # deterministic clip-path / glyph ids
    "svg.fonttype": "none",  # text stays text: searchable, editable for journals
    "svg.image_inline": True,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
}


def styled() -> contextlib.AbstractContextManager:
    """Context manager applying :data:`RC` (matplotlib's global rcParams restored on exit)."""
    # cast: matplotlib's stubs type rc_context's keys as a Literal of rcParams names; RC's keys are
    # valid rcParams (a typo raises KeyError at runtime), but a dict[str, Any] cannot show that
    return rc_context(cast(Any, RC))


def _in_style(method):
    def wrapper(self, *args, **kwargs):
        with styled():
            return method(self, *args, **kwargs)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    wrapper.__wrapped__ = method
    return wrapper


class StyledAxes(Axes):
    """Axes whose titles, legends and free text pick up :data:`RC`.

    These methods read rcParams when called, not when the axes were made, so they run inside
    :func:`styled` too. Anything else reads its style at axes creation or at draw time, both of
    which :class:`StyledFigure` already wraps.
    """

    set_title = _in_style(Axes.set_title)  # reads axes.titlesize / titleweight when called
    legend = _in_style(Axes.legend)
    text = _in_style(Axes.text)
    annotate = _in_style(Axes.annotate)
    table = _in_style(Axes.table)
    bar_label = _in_style(Axes.bar_label)
    clabel = _in_style(Axes.clabel)
    inset_axes = _in_style(Axes.inset_axes)
    secondary_xaxis = _in_style(Axes.secondary_xaxis)
    secondary_yaxis = _in_style(Axes.secondary_yaxis)
    twinx = _in_style(Axes.twinx)
    twiny = _in_style(Axes.twiny)


class StyledFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that creates, draws and saves itself in :data:`RC`.

    Axes added without a projection are :class:`StyledAxes`. Drawing happens in the style too,
    so lazily created tick labels get the style's sizes.
    """

    def add_subplot(self, *args, **kwargs):
        if not {"projection", "polar", "axes_class"} & kwargs.keys():
            kwargs["axes_class"] = StyledAxes
        with styled():
            return super().add_subplot(*args, **kwargs)

    def add_axes(self, *args, **kwargs):
        if args and isinstance(args[0], Axes):
            return super().add_axes(*args, **kwargs)
        if not {"projection", "polar", "axes_class"} & kwargs.keys():
            kwargs["axes_class"] = StyledAxes
        with styled():
            return super().add_axes(*args, **kwargs)

    colorbar = _in_style(Figure.colorbar)
    legend = _in_style(Figure.legend)
    text = _in_style(Figure.text)
    suptitle = _in_style(Figure.suptitle)
    supxlabel = _in_style(Figure.supxlabel)
    supylabel = _in_style(Figure.supylabel)
    draw = _in_style(Figure.draw)
    savefig = _in_style(Figure.savefig)


def new_figure(width_in: float, height_in: float) -> StyledFigure:
    """A white, constrained-layout :class:`StyledFigure` of ``width_in`` × ``height_in`` inches
    with an Agg canvas attached (no pyplot, not registered with any figure manager)."""
    if not (width_in > 0 and height_in > 0):
        raise ValueError(f"figure size must be positive, got {width_in} x {height_in} in")
    with styled():
        fig = StyledFigure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def diverging_norm(values=None, *, vmax: float | None = None) -> mcolors.Normalize:
    """A norm centred at zero and symmetric, for :data:`CMAP_DIVERGING` maps of change.

    Give ``vmax`` or an array ``values`` (its largest finite absolute value is used)."""
    if vmax is None:
        import numpy as np

        arr = np.asarray(values, dtype=float)
        finite = np.abs(arr[np.isfinite(arr)])
        vmax = float(finite.max()) if finite.size else 1.0
    vmax = float(vmax) if vmax and vmax > 0 else 1.0
    return mcolors.Normalize(vmin=-vmax, vmax=vmax)


def colorbar(fig: Figure, mappable, ax: Axes, label: str, *, width: float = 0.035, pad: float = 0.03, **kwargs):
    """A colour bar exactly as tall as ``ax`` (maps with a fixed aspect included), labelled.

    Drawn in an inset axes right of ``ax`` so it follows the map's box rather than the grid cell.
    """
    with styled():
        cax = ax.inset_axes((1.0 + pad, 0.0, width, 1.0))
        cb = fig.colorbar(mappable, cax=cax, **kwargs)
        cb.set_label(label)
    return cb


# --- the footer stamp ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    """What :func:`stamp` wrote on a figure (kept on the figure for :func:`save_figure`)."""

    label: str
    scope: str
    units: str
    source: str

    def lines(self) -> list[str]:
        return [self.label, f"Scope: {self.scope}", f"Units: {self.units}", f"Source: {self.source}"]


_STAMP_ATTR = "_cropn2o_stamp"


def _wrap(text: str, width_chars: int) -> list[str]:
    return textwrap.wrap(text, width=max(width_chars, 20), break_long_words=True, break_on_hyphens=False) or [""]


def _join_fields(fields: list[str], width_chars: int, sep: str = "  ·  ") -> list[str]:
    """Fields joined by ``sep`` on as few lines as fit; a line breaks between fields first."""
    lines: list[str] = []
    current = ""
    for f in fields:
        candidate = f"{current}{sep}{f}" if current else f
        if len(candidate) <= width_chars:
            current = candidate
            continue
        if current:
            lines.append(current)
        wrapped = _wrap(f, width_chars)
        lines.extend(wrapped[:-1])
        current = wrapped[-1]
    if current:
        lines.append(current)
    return lines


def stamp(fig: Figure, label: str, scope: str, units: str, source: str) -> Stamp:
    """Write the dataset label, scope, units and data source as a footer under the axes.

    The label line comes first, in bold (vermillion when it says SYNTHETIC); scope, units and
    source follow, wrapped to the figure width. The footer's height is reserved in the
    constrained layout, so it never overlaps axes, tick labels or colour bars. Stamping again
    replaces the previous footer.
    """
    fields = {"label": label, "scope": scope, "units": units, "source": source}
    for name, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"stamp: {name} must be a non-empty string")
    info = Stamp(**{k: " ".join(v.split()) for k, v in fields.items()})

    for artist in getattr(fig, "_cropn2o_footer", ()):
        artist.remove()

    width_in, height_in = fig.get_size_inches()
    # DejaVu Sans averages ~0.5 em per character in prose; stay a little under the width.
    chars = int((width_in - 0.2) * 72.0 / (FOOTER_FONT_SIZE * 0.53))
    label_lines = _wrap(info.label, chars)
    detail_lines = _join_fields([f"Scope: {info.scope}", f"Units: {info.units}", f"Source: {info.source}"], chars)
    n_lines = len(label_lines) + len(detail_lines)
    footer_in = n_lines * _FOOTER_LINE_IN + 2 * _FOOTER_PAD_IN
    footer_frac = min(footer_in / height_in, 0.45)

    synthetic = "SYNTHETIC" in info.label.upper()
    x0 = 0.1 / width_in
    y_top = footer_frac - _FOOTER_PAD_IN / height_in
    with styled():
        t1 = fig.text(
            x0,
            y_top,
            "\n".join(label_lines),
            ha="left",
            va="top",
            fontsize=FOOTER_FONT_SIZE,
            fontweight="bold",
            linespacing=1.2,
            color=OKABE_ITO["vermillion"] if synthetic else "#222222",
            gid="cropn2o-stamp-label",
        )
        t2 = fig.text(
            x0,
            y_top - len(label_lines) * _FOOTER_LINE_IN / height_in,
            "\n".join(detail_lines),
            ha="left",
            va="top",
            fontsize=FOOTER_FONT_SIZE,
            linespacing=1.2,
            color="#333333",
            gid="cropn2o-stamp-detail",
        )
    for t in (t1, t2):
        t.set_in_layout(False)
    fig._cropn2o_footer = (t1, t2)  # type: ignore[attr-defined]  # private marker, removed on restamp (above)

    engine = fig.get_layout_engine()
    if engine is not None and hasattr(engine, "set") and "rect" in engine.get():
        # type: ignore: the base LayoutEngine.set takes no rect; the engines passing the check
        # above (constrained, tight) do
        engine.set(rect=(0.0, footer_frac, 1.0, 1.0 - footer_frac))  # type: ignore[call-arg]
    else:  # no constrained layout: shrink the subplots instead
        fig.subplots_adjust(bottom=max(footer_frac + 0.08, fig.subplotpars.bottom))
    setattr(fig, _STAMP_ATTR, info)
    return info


def get_stamp(fig: Figure) -> Stamp | None:
    """The :class:`Stamp` written on ``fig`` by :func:`stamp`, or None."""
    return getattr(fig, _STAMP_ATTR, None)


# --- deterministic rendering and atomic saving ------------------------------------------------


def _metadata(fig: Figure, fmt: str) -> dict[str, Any]:
    info = get_stamp(fig)
    if fmt == "png":
        md: dict[str, Any] = {"Software": None}
        if info is not None:
            md.update({"Title": info.label, "Description": " | ".join(info.lines()[1:]), "Source": info.source})
        return md
    md = {"Date": None, "Creator": None}
    if info is not None:
        md.update({"Title": info.label, "Description": " | ".join(info.lines()[1:]), "Source": info.source})
    return md


def _pristine_copy(fig: Figure) -> Figure:
    """A copy of ``fig`` in its current, not-yet-rendered state.

    Constrained layout is iterative: each draw starts from the positions the previous draw left,
    so rendering the same figure twice can shift axes by a fraction of a point. Rendering a fresh
    copy each time makes the output depend on the figure's content only. Figures that cannot be
    pickled (e.g. a lambda tick formatter) are rendered directly: still deterministic for a fresh
    figure built the same way, but not across repeated renders of one figure.
    """
    try:
        copy = pickle.loads(pickle.dumps(fig, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001 - any pickling failure falls back to the figure itself
        return fig
    setattr(copy, _STAMP_ATTR, get_stamp(fig))
    return copy


def _print(fig: Figure, fh, fmt: str, dpi: float) -> None:
    metadata = _metadata(fig, fmt)
    target = _pristine_copy(fig)
    if not isinstance(target.canvas, FigureCanvasAgg):
        FigureCanvasAgg(target)
    with styled():
        target.savefig(fh, format=fmt, dpi=dpi, metadata=metadata)


def render_png(fig: Figure, dpi: float = DPI) -> bytes:
    """The figure as PNG bytes, with no software/date metadata (same figure → same bytes)."""
    buf = io.BytesIO()
    _print(fig, buf, "png", dpi)
    return buf.getvalue()


def render_svg(fig: Figure) -> str:
    """The figure as SVG text: fixed hash salt, no date, text kept as ``<text>`` elements."""
    buf = io.BytesIO()
    _print(fig, buf, "svg", DPI)
    return buf.getvalue().decode("utf-8")


def save_figure(
    fig: Figure, target_stem: str | os.PathLike, *, dpi: float = DPI, require_stamp: bool = True
) -> list[Path]:
    """Write ``<target_stem>.png`` and ``<target_stem>.svg``; return their paths [png, svg].

    Both are rendered to temporary files in the target folder first and then moved into place
    with :func:`os.replace`, so a reader never sees a half-written file and a failure leaves the
    previous pair untouched. Output is byte-identical on rerun. By default a figure must have
    been :func:`stamp`-ed (label, scope, units, source) before it can be saved.
    """
    if require_stamp and get_stamp(fig) is None:
        raise ValueError(
            "save_figure: figure has no stamp(); every figure must state its dataset label, scope, units and source"
        )
    stem = Path(target_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    targets = [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.svg"]
    payloads = [render_png(fig, dpi=dpi), render_svg(fig).encode("utf-8")]
    temps: list[str] = []
    try:
        for target, payload in zip(targets, payloads):
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            temps.append(tmp)
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
        for tmp, target in zip(temps, targets):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return targets

"""A self-contained HTML report: one file, figures embedded, no network requests (issue #13).

:func:`build_report` turns a list of :class:`Section` into one HTML document:

* figures are embedded as ``data:`` URIs (PNG base64, or SVG base64 inside ``<img>`` so the SVG's
  own ``<style>`` and ids cannot leak into the page); no external CSS, JS or fonts;
* a Content-Security-Policy meta tag (``default-src 'none'; img-src data:``) makes the browser
  refuse any request a future edit might add by mistake;
* a short table of contents, a header that shows the dataset label (prominently when the data are
  synthetic), and a provenance panel: inputs with sha256, the config as YAML, package versions;
* tables are pandas DataFrames rendered with HTML escaping;
* output is deterministic: the same input gives the same bytes (nothing reads the clock).

:func:`write_report` writes it atomically (temporary file in the same folder, then
:func:`os.replace`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.plots import style

__all__ = [
    "ReportFigure",
    "ReportTable",
    "Section",
    "build_report",
    "package_versions",
    "sha256_file",
    "write_report",
]

_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _require_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"report: {what} must be a non-empty string")
    return value


@dataclass(frozen=True)
class ReportFigure:
    """One figure: PNG bytes and/or SVG text, and a caption stating units, scope and source.

    When both are given the PNG is shown and the SVG is offered as a download link (also a
    ``data:`` URI, so the report stays one file). ``alt`` defaults to the caption.
    """

    caption: str
    png: bytes | None = None
    svg: str | None = None
    alt: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        _require_text(self.caption, "figure caption (units, scope, source)")
        if self.png is None and self.svg is None:
            raise ValueError(f"report: figure {self.caption[:40]!r} has neither PNG nor SVG")
        if self.png is not None and not bytes(self.png[:8]) == b"\x89PNG\r\n\x1a\n":
            raise ValueError(f"report: figure {self.caption[:40]!r}: png is not PNG data")
        if self.svg is not None and "<svg" not in self.svg[:4096]:
            raise ValueError(f"report: figure {self.caption[:40]!r}: svg is not SVG text")
        if self.id and not _ID_RE.match(self.id):
            raise ValueError(f"report: figure id {self.id!r} must match {_ID_RE.pattern}")

    @classmethod
    def from_matplotlib(cls, fig, caption: str, *, svg: bool = False, alt: str = "", id: str = "") -> ReportFigure:
        """Render a matplotlib figure (see :mod:`pipeline.plots.style`) into a report figure."""
        return cls(
            caption=caption, png=style.render_png(fig), svg=style.render_svg(fig) if svg else None, alt=alt, id=id
        )

    @classmethod
    def from_files(
        cls, stem: str | os.PathLike, caption: str, *, svg: bool = False, alt: str = "", id: str = ""
    ) -> ReportFigure:
        """Read ``<stem>.png`` (and ``<stem>.svg`` when ``svg``) as written by ``save_figure``."""
        stem = Path(stem)
        png = (stem.parent / f"{stem.name}.png").read_bytes()
        svg_text = (stem.parent / f"{stem.name}.svg").read_text(encoding="utf-8") if svg else None
        return cls(caption=caption, png=png, svg=svg_text, alt=alt, id=id)


@dataclass(frozen=True)
class ReportTable:
    """A pandas DataFrame shown as an HTML table (every cell and header escaped).

    ``float_format`` formats float cells (default: 4 significant digits); at most ``max_rows``
    rows are shown, with a note of how many were left out.
    """

    frame: Any
    caption: str
    index: bool = False
    float_format: Callable[[float], str] | None = None
    max_rows: int = 200

    def __post_init__(self) -> None:
        _require_text(self.caption, "table caption (units, scope, source)")
        if not hasattr(self.frame, "to_html"):
            raise TypeError("report: ReportTable.frame must be a pandas DataFrame")


@dataclass(frozen=True)
class Section:
    """A report section: anchor ``id``, title, intro text (paragraphs split on blank lines)."""

    id: str
    title: str
    intro: str = ""
    figures: Sequence[ReportFigure] = field(default_factory=tuple)
    tables: Sequence[ReportTable] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise ValueError(f"report: section id {self.id!r} must match {_ID_RE.pattern}")
        _require_text(self.title, f"section {self.id!r} title")


# --- helpers for callers -------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``names`` (``"not installed"`` when missing), in the given order."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# --- rendering -----------------------------------------------------------------------------------

_CSS = """
:root{--fg:#1b1b1b;--muted:#555;--line:#d6d6d6;--bg:#fff;--panel:#f6f7f8;--accent:#0072b2;
--warn-bg:#fff1e6;--warn-fg:#8a3200;--warn-line:#d55e00}
*{box-sizing:border-box}
html{font-size:16px}
body{margin:0;color:var(--fg);background:var(--bg);line-height:1.5;
font-family:system-ui,-apple-system,"Segoe UI","DejaVu Sans","Liberation Sans",Arial,sans-serif}
header.report{padding:1.25rem clamp(1rem,4vw,3rem) 1rem;border-bottom:1px solid var(--line)}
header.report h1{margin:0 0 .35rem;font-size:1.6rem;line-height:1.25}
.label{margin:.5rem 0 0;padding:.55rem .8rem;border-left:.35rem solid var(--line);
background:var(--panel);font-weight:600}
.label.synthetic{background:var(--warn-bg);color:var(--warn-fg);border-left-color:var(--warn-line);
font-size:1.05rem;text-transform:none}
.layout{display:flex;align-items:flex-start;gap:2rem;padding:0 clamp(1rem,4vw,3rem) 3rem}
nav.toc{position:sticky;top:0;flex:0 0 14rem;max-height:100vh;overflow:auto;padding:1rem 0;
font-size:.92rem}
nav.toc h2{font-size:.95rem;margin:0 0 .4rem;text-transform:uppercase;letter-spacing:.04em;
color:var(--muted)}
nav.toc ol{margin:0;padding-left:1.2rem}
nav.toc li{margin:.2rem 0}
a{color:var(--accent)}
main{flex:1 1 auto;min-width:0;max-width:72rem}
section{padding-top:1rem;border-bottom:1px solid var(--line);padding-bottom:1.25rem}
section h2{font-size:1.3rem;margin:.6rem 0 .5rem}
p{margin:.45rem 0;max-width:50rem}
figure{margin:1.1rem 0;padding:0}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line);background:#fff}
figure img.vector{width:100%;max-width:40rem}
figcaption{margin-top:.4rem;font-size:.9rem;color:var(--muted);max-width:60rem}
figcaption a{margin-left:.4rem}
.table-wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.88rem;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .6rem;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{background:var(--panel);font-weight:600}
td:first-child,th:first-child{text-align:left}
.note{font-size:.85rem;color:var(--muted)}
.prov th{text-align:left}
.prov dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:.5rem 0}
.prov dt{font-weight:600}
.prov dd{margin:0;overflow-wrap:anywhere}
code,pre,.hash{font-family:"DejaVu Sans Mono","Liberation Mono",Consolas,monospace;font-size:.82rem}
.hash{overflow-wrap:anywhere;white-space:normal;text-align:left}
pre{background:var(--panel);padding:.75rem;overflow:auto;max-height:28rem;border:1px solid var(--line)}
footer.report{padding:1rem clamp(1rem,4vw,3rem) 2rem;font-size:.85rem;color:var(--muted)}
@media (max-width:800px){.layout{display:block}nav.toc{position:static;max-height:none}}
@media print{nav.toc{display:none}.layout{display:block}}
""".strip()

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _paragraphs(text: str) -> str:
    parts = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text or "") if p.strip()]
    return "".join(f"<p>{_esc(p)}</p>\n" for p in parts)


def _data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _figure_html(fig: ReportFigure, anchor: str, number: int) -> str:
    alt = _esc(fig.alt or fig.caption)
    links = ""
    if fig.png is not None:
        src = _data_uri("image/png", bytes(fig.png))
        if fig.svg is not None:
            svg_uri = _data_uri("image/svg+xml", fig.svg.encode("utf-8"))
            links = f' <a href="{svg_uri}" download="{_esc(anchor)}.svg" type="image/svg+xml">SVG</a>'
    else:
        assert fig.svg is not None  # ReportFigure.__post_init__ requires PNG or SVG
        src = _data_uri("image/svg+xml", fig.svg.encode("utf-8"))
    kind = "raster" if fig.png is not None else "vector"
    return (
        f'<figure id="{_esc(anchor)}">\n<img class="{kind}" src="{src}" alt="{alt}" loading="eager" '
        f'decoding="sync">\n<figcaption><strong>Figure {number}.</strong> '
        f"{_esc(fig.caption)}{links}</figcaption>\n</figure>\n"
    )


def _default_float(x: float) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:,.4g}" if abs(x) < 1e15 else f"{x:.4g}"


def _table_html(tab: ReportTable, anchor: str, number: int) -> str:
    frame = tab.frame
    n = len(frame)
    shown = frame.head(tab.max_rows) if n > tab.max_rows else frame
    body = shown.to_html(
        index=tab.index,
        escape=True,
        border=0,
        na_rep="–",
        float_format=tab.float_format or _default_float,
        classes=None,
        justify=None,
        notebook=False,
    )
    body = body.replace('<table class="dataframe">', "<table>", 1)
    note = f'<p class="note">First {tab.max_rows:,} of {n:,} rows shown.</p>\n' if n > tab.max_rows else ""
    return (
        f'<figure class="table" id="{_esc(anchor)}">\n<figcaption><strong>Table {number}.'
        f'</strong> {_esc(tab.caption)}</figcaption>\n<div class="table-wrap">\n{body}\n'
        f"</div>\n{note}</figure>\n"
    )


def _yaml(obj: Any) -> str:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=str)
    return yaml.safe_dump(_plain(obj), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)


def _plain(obj: Any) -> Any:
    """Mappings, sequences and scalars only (Paths, numpy scalars etc. become str/float)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "model_dump"):
        return _plain(obj.model_dump())
    return str(obj)


def _inputs_rows(inputs: Any) -> list[tuple[str, str, str]]:
    """(name, path, sha256) rows from a mapping or a list, in the order given."""
    rows: list[tuple[str, str, str]] = []
    items: Iterable[tuple[str, Any]]
    if isinstance(inputs, Mapping):
        items = inputs.items()
    else:
        items = ((str(i), v) for i, v in enumerate(inputs or ()))
    for name, value in items:
        if isinstance(value, Mapping):
            nm = str(value.get("name", name))
            rows.append((nm, str(value.get("path", "")), str(value.get("sha256", value.get("hash", "")))))
        else:
            rows.append((str(name), "", str(value)))
    return rows


def _provenance_html(provenance: Mapping[str, Any], label: str) -> str:
    prov = dict(provenance or {})
    out = [
        '<section id="provenance" class="prov">\n<h2>Provenance</h2>\n<dl>\n',
        f"<dt>Dataset label</dt><dd>{_esc(label)}</dd>\n",
    ]
    inputs = prov.pop("inputs", None)
    config = prov.pop("config", None)
    versions = prov.pop("versions", None)
    prov.pop("label", None)
    for key, value in prov.items():
        shown = value if isinstance(value, str) else json.dumps(_plain(value), ensure_ascii=False)
        out.append(f"<dt>{_esc(key)}</dt><dd>{_esc(shown)}</dd>\n")
    out.append("</dl>\n")
    if inputs:
        out.append(
            '<h3>Inputs</h3>\n<div class="table-wrap"><table>\n<thead><tr><th>input</th>'
            "<th>path</th><th>sha256</th></tr></thead>\n<tbody>\n"
        )
        for name, path, digest in _inputs_rows(inputs):
            out.append(
                f'<tr><td>{_esc(name)}</td><td class="hash">{_esc(path)}</td>'
                f'<td class="hash">{_esc(digest)}</td></tr>\n'
            )
        out.append("</tbody></table></div>\n")
    if versions:
        out.append(
            '<h3>Package versions</h3>\n<div class="table-wrap"><table>\n<thead><tr>'
            "<th>package</th><th>version</th></tr></thead>\n<tbody>\n"
        )
        for name, ver in versions.items() if isinstance(versions, Mapping) else versions:
            out.append(f"<tr><td>{_esc(name)}</td><td>{_esc(ver)}</td></tr>\n")
        out.append("</tbody></table></div>\n")
    if config is not None:
        text = config if isinstance(config, str) else _yaml(config)
        out.append(f"<h3>Configuration</h3>\n<pre><code>{_esc(text)}</code></pre>\n")
    out.append("</section>\n")
    return "".join(out)


def build_report(
    sections: Sequence[Section],
    title: str,
    provenance: Mapping[str, Any],
    label: str,
    *,
    synthetic: bool | None = None,
    lang: str = "en",
) -> str:
    """The report as one HTML string (same arguments → same string).

    ``label`` is the dataset label (e.g. "SYNTHETIC demo world, not real statistics"); it is
    shown in the header, the page title and the footer. ``synthetic`` defaults to whether the
    label contains "SYNTHETIC"; a synthetic report gets a prominent warning banner.
    ``provenance`` keys ``inputs`` (name → {path, sha256} or name → sha256), ``config`` (a
    mapping, rendered as YAML, or a string) and ``versions`` (package → version) get their own
    tables; any other key is listed as text.
    """
    _require_text(title, "report title")
    _require_text(label, "dataset label")
    if synthetic is None:
        synthetic = "SYNTHETIC" in label.upper()
    seen: set[str] = {"provenance", "contents"}
    for sec in sections:
        if sec.id in seen:
            raise ValueError(f"report: duplicate or reserved section id {sec.id!r}")
        seen.add(sec.id)

    page_title = f"[SYNTHETIC] {title}" if synthetic and "SYNTHETIC" not in title.upper() else title
    toc = ['<nav class="toc" id="contents" aria-label="Contents">\n<h2>Contents</h2>\n<ol>\n']
    body: list[str] = []
    fig_no = tab_no = 0
    for sec in sections:
        toc.append(f'<li><a href="#{_esc(sec.id)}">{_esc(sec.title)}</a></li>\n')
        body.append(f'<section id="{_esc(sec.id)}">\n<h2>{_esc(sec.title)}</h2>\n')
        body.append(_paragraphs(sec.intro))
        for i, fig in enumerate(sec.figures, 1):
            fig_no += 1
            anchor = fig.id or f"{sec.id}-fig{i}"
            if anchor in seen:
                raise ValueError(f"report: duplicate element id {anchor!r}")
            seen.add(anchor)
            body.append(_figure_html(fig, anchor, fig_no))
        for i, tab in enumerate(sec.tables, 1):
            tab_no += 1
            anchor = f"{sec.id}-table{i}"
            if anchor in seen:
                raise ValueError(f"report: duplicate element id {anchor!r}")
            seen.add(anchor)
            body.append(_table_html(tab, anchor, tab_no))
        body.append("</section>\n")
    toc.append('<li><a href="#provenance">Provenance</a></li>\n</ol>\n</nav>\n')

    label_class = "label synthetic" if synthetic else "label"
    label_role = ' role="alert"' if synthetic else ""
    head = (
        "<!DOCTYPE html>\n"
        f'<html lang="{_esc(lang)}">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_esc(_CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="cropn2o pipeline.plots.report_html">\n'
        f'<meta name="dataset-label" content="{_esc(label)}">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{_esc(page_title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        f'<header class="report">\n<h1>{_esc(title)}</h1>\n'
        f'<p class="{label_class}"{label_role}>{_esc(label)}</p>\n</header>\n'
        '<div class="layout">\n'
    )
    tail = f'</main>\n</div>\n<footer class="report">{_esc(label)}</footer>\n</body>\n</html>\n'
    return head + "".join(toc) + "<main>\n" + "".join(body) + _provenance_html(provenance, label) + tail


def write_report(
    path: str | os.PathLike,
    sections: Sequence[Section],
    title: str,
    provenance: Mapping[str, Any],
    label: str,
    **kwargs: Any,
) -> Path:
    """Build the report and write it to ``path`` atomically (UTF-8); return the path."""
    text = build_report(sections, title, provenance, label, **kwargs)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target

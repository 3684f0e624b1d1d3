"""The REPORT stage: one self-contained HTML page with every figure, under ``report/``.

Reads the outputs of ingest, fit, estimate, grid and trend (and, when it has run, compare) and
writes ``report/report.html`` (figures embedded as ``data:`` URIs, no network request, opens
from disk) and every figure as PNG + SVG under ``report/figures/``. Each section appears only
when its inputs exist; a missing optional input becomes a one-line note in the report. Every
figure's footer states the dataset label, the scope (read from ``estimate/manifest.json``
``emission_columns``), units and source. See docs/report.md.

Files of an upstream folder that the registry does not name (``trend/break_draws.csv``,
``grid/<name>.nc``, ...) are read only when that folder's manifest lists them with the same
SHA-256 (:func:`_vouched`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from pipeline import io
from pipeline.config import Config
from pipeline.errors import StageOrderError
from pipeline.plots import coverage, emissions, maps, style
from pipeline.plots.report_html import ReportFigure, ReportTable, Section, package_versions, write_report
from pipeline.readers.boundaries import read_boundaries
from pipeline.stages.context import StageRun, relative_name

log = logging.getLogger(__name__)

VERSIONS = (
    "cropn2o",
    "numpy",
    "pandas",
    "scipy",
    "statsmodels",
    "xarray",
    "netCDF4",
    "geopandas",
    "shapely",
    "pyogrio",
    "rasterio",
    "matplotlib",
    "dask",
    "pydantic",
)
#: Simplification tolerance of the province outlines drawn on maps, degrees.
OUTLINE_TOLERANCE_DEG = 0.01


def _vouched(stage: StageRun, ref: str, name: str) -> Path | None:
    """``name`` in the folder of the upstream output ``ref``, if that folder's manifest lists it.

    Returns None when the stage has not completed or did not write the file; raises
    :class:`StageOrderError` when the file was changed after its manifest was written.
    """
    anchor = stage.upstream(ref, required=False)
    if anchor is None:
        return None
    folder = anchor.parent
    while folder.parent != stage.cfg.processed and folder != folder.parent:
        folder = folder.parent
    recorded = io.read_json(folder / "manifest.json").get("outputs", {}).get(name)
    path = folder / name
    if recorded is None or not path.exists():
        return None
    if io.file_sha256(path) != recorded:
        raise StageOrderError(
            f"{path}: was changed after the {folder.name} stage wrote it "
            f"({folder.name}/manifest.json does not vouch for it). "
            f"Fix: run `cropn2o {folder.name}` again"
        )
    stage.record_inputs([path])
    return path


class _Figures:
    """Saves figures as PNG + SVG under ``report/figures/`` and wraps them for the report."""

    def __init__(self, folder: Path, embed_svg: bool) -> None:
        self.folder = folder
        self.embed_svg = embed_svg
        self.written: list[Path] = []

    def add(self, fig, stem: str, caption: str, alt: str = "") -> ReportFigure:
        paths = style.save_figure(fig, self.folder / stem)
        self.written += paths
        return ReportFigure.from_files(
            self.folder / stem, caption, svg=self.embed_svg, alt=alt or caption, id=f"fig-{stem.replace('_', '-')}"
        )


def _scope(stage: StageRun) -> str:
    """Scope of the emission columns, from the estimate manifest."""
    try:
        doc = stage.upstream_manifest("estimate.fitted_national")
    except FileNotFoundError:
        doc = {}
    text = doc.get("emission_columns") or "direct N2O-N (scope not recorded by the estimate stage)"
    if "indirect" not in text:
        text += "; indirect N2O not included"
    return text


def _gg_table(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            f"{prefix} mean": frame["n2o_n_kg_mean"].to_numpy() / 1e6,
            f"{prefix} 2.5 %": frame["n2o_n_kg_p2_5"].to_numpy() / 1e6,
            f"{prefix} 97.5 %": frame["n2o_n_kg_p97_5"].to_numpy() / 1e6,
        },
        index=frame["year"].to_numpy(),
    )


def _coverage_section(stage: StageRun, figs: _Figures, provinces, label: str) -> tuple[Section | None, dict]:
    obs_path = stage.upstream("ingest.observations", required=False)
    act_path = stage.upstream("ingest.activity", required=False)
    if obs_path is None:
        return None, {}
    obs = io.read_parquet(obs_path)
    activity = io.read_parquet(act_path) if act_path is not None else None
    src = "ingest/observations.parquet (cropn2o ingest stage)"
    items = [
        figs.add(
            coverage.observations_per_crop(obs, label=label, source=src),
            "observations_per_crop",
            "Field observations per crop: flux records and distinct sites. "
            "Scope: measured N2O flux (background included). Units: counts. Source: " + src,
        )
    ]
    notes = []
    if {"lat", "lon"} <= set(obs.columns) and obs[["lat", "lon"]].notna().all(axis=1).any():
        sites = (
            obs.dropna(subset=["lat", "lon"])
            .groupby(["site_id", "crop"], as_index=False)
            .agg(lon=("lon", "first"), lat=("lat", "first"), n_records=("obs_id", "size"))
        )
        items.append(
            figs.add(
                maps.site_map(sites, provinces, label=label, source=src),
                "site_map",
                f"Observation sites ({sites['site_id'].nunique()} sites), one marker per crop, "
                "area by number of records; province outlines from the inventory's boundary file. "
                "Units: degrees (WGS84). Source: " + src,
            )
        )
    else:
        notes.append("The observation table has no site coordinates (lat, lon), so no site map is drawn.")
    if activity is not None:
        asrc = src + " and ingest/activity.parquet"
        items.append(
            figs.add(
                coverage.n_rate_ranges(obs, activity, label=label, source=asrc),
                "n_rate_ranges",
                "N rates of the field observations (unweighted) against the activity data "
                "(weighted by sown area), per crop: thin bar full range, thick bar 5-95 %, "
                "tick median. Where activity N rates exceed the observed range the EF model "
                "extrapolates. Units: kg N ha-1. Source: " + asrc,
            )
        )
    intro = (
        f"{len(obs):,} flux records from {obs['site_id'].nunique():,} sites after ingest "
        f"(rows set aside are in ingest/quarantine.csv). " + " ".join(notes)
    )
    return Section("coverage", "Data coverage", intro, figures=items), {"obs": obs, "activity": activity}


def _ef_section(stage: StageRun, figs: _Figures, label: str) -> Section | None:
    path = stage.upstream("fit.ef_curves", required=False)
    if path is None:
        return None
    curves = pd.read_csv(path)
    forms = sorted(set(curves["model"]) - {"tier1"})
    src = "fit/ef_curves.csv (cropn2o fit stage); IPCC Tier 1 from the configured edition"
    items = [
        figs.add(
            emissions.ef_curves(curves, label=label, source=src),
            "ef_curves",
            "Emission factor EF(N) = (E(N) - E(0)) / N per crop with 95 % intervals: the fitted "
            f"form(s) ({', '.join(forms)}) against IPCC Tier 1 (dashed; per climate zone where "
            "disaggregated). Scope: direct, fertilizer-induced (background subtracted). "
            "Units: % of N applied. Source: " + src,
        )
    ]
    tables = []
    reasons = ""
    diag_path = stage.upstream("fit.diagnostics", required=False)
    if diag_path is not None:
        d = pd.read_csv(diag_path)
        cols = [
            c
            for c in (
                "crop",
                "family",
                "chosen",
                "n_records",
                "n_sites",
                "r2_insample",
                "cv_rmse_kg_ha",
                "cv_bias_kg_ha",
                "cv_r2",
            )
            if c in d.columns
        ]
        tables.append(
            ReportTable(
                d[cols],
                "Model diagnostics per crop and candidate form: records, sites, "
                "in-sample R2, leave-site-out cross-validated RMSE and bias (kg N2O-N ha-1). "
                "Source: fit/diagnostics.csv",
            )
        )
        if {"chosen", "reason", "crop", "family"} <= set(d.columns):
            why = d[d["chosen"].astype(str).str.lower() == "true"]
            reasons = "; ".join(
                f"{r.crop}: {r.family} ({r.reason})" for r in why.itertuples() if isinstance(r.reason, str)
            )
        else:
            reasons = ""
    return Section(
        "ef",
        "Emission factors EF(N)",
        "One panel per crop. The band is the 95 % interval of the model parameters; Tier 1 bands "
        "are the IPCC uncertainty ranges." + (f"\n\nForms chosen: {reasons}." if reasons else ""),
        figures=items,
        tables=tables,
    )


def _emissions_section(
    stage: StageRun, figs: _Figures, cfg: Config, label: str, scope: str
) -> tuple[Section | None, dict]:
    nat_path = stage.upstream("estimate.fitted_national", required=False)
    if nat_path is None:
        return None, {}
    nat = io.read_parquet(nat_path)  # per crop; the all-crop totals are in national_total.parquet
    t1_path = stage.upstream("estimate.tier1_national_total", required=False)
    t1 = io.read_parquet(t1_path) if t1_path is not None else None
    total_path = stage.upstream("estimate.fitted_national_total", required=False)
    fitted_all = (io.read_parquet(total_path) if total_path is not None else nat[nat["crop"] == "all"]).sort_values(
        "year"
    )
    tier1_all = t1.sort_values("year") if t1 is not None else None
    by_crop = nat[nat["crop"] != "all"]
    src = "estimate/national.parquet, national_total.parquet" + (
        " and estimate_tier1/national_total.parquet" if t1 is not None else ""
    )
    items = [
        figs.add(
            emissions.national_emissions(fitted_all, tier1_all, by_crop=by_crop, label=label, scope=scope, source=src),
            "national_emissions",
            "National emissions per year: the fitted model against IPCC Tier 1 on the same activity "
            "data (left) and the fitted model by crop (right); bands are 95 % Monte Carlo intervals. "
            f"Scope: {scope}. Units: Gg N2O-N yr-1. Source: {src}",
            alt="National emissions, fitted model vs IPCC Tier 1",
        )
    ]
    table = _gg_table(fitted_all, "fitted")
    if tier1_all is not None:
        table = table.join(_gg_table(tier1_all, "Tier 1"))
    tables = [
        ReportTable(
            table.rename_axis("year").reset_index(),
            f"National emissions, Gg N2O-N yr-1 (mean and 95 % Monte Carlo interval). Scope: {scope}. Source: {src}",
        )
    ]
    prov_path = stage.upstream("estimate.fitted_province_total", required=False)  # all crops
    if prov_path is not None:
        prov = io.read_parquet(prov_path)
        t1p_path = stage.upstream("estimate.tier1_province_total", required=False)
        t1p = io.read_parquet(t1p_path) if t1p_path is not None else None
        codes = list(cfg.report.provinces) or (
            prov.groupby("province_code")["n2o_n_kg_mean"]
            .mean()
            .sort_values(ascending=False)
            .index[: cfg.report.max_provinces]
            .astype(int)
            .tolist()
        )
        codes = [c for c in codes if c in set(prov["province_code"])]
        if codes:
            psrc = "estimate/province_total.parquet" + (
                " and estimate_tier1/province_total.parquet" if t1p is not None else ""
            )
            chosen = (
                "the configured provinces"
                if cfg.report.provinces
                else f"the {len(codes)} provinces with the largest mean emission"
            )
            items.append(
                figs.add(
                    emissions.provincial_emissions(prov, t1p, codes, label=label, scope=scope, source=psrc),
                    "provincial_emissions",
                    f"Provincial emissions for {chosen}, fitted model vs IPCC Tier 1 with 95 % Monte "
                    f"Carlo intervals (each panel its own scale). Scope: {scope}. "
                    f"Units: Gg N2O-N yr-1. Source: {psrc}",
                )
            )
    first, last = fitted_all.iloc[0], fitted_all.iloc[-1]
    intro = (
        f"National emissions (fitted model) were {first['n2o_n_kg_mean'] / 1e6:,.1f} Gg N2O-N in "
        f"{int(first['year'])} (95 %: {first['n2o_n_kg_p2_5'] / 1e6:,.1f}-{first['n2o_n_kg_p97_5'] / 1e6:,.1f}) "
        f"and {last['n2o_n_kg_mean'] / 1e6:,.1f} Gg in {int(last['year'])} "
        f"({last['n2o_n_kg_p2_5'] / 1e6:,.1f}-{last['n2o_n_kg_p97_5'] / 1e6:,.1f})."
    )
    return Section("emissions", "National and provincial emissions", intro, figures=items, tables=tables), {
        "national": fitted_all
    }


def _trend_sections(
    stage: StageRun, figs: _Figures, provinces_gdf, label: str, scope: str, national: pd.DataFrame | None
) -> tuple[list[Section], dict]:
    breaks_path = stage.upstream("trend.breaks", required=False)
    if breaks_path is None:
        return [], {}
    results = io.read_json(breaks_path)
    out: list[Section] = []
    nat_res = results.get("national", {})
    sc = nat_res.get("slope_change", {})
    draws_path = _vouched(stage, "trend.breaks", "break_draws.csv")
    draws = pd.read_csv(draws_path)["break_year"].to_numpy(float) if draws_path is not None else None
    series_path = stage.upstream("trend.series", required=False)
    if series_path is not None:
        series = pd.read_csv(series_path)
        national = series[(series["model"] == "fitted") & (series["scope"] == "national")]
    src = "trend/breaks.json, trend/series.csv" + (", trend/break_draws.csv" if draws is not None else "")
    items, tables = [], []
    if national is not None and not national.empty:
        items.append(
            figs.add(
                emissions.break_distribution(national, sc, draws, label=label, scope=scope, source=src),
                "breakpoints",
                "Slope-change breakpoint(s) of the national series with their 95 % interval (left) "
                "and the break year fitted to each Monte Carlo draw of the national series (right). "
                f"Scope: {scope}. Units: Gg N2O-N yr-1; years. Source: {src}",
            )
        )
    bcsv = stage.upstream("trend.breaks_csv", required=False)
    if bcsv is not None:
        b = pd.read_csv(bcsv)
        cols = [
            c
            for c in (
                "model",
                "scope",
                "unit",
                "method",
                "n_breaks",
                "break_year",
                "ci_low",
                "ci_high",
                "p_value",
                "significant",
            )
            if c in b.columns
        ]
        tables.append(
            ReportTable(
                b[cols],
                "Breakpoints of every analysed series (slope change: the year on the "
                "axis where the slope changes; mean shift: the last year of the old regime), "
                "95 % intervals and existence-test p-values. Source: trend/breaks.csv",
            )
        )
    used = results.get("break_used", {})
    over = nat_res.get("break_year_over_draws") or {}
    intro = [sc.get("conclusion", "")]
    if over:
        intro.append(
            f"Over {over.get('n_draws')} Monte Carlo draws the break year has median {over.get('median'):.1f} "
            f"(95 %: {over.get('ci_low'):.1f}-{over.get('ci_high'):.1f})."
        )
    if used.get("note"):
        intro.append(f"Break used for periods and maps: {used.get('psi')} ({used['note']}).")
    out.append(Section("breaks", "Breakpoints", " ".join(t for t in intro if t), figures=items, tables=tables))

    items = []
    periods_path = _vouched(stage, "trend.breaks", "attribution_periods.csv")
    if periods_path is not None:
        periods = pd.read_csv(periods_path)
        items.append(
            figs.add(
                emissions.attribution_bars(periods, label=label, scope=scope, source="trend/attribution_periods.csv"),
                "attribution",
                "Attribution (LMDI-I) of the change in annual emissions before and after the break "
                "to sown area, crop mix, location, N rate and environment. Scope: point estimates "
                f"of the fitted model, {scope}. Units: Gg N2O-N yr-1. "
                "Source: trend/attribution_periods.csv",
            )
        )
    cf_path = _vouched(stage, "trend.breaks", "counterfactuals.csv")
    if cf_path is not None:
        cf = pd.read_csv(cf_path)
        year = used.get("break_year_last_of_old_regime")
        items.append(
            figs.add(
                emissions.counterfactual_lines(cf, year, label=label, scope=scope, source="trend/counterfactuals.csv"),
                "counterfactuals",
                "National emissions with one driver held at its break-year level from the break on "
                "(point estimates of the fitted model). Units: Gg N2O-N yr-1. "
                "Source: trend/counterfactuals.csv",
            )
        )
    if items:
        out.append(
            Section(
                "attribution",
                "Attribution before and after the break",
                results.get("attribution", {}).get("method", ""),
                figures=items,
            )
        )

    spatial_path = _vouched(stage, "trend.breaks", "spatial_province.csv")
    if spatial_path is not None and provinces_gdf is not None:
        sp = pd.read_csv(spatial_path).set_index("province_code")
        values = sp["slope_change_kg_yr2"] / 1e3
        fig = maps.province_value_map(
            provinces_gdf,
            values,
            title="Slope after minus before the break",
            colorbar_label="Mg N2O-N yr⁻²",
            label=label,
            scope=scope,
            units="Mg N2O-N yr-2 (change of the yearly increase; < 0: growth slowed)",
            source="trend/spatial_province.csv; outlines from the inventory's boundary file",
        )
        share = results.get("spatial", {}).get("province_share_of_area_slowed")
        slowed_intro = (
            f"Growth slowed in {int(sp['slowed'].sum())} of {len(sp)} provinces"
            + (f", {share * 100:.0f} % of the mean sown area" if isinstance(share, (int, float)) else "")
            + f". Definition: {results.get('spatial', {}).get('definition', '')}."
        )
        out.append(
            Section(
                "slowdown",
                "Where growth slowed",
                slowed_intro,
                figures=[
                    figs.add(
                        fig,
                        "province_slope_change",
                        "Change of the provincial emission trend across the national break (slope after minus slope before, "
                        "kink fixed at the national break year); purple: growth slowed, orange: accelerated. "
                        f"Scope: {scope}. Units: Mg N2O-N yr-2. Source: trend/spatial_province.csv",
                    )
                ],
            )
        )
    return out, {"break_year": used.get("break_year_last_of_old_regime")}


def _grid_file(stage: StageRun, cfg: Config) -> tuple[str | None, Path | None]:
    specs = sorted(cfg.grid.grids, key=lambda g: -g.resolution_deg)
    names = [cfg.report.grid] if cfg.report.grid else [g.name for g in specs]
    for name in names:
        path = _vouched(stage, "grid.mass_check", f"{name}.nc")
        if path is not None:
            return name, path
    return (names[0] if names else None), None


def _maps_section(
    stage: StageRun, figs: _Figures, cfg: Config, provinces, label: str, scope: str, break_year: int | None
) -> Section | None:
    name, path = _grid_file(stage, cfg)
    if stage.upstream("grid.mass_check", required=False) is None:
        return None
    if path is None:
        return Section(
            "maps", "Maps", f"No grid file {name}.nc in grid/ (report.grid = {cfg.report.grid!r}); no maps are drawn."
        )
    with xr.open_dataset(path, decode_timedelta=False) as ds:
        grid = maps.grid_total(ds.load())
    years = grid.years.tolist()
    chosen = [y for y in cfg.report.map_years if y in years] or sorted(
        {years[0], *([break_year] if break_year is not None and break_year in years else []), years[-1]}
    )
    src = f"grid/{name}.nc (cropn2o grid stage)"
    items = [
        figs.add(
            maps.grid_maps(grid, chosen, provinces, label=label, scope=scope, source=src),
            "maps_years",
            f"Emission density on the {grid.resolution_deg:g}° grid in {', '.join(map(str, chosen))}, "
            "with province outlines dissolved from the inventory's boundary file; one colour scale "
            f"(to the 99th percentile). Scope: {scope}. Units: kg N2O-N km-2 yr-1. Source: {src}",
            alt="Maps of gridded emission density",
        )
    ]
    if break_year in years and years[0] < break_year < years[-1]:
        pairs = [(years[0], break_year), (break_year, years[-1])]
        items.append(
            figs.add(
                maps.change_maps(grid, pairs, provinces, label=label, scope=scope, source=src),
                "maps_change",
                f"Change of the emission density before ({years[0]}-{break_year}) and after "
                f"({break_year}-{years[-1]}) the break, one symmetric scale; purple: decrease, "
                f"orange: increase. Scope: {scope}. Units: kg N2O-N km-2 yr-1. Source: {src}",
            )
        )
    intro = (
        f"Total of every crop per {grid.resolution_deg:g}° cell, divided by the cell area (read from {grid.variable})."
    )
    return Section("maps", f"Maps at {grid.resolution_deg:g}°", intro, figures=items)


def _compare_section(cfg: Config, stage: StageRun) -> Section | None:
    """Whatever the compare stage wrote (figures and small tables), with its scope note."""
    summary_path = stage.upstream("compare.summary", required=False)
    if summary_path is None:
        return None
    folder = summary_path.parent
    doc = io.read_json(folder / "manifest.json")
    summary = io.read_json(summary_path)
    if isinstance(summary, dict):
        doc = {**{k: v for k, v in summary.items() if "scope" in k.lower()}, **doc}
    outputs: dict[str, str] = doc.get("outputs", {})
    verified = {}
    for rel, digest in sorted(outputs.items()):
        p = folder / rel
        if p.exists() and io.file_sha256(p) == digest:
            verified[rel] = p
    stage.record_inputs(list(verified.values()))
    figures, tables = [], []
    note_keys = [k for k in doc if "scope" in k.lower() or k.lower() in ("note", "notes")]
    notes = [
        str(doc[k]) if not isinstance(doc[k], dict) else "; ".join(f"{a}: {b}" for a, b in doc[k].items())
        for k in note_keys
    ]
    for rel, p in verified.items():
        if Path(rel).stem.lower().startswith("scope") and p.suffix in (".md", ".txt"):
            notes.append(p.read_text(encoding="utf-8"))
    note = " ".join(" ".join(n.split()) for n in notes)
    for rel, p in verified.items():
        if p.suffix == ".png":
            svg = p.with_suffix(".svg")
            figures.append(
                ReportFigure.from_files(
                    p.with_suffix(""),
                    f"{Path(rel).stem.replace('_', ' ')} (compare/{rel}). "
                    + (f"Scope: {note[:300]}" if note else "Scope: see the compare stage's manifest."),
                    svg=cfg.report.embed_svg and svg.exists(),
                    id=f"cmp-{Path(rel).stem.replace('_', '-')}"[:60],
                )
            )
        elif p.suffix == ".csv" and p.stat().st_size < 200_000:
            t = pd.read_csv(p)
            if len(t) <= 60:
                tables.append(ReportTable(t, f"compare/{rel}"))
    return Section(
        "compare",
        "Comparison with EDGAR and FAOSTAT",
        note or "Outputs of the compare stage (no scope note recorded).",
        figures=figures,
        tables=tables,
    )


def _provenance(cfg: Config, stage: StageRun) -> dict[str, Any]:
    inputs: dict[str, dict[str, str]] = {}
    for sub in (
        sorted(p for p in cfg.processed.iterdir() if (p / "manifest.json").exists()) if cfg.processed.exists() else []
    ):
        if sub.name == stage.stage.folder:
            continue
        doc = io.read_json(sub / "manifest.json")
        for name, digest in sorted(doc.get("inputs", {}).items()):
            inputs.setdefault(f"{sub.name}: {name}", {"path": name, "sha256": digest})
    return {
        "inputs": inputs,
        "config": cfg.model_dump(mode="json"),
        "versions": package_versions(VERSIONS),
        "processed folder": relative_name(cfg.processed, cfg.root),
    }


def _remove_stale(folder: Path, keep: list[Path]) -> None:
    keep_set = {p.resolve() for p in keep}
    if folder.exists():
        for p in folder.iterdir():
            if p.suffix in (".png", ".svg") and p.resolve() not in keep_set:
                p.unlink()


def run(cfg: Config) -> list[Path]:
    """Run the report stage; return the files written (see the module docstring)."""
    stage = StageRun(cfg, "report")
    label = cfg.inputs.label or "user data (no inputs.label set)"
    figs = _Figures(stage.folder / "figures", cfg.report.embed_svg)
    scope = _scope(stage)
    boundaries_path = cfg.path(cfg.inputs.boundaries.path)
    provinces_gdf = None
    if boundaries_path.exists():
        stage.record_inputs([boundaries_path])
        b = read_boundaries(boundaries_path)[["province_code", "geometry"]]
        provinces_gdf = b.dissolve(by="province_code", as_index=False).sort_values("province_code")
        provinces_gdf["geometry"] = provinces_gdf.geometry.simplify(OUTLINE_TOLERANCE_DEG, preserve_topology=True)
    outlines = list(provinces_gdf.geometry) if provinces_gdf is not None else []

    sections: list[Section] = []
    sec, _ = _coverage_section(stage, figs, outlines, label)
    sections += [sec] if sec else []
    sec = _ef_section(stage, figs, label)
    sections += [sec] if sec else []
    sec, facts = _emissions_section(stage, figs, cfg, label, scope)
    sections += [sec] if sec else []
    trend_secs, tfacts = _trend_sections(stage, figs, provinces_gdf, label, scope, facts.get("national"))
    sections += trend_secs
    sec = _maps_section(stage, figs, cfg, outlines, label, scope, tfacts.get("break_year"))
    sections += [sec] if sec else []
    sec = _compare_section(cfg, stage)
    sections += [sec] if sec else []

    title = "Cropland N2O emission inventory"
    html = write_report(stage.output("html"), sections, title, _provenance(cfg, stage), label)
    _remove_stale(figs.folder, figs.written)
    log.info("report: %d sections, %d figures -> %s", len(sections), len(figs.written) // 2, html)
    return stage.finish(
        [html, *figs.written],
        extra={"sections": [s.id for s in sections], "figures": sorted(p.name for p in figs.written)},
    )

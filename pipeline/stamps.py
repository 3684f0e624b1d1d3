"""Stamps so ``make`` rebuilds only the stages whose settings or input data changed.

``cropn2o stamp`` writes ``<processed>/.stamps/<section>.json`` for every config section and
``input_files.json`` (the SHA-256 of every input file and column-mapping file), but touches a
file only when its content changed. The Makefile runs it on every invocation and makes each
stage depend on the stamps it reads; GNU make re-checks a prerequisite's time after its recipe,
so an unchanged stamp rebuilds nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Config, InputSpec
from pipeline.errors import InputError
from pipeline.io import TABLE_SUFFIXES, expand_paths, file_sha256, write_text
from pipeline.stages.registry import PACKAGE_DIR, STAGES, code_files, config_sections, manifest_relpath

#: One stamp per config section a stage depends on (from the stage registry).
SECTIONS = config_sections()


def section_json(cfg: Config, section: str) -> str:
    """Canonical JSON of one config section."""
    value = cfg.model_dump(mode="json")[section]
    return json.dumps(value, indent=1, sort_keys=True) + "\n"


#: Files of a folder input that are hashed: tables, and the gridded inputs (EDGAR zips and NetCDF,
#: rasters, vector files), so new EDGAR downloads in the configured folder rerun compare.
STAMPED_SUFFIXES = (*TABLE_SUFFIXES, ".zip", ".nc", ".tif", ".tiff", ".gpkg", ".geojson")


def input_files_json(cfg: Config) -> str:
    """Canonical JSON of the hash of every configured input file and mapping file.

    Inputs that do not exist yet (the demo world before ``make demo-data``) are listed as
    missing, so creating them changes the stamp.
    """
    out: dict[str, dict[str, str]] = {}
    for name in type(cfg.inputs).model_fields:
        value = getattr(cfg.inputs, name)
        specs = value if isinstance(value, list) else [value]
        if not specs or not all(isinstance(spec, InputSpec) for spec in specs):
            continue
        files: dict[str, str] = {}
        for spec in specs:  # an input may list several sources
            try:
                found = expand_paths(cfg.path(spec.path), suffixes=STAMPED_SUFFIXES)
                files.update({_name(f, cfg.root): file_sha256(f) for f in found})
            except InputError:  # not there yet (e.g. before `make demo-data`): creating it changes the stamp
                files[spec.path] = "missing"
            if spec.mapping:
                m = cfg.path(spec.mapping)
                files[_name(m, cfg.root)] = file_sha256(m) if m.exists() else "missing"
        out[name] = files
    return json.dumps(out, indent=1, sort_keys=True) + "\n"


def _name(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def write_stamps(cfg: Config) -> list[Path]:
    """Write the stamps whose content changed; return those written."""
    written = []
    texts = {f"{s}.json": section_json(cfg, s) for s in SECTIONS}
    texts["input_files.json"] = input_files_json(cfg)
    for name, text in texts.items():
        target = cfg.processed / ".stamps" / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            write_text(text, target)
            written.append(target)
    return written


# ---------------------------------------------------------------------------------------------
# What a rebuild would run (``cropn2o cron``): the Makefile's rules, evaluated in Python
# ---------------------------------------------------------------------------------------------
#: The demo world's folder and manifest, relative to the project root (the Makefile's $(DEMO)).
DEMO_DIR = "data_raw/demo"


def uses_demo_world(cfg: Config) -> bool:
    """Whether an input of the config lies in the demo world (the Makefile's ``RAW_INPUTS``)."""
    for name in type(cfg.inputs).model_fields:
        spec = getattr(cfg.inputs, name)
        if isinstance(spec, InputSpec) and DEMO_DIR in Path(spec.path).as_posix():
            return True
    return False


def stage_target(cfg: Config, name: str) -> Path:
    """The file whose presence and time say a stage is built (its manifest)."""
    st = STAGES[name]
    if st.target is not None:  # the demo world
        return cfg.path(DEMO_DIR) / "MANIFEST.json"
    return cfg.processed / manifest_relpath(st)


def stage_prerequisites(cfg: Config, name: str) -> list[Path]:
    """The prerequisites of a stage's target, as in the generated ``stages.mk``: upstream
    targets, the demo world (ingest, when used), stamps and the stage's code files."""
    st = STAGES[name]
    pre = [stage_target(cfg, u) for u in st.upstream]
    if name == "ingest" and uses_demo_world(cfg):
        pre.insert(0, stage_target(cfg, "demo-data"))
    stamps = cfg.processed / ".stamps"
    if st.input_files:
        pre.append(stamps / "input_files.json")
    pre += [stamps / f"{s}.json" for s in st.sections]
    pre += [PACKAGE_DIR.parent / f for f in code_files(st.module)]
    return pre


def stale_stages(cfg: Config) -> list[str]:
    """The stages a rebuild must run, in registry order (make's rule: a target is stale when it
    is missing, a prerequisite is missing or newer, or an upstream stage reruns).

    Refresh the stamps (:func:`write_stamps`) first; the demo world is included only when the
    config reads it.
    """
    stale: list[str] = []
    for name, st in STAGES.items():
        if st.target is not None and not uses_demo_world(cfg):
            continue
        target = stage_target(cfg, name)
        if not target.exists():
            stale.append(name)
            continue
        t = target.stat().st_mtime
        pre = stage_prerequisites(cfg, name)
        upstream = set(st.upstream) | ({"demo-data"} if name == "ingest" and uses_demo_world(cfg) else set())
        if upstream & set(stale) or any(not p.exists() or p.stat().st_mtime > t for p in pre):
            stale.append(name)
    return stale

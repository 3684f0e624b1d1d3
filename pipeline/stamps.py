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
from pipeline.io import expand_paths, file_sha256, write_text

SECTIONS = ("inputs", "ingest", "demo", "fit", "ipcc", "estimate", "grid", "trend")


def section_json(cfg: Config, section: str) -> str:
    """Canonical JSON of one config section."""
    value = cfg.model_dump(mode="json")[section]
    return json.dumps(value, indent=1, sort_keys=True) + "\n"


def input_files_json(cfg: Config) -> str:
    """Canonical JSON of the hash of every configured input file and mapping file.

    Inputs that do not exist yet (the demo world before ``make demo-data``) are listed as
    missing, so creating them changes the stamp.
    """
    out: dict[str, dict[str, str]] = {}
    for name in type(cfg.inputs).model_fields:
        spec = getattr(cfg.inputs, name)
        if not isinstance(spec, InputSpec):
            continue
        try:
            files = {_name(f, cfg.root): file_sha256(f) for f in expand_paths(cfg.path(spec.path))}
        except InputError:  # not there yet (e.g. before `make demo-data`): creating it changes the stamp
            files = {spec.path: "missing"}
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

"""Per-section config stamps so ``make`` rebuilds only the stages whose settings changed.

``cropn2o stamp`` writes ``<processed>/.stamps/<section>.json`` for every config section, but
touches a file only when its content changed; the Makefile makes each stage depend on the
stamps of the sections it reads (GNU make re-checks a prerequisite's time after its recipe).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Config
from pipeline.io import write_text

SECTIONS = ("inputs", "ingest", "demo", "fit", "ipcc", "estimate", "grid", "trend")


def section_json(cfg: Config, section: str) -> str:
    """Canonical JSON of one config section."""
    value = cfg.model_dump(mode="json")[section]
    return json.dumps(value, indent=1, sort_keys=True) + "\n"


def write_stamps(cfg: Config) -> list[Path]:
    """Write the stamps whose content changed; return those written."""
    written = []
    for section in SECTIONS:
        target = cfg.processed / ".stamps" / f"{section}.json"
        text = section_json(cfg, section)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            write_text(text, target)
            written.append(target)
    return written

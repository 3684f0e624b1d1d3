"""Time and peak-memory measurement shared by the benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psutil


def measure(fn: Callable[[], Any], interval_s: float = 0.005) -> tuple[Any, float, float]:
    """Run ``fn``; return its result, wall seconds and peak memory in MB above the start.

    Memory is the process's resident set size sampled every ``interval_s`` by a background
    thread: it sees every allocator (NumPy, GDAL, netCDF), costs the measured code nothing
    (tracemalloc slowed pandas-heavy stages several-fold) and may miss a spike shorter than
    the interval.
    """
    proc = psutil.Process()
    start = proc.memory_info().rss
    peak = start
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            done.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        out = fn()
        seconds = time.perf_counter() - t0
    finally:
        done.set()
        sampler.join()
    peak = max(peak, proc.memory_info().rss)
    return out, seconds, (peak - start) / 1e6


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def reset_peak_kib() -> int:
    """Reset this process's resident-set high-water mark (VmHWM; Linux) and return VmRSS, KiB.

    Runs on dask workers too (``client.run(reset_peak_kib)``), to measure a peak per worker.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS:")


def peak_kib() -> int:
    """This process's resident-set high-water mark since the last :func:`reset_peak_kib`, KiB."""
    return _status_kib("VmHWM:")

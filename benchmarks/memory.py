"""Peak-memory measurement shared by the benchmarks."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``fn``; return its result, wall seconds and peak traced memory in MB.

    tracemalloc sees allocations made through Python's allocator, which includes NumPy and
    pandas buffers; memory held by GDAL or other C libraries' own allocators is not counted.
    """
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = fn()
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, seconds, peak / 1e6

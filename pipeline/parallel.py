"""Where parallel work runs, and how long steps show their progress.

:func:`dask_context` runs the enclosed ``dask.compute`` calls on the local threaded scheduler
(default) or on an existing ``dask.distributed`` cluster named by ``dask.scheduler``. Either way
a progress bar on stderr counts finished tasks, labelled by what they are ("Monte Carlo
blocks", "cross-validation folds"): a Dask callback under the local scheduler, a bar fed by
futures as they complete under a client (Dask's own ``ProgressBar`` prints nothing there).

Under a client, large constants of a graph (the activity table, the Monte Carlo draws: any
``dask.delayed(value)`` leaf of more than :data:`SCATTER_MIN_BYTES`) are sent to the workers
once with ``client.scatter(..., broadcast=True)`` and replaced in the graph by their futures,
so graphs stay small (no "Sending large graph" warning) and the results are the same bytes as
under the threaded scheduler.

:func:`progress` wraps any iterable (grid years, files written) in the same bar. Every bar is
silent when stderr is not a terminal (cron, CI, ``make`` logs to a file) or when
``CROPN2O_PROGRESS=0``; ``CROPN2O_PROGRESS=1`` forces it on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TextIO, TypeVar

import dask
from dask._task_spec import DataNode
from dask.callbacks import Callback
from dask.sizeof import sizeof
from dask.utils import key_split

from pipeline.config import DaskConfig
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Graph constants at least this large are scattered to the workers instead of sent in the graph.
SCATTER_MIN_BYTES = 1 << 20
#: Labels of the task functions of the pipeline's long steps (key prefix -> what the bar says).
TASK_LABELS = {
    "task": "Monte Carlo blocks",
    "cv_fold_of": "cross-validation folds",
    "cv_fold": "cross-validation folds",
    "safe_fit": "model fits",
    "year_slab": "grid years",
}
#: Seconds between two redraws of a bar.
REFRESH_S = 0.25


def progress_enabled(stream: TextIO | None = None) -> bool:
    """Whether progress bars are drawn: stderr is a terminal, unless ``CROPN2O_PROGRESS`` says
    otherwise (``0`` off, ``1`` on)."""
    env = os.environ.get("CROPN2O_PROGRESS", "").strip()
    if env in ("0", "1"):
        return env == "1"
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Bar:
    """A one-line text progress bar on stderr (nothing at all when :func:`progress_enabled` is false).

    Parameters
    ----------
    desc
        What is counted ("grid years").
    total
        Number of steps, or ``None`` when unknown (the count is shown without a bar).
    stream
        Where to draw (default: ``sys.stderr``).
    """

    def __init__(self, desc: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self.desc, self.total, self.n = desc, total, 0
        self.stream = stream or sys.stderr
        self.enabled = progress_enabled(self.stream)
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._drawn = -1

    def update(self, n: int = 1) -> None:
        """Count ``n`` more finished steps (drawn once the step has run for :data:`REFRESH_S`:
        a step that finishes sooner leaves no line at all)."""
        self.n += n
        now = time.perf_counter()
        if self.enabled and now - self.t0 >= REFRESH_S and (now - self._last >= REFRESH_S or self.n == self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._drawn = self.n
        elapsed = now - self.t0
        if self.total:
            frac = min(1.0, self.n / self.total)
            filled = int(30 * frac)
            eta = elapsed / frac - elapsed if frac > 0 else float("nan")
            text = (
                f"\r{self.desc}: [{'#' * filled}{'.' * (30 - filled)}] {self.n}/{self.total} "
                f"{100 * frac:3.0f}% {elapsed:5.1f} s, ~{eta:.0f} s left "
            )
        else:
            text = f"\r{self.desc}: {self.n} {elapsed:5.1f} s "
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        """Finish the line (and log the step's duration at debug level)."""
        if self.enabled and self._drawn >= 0:  # drawn at least once
            if self._drawn != self.n:
                self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
        log.debug("%s: %d in %.1f s", self.desc, self.n, time.perf_counter() - self.t0)


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Yield the items of ``iterable`` while a :class:`Bar` counts them.

    ``total`` defaults to ``len(iterable)`` when it has one. Quiet when stderr is not a terminal.

    Examples
    --------
    >>> for year in progress(years, "grid 0p01deg years"):  # doctest: +SKIP
    ...     write_year(year)
    """
    global _OUTER_BARS
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = Bar(desc, total)
    _OUTER_BARS += 1  # the Dask task bars inside stay silent: one line at a time
    try:
        for item in iterable:
            yield item
            bar.update()
    finally:
        _OUTER_BARS -= 1
        bar.close()


#: Number of :func:`progress` loops running (their Dask computations draw no bar of their own).
_OUTER_BARS = 0


def task_label(keys: Iterable[Any]) -> str:
    """What a graph's tasks are, from the commonest key prefix (:data:`TASK_LABELS`)."""
    counts = Counter(key_split(k).lstrip("_") for k in keys)
    if not counts:
        return "tasks"
    labels = [TASK_LABELS.get(prefix, f"{prefix} tasks") for prefix, _ in counts.most_common()]
    return " + ".join(dict.fromkeys(labels[:2]))


class TaskProgress(Callback):
    """A :class:`Bar` over the tasks of every ``dask.compute`` on the local scheduler."""

    def __init__(self) -> None:
        super().__init__()
        self.bar: Bar | None = None

    def _start_state(self, dsk: Mapping[Any, Any], state: dict[str, Any]) -> None:
        if _OUTER_BARS:
            self.bar = None
            return
        keys = [k for k in dsk if not isinstance(dsk[k], DataNode)]
        self.bar = Bar(task_label(keys), total=len(keys))

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if self.bar is not None:
            self.bar.update()

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def scatter_large_constants(
    client: Any, graph: Mapping[Any, Any], min_bytes: int = SCATTER_MIN_BYTES
) -> tuple[dict[Any, Any], int]:
    """Replace the constants of ``graph`` by futures of copies held by the workers.

    Returns the new graph and the bytes scattered. A constant is a ``DataNode`` leaf (what
    ``dask.delayed(value)`` makes). Scattered are those of at least ``min_bytes``, or all of
    them when together they exceed it (many small slices make a large graph too). A constant
    read by several tasks (the Monte Carlo draws of a crop) is broadcast to every worker; one
    read by a single task (a block's rows) goes to one worker, where that task then runs, so a
    worker holds only its share of the inputs.
    """
    constants = {k: v for k, v in graph.items() if isinstance(v, DataNode)}
    sizes = {k: sizeof(v.value) for k, v in constants.items()}
    if not sizes or sum(sizes.values()) < min_bytes:
        return dict(graph), 0
    readers: Counter[Any] = Counter()
    for node in graph.values():
        for dep in getattr(node, "dependencies", ()):
            if dep in constants:
                readers[dep] += 1
    shared = [k for k in constants if readers[k] > 1]
    single = [k for k in constants if readers[k] <= 1]
    out = dict(graph)
    if shared:
        for k, fut in zip(shared, client.scatter([constants[k].value for k in shared], broadcast=True, hash=False)):
            out[k] = fut
    if single:
        for k, fut in zip(single, client.scatter([constants[k].value for k in single], hash=False)):
            out[k] = fut
    return out, sum(sizes.values())


def distributed_get(client: Any) -> Callable[..., Any]:
    """A Dask scheduler function running graphs on ``client``: large constants scattered
    (:func:`scatter_large_constants`), a :class:`Bar` fed by futures as they complete."""
    from distributed import as_completed, futures_of

    def get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        graph = dict(dsk.__dask_graph__()) if hasattr(dsk, "__dask_graph__") else dict(dsk)
        graph, sent = scatter_large_constants(client, graph)
        if sent:
            log.debug("scattered %.1f MB of graph constants to the workers", sent / 1e6)
        futures = client.get(graph, keys, sync=False, **kwargs)
        del graph  # the client keeps no reference to a scattered input: workers free it once read
        flat = futures_of(futures)
        bar = Bar(task_label(f.key for f in flat), total=len(flat))
        bar.enabled = bar.enabled and not _OUTER_BARS
        results: dict[Any, Any] = {}
        try:
            # results are fetched as tasks finish and released on the workers at once, so a
            # worker holds only its tasks in flight, not every result until the end
            for future, result in as_completed(flat, loop=client.loop, with_results=True):
                results[future.key] = result
                future.release()
                bar.update()
        finally:
            bar.close()
        return _rebuild(futures, results)

    return get


def _rebuild(structure: Any, results: Mapping[Any, Any]) -> Any:
    """``structure`` (futures nested in lists and tuples, as ``client.get`` returns them) with
    every future replaced by its result."""
    if isinstance(structure, (list, tuple)):
        return type(structure)(_rebuild(x, results) for x in structure)
    if hasattr(structure, "key") and structure.key in results:
        return results[structure.key]
    return structure


@contextlib.contextmanager
def dask_context(cfg: DaskConfig) -> Iterator[object | None]:
    """Run the enclosed ``dask.compute`` calls on the configured scheduler, with progress.

    With ``scheduler`` set to an address (``tcp://host:8786``) a ``distributed.Client`` is
    connected and yielded; otherwise the local scheduler named by ``local`` is used and
    ``None`` is yielded.
    """
    if cfg.scheduler:
        from distributed import Client

        try:
            client = Client(cfg.scheduler, timeout="10s", set_as_default=False)
        except OSError as e:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {cfg.scheduler} ({e}). "
                "Fix: start it, or remove `dask.scheduler` to run locally"
            ) from None
        try:
            with dask.config.set(scheduler=distributed_get(client)):
                yield client
        finally:
            client.close()
    else:
        with dask.config.set(scheduler=cfg.local, num_workers=cfg.n_workers), TaskProgress():
            yield None

"""Where parallel work runs, and how long steps show their progress.

:func:`dask_context` runs the enclosed ``dask.compute`` calls on the local threaded scheduler
(default) or on an existing ``dask.distributed`` cluster named by ``dask.scheduler``. Either way
a progress bar on stderr counts finished tasks, labelled by what they are ("Monte Carlo
blocks", "cross-validation folds"): a Dask callback under the local scheduler, a bar fed by
futures as they complete under a client (Dask's own ``ProgressBar`` prints nothing there).

Under a client, large constants of a graph (the Monte Carlo draws, in-memory task rows: any
``dask.delayed(value)`` leaf of more than :data:`SCATTER_MIN_BYTES`) are sent to the workers
once with ``client.scatter(..., broadcast=True)`` and replaced in the graph by their futures,
so graphs stay small (no "Sending large graph" warning) and the results are the same bytes as
under the threaded scheduler. Results are fetched as tasks finish and released on the workers
at once.

Inputs that grow with the problem do not travel through the client at all: with
:func:`task_rows_on_workers` the estimate stage writes its sorted activity once as Parquet
files (one row group per Monte Carlo task) and every task reads its own row group where it
runs, so a worker holds the rows of its running task only, however many units there are. That
needs the folder on a filesystem the workers share with the client, at the same path (the
``processed_dir``; on a SLURM/PBS or Kubernetes cluster a shared volume).

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
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
    "year_layers": "grid years",
}
#: Seconds between two redraws of a bar.
REFRESH_S = 0.25
#: Task-row files hold at most this many row groups (one per task): a task reads the file's
#: footer, whose size grows with its row groups.
ROW_GROUPS_PER_FILE = 64
#: Name of the task-row files: ``.task-rows.<run>.<n>.tmp``, the pattern of the temporary files
#: that a stage removes when it starts (``pipeline.io.remove_temp_files``), so the files of a
#: killed run do not outlive the next run.
TASK_ROWS_PREFIX = ".task-rows."


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


# ---------------------------------------------------------------------------------------------
# Task inputs read where the task runs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParquetRowGroup:
    """The rows of one task: row group ``row_group`` of the Parquet file ``path``.

    Calling it reads them (a ``pandas.DataFrame`` with the written columns, dtypes and values,
    and a fresh ``RangeIndex``). Small and picklable: it is what the task graph carries.
    """

    path: str
    row_group: int

    def __call__(self) -> Any:
        import pyarrow.parquet as pq

        try:
            # one thread: the task runs on one worker thread, and Arrow's own pool would compete
            # with the tasks of the other threads and workers for the cores (30 % slower reads)
            with pq.ParquetFile(self.path) as f:
                table = f.read_row_group(self.row_group, use_threads=False)
        except FileNotFoundError:
            # a ConfigError (message only) survives the trip from the worker to the client
            raise ConfigError(
                f"{self.path}: the rows of a Monte Carlo task are not there where the task runs. "
                "Fix: run the Dask workers where they see the client's processed_dir at the same "
                "path (a shared filesystem), or unset dask.scheduler to run locally"
            ) from None
        return table.to_pandas(use_threads=False)


class ParquetTaskRows:
    """Task rows for a cluster (:class:`pipeline.methods.montecarlo.TaskRows`): Parquet row groups.

    Called with the sorted activity and the row slice of every task, it writes the rows once
    under ``folder``, one row group per task, at most :data:`ROW_GROUPS_PER_FILE` per file (no
    compression: the files live for one run), and returns one :class:`ParquetRowGroup` per
    task. :meth:`close` removes every file it wrote.

    Parameters
    ----------
    folder
        Where the files go; workers must see it at the same path (a shared filesystem).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).resolve()
        self.files: list[Path] = []
        self.rows_written = 0

    def __call__(self, activity: Any, blocks: Sequence[slice]) -> list[ParquetRowGroup]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(activity, preserve_index=False)
        run = uuid.uuid4().hex[:12]
        loaders: list[ParquetRowGroup] = []
        for n, first in enumerate(range(0, len(blocks), ROW_GROUPS_PER_FILE)):
            path = self.folder / f"{TASK_ROWS_PREFIX}{run}.{n}.tmp"
            self.files.append(path)
            group = blocks[first : first + ROW_GROUPS_PER_FILE]
            with pq.ParquetWriter(path, table.schema, compression="none") as w:
                for i, sl in enumerate(group):
                    rows = table.slice(sl.start, sl.stop - sl.start)
                    w.write_table(rows, row_group_size=max(1, rows.num_rows))
                    loaders.append(ParquetRowGroup(str(path), i))
                    self.rows_written += rows.num_rows
        return loaders

    def close(self) -> None:
        """Remove the files written."""
        for path in self.files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.files = []


@contextlib.contextmanager
def task_rows_on_workers(client: object | None, folder: str | Path) -> Iterator[ParquetTaskRows | None]:
    """How the Monte Carlo tasks of the enclosed estimates get their rows.

    Under a ``dask.distributed`` client (``client`` not ``None``): a :class:`ParquetTaskRows`
    writing under ``folder`` (which the workers must share), its files removed on exit. Under
    the local scheduler: ``None``, the tasks take in-memory slices of the activity (no copy,
    no file: faster than writing and reading them back).
    """
    if client is None:
        yield None
        return
    rows = ParquetTaskRows(folder)
    try:
        yield rows
    finally:
        rows.close()

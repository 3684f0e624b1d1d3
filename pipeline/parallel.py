"""Where parallel work runs: Dask, local by default, or a cluster the user names."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dask

from pipeline.config import DaskConfig
from pipeline.errors import ConfigError


@contextlib.contextmanager
def dask_context(cfg: DaskConfig) -> Iterator[object | None]:
    """Run the enclosed ``dask.compute`` calls on the configured scheduler.

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
                "Fix: start it, or remove `dask.scheduler` to run locally") from None
        try:
            with dask.config.set(scheduler=client.get):
                yield client
        finally:
            client.close()
    else:
        with dask.config.set(scheduler=cfg.local, num_workers=cfg.n_workers):
            yield None

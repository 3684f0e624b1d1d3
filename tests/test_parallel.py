"""Dask scheduling: local by default, a named cluster when configured."""

import dask
import pytest

from pipeline.config import DaskConfig
from pipeline.errors import ConfigError
from pipeline.parallel import dask_context


def test_local_threads() -> None:
    with dask_context(DaskConfig()) as client:
        assert client is None
        assert dask.compute(dask.delayed(sum)([1, 2]))[0] == 3


def test_existing_cluster_is_used() -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with dask_context(DaskConfig(scheduler=cluster.scheduler_address)) as client:
            assert client is not None
            assert dask.compute(dask.delayed(sum)([1, 2]))[0] == 3
            assert client.scheduler_info()["workers"]


def test_unreachable_scheduler_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        with dask_context(DaskConfig(scheduler="tcp://127.0.0.1:1")):
            pass

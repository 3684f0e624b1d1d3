"""Dask scheduling: local by default, a named cluster when configured; task rows read on workers."""

import pickle
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import io, parallel
from pipeline.config import DaskConfig
from pipeline.errors import ConfigError
from pipeline.parallel import ParquetRowGroup, ParquetTaskRows, dask_context, task_rows_on_workers


def test_local_threads() -> None:
    with dask_context(DaskConfig()) as client:
        assert client is None
        assert dask.compute(dask.delayed(sum)([1, 2]))[0] == 3


def test_existing_cluster_is_used() -> None:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with dask_context(DaskConfig(scheduler=cluster.scheduler_address)) as client:
            assert isinstance(client, Client)
            assert dask.compute(dask.delayed(sum)([1, 2]))[0] == 3
            assert client.scheduler_info()["workers"]


def test_unreachable_scheduler_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        with dask_context(DaskConfig(scheduler="tcp://127.0.0.1:1")):
            pass


# ---------------------------------------------------------------------------------------------
# Task rows read where the task runs (the estimate stage on a cluster)
# ---------------------------------------------------------------------------------------------
def _frame(n: int = 23) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "county_code": np.arange(n, dtype=np.int64) + 410101,
            "year": np.repeat([2000, 2001], [n // 2, n - n // 2]),
            "crop": pd.array(["rice", "wheat"] * (n // 2) + ["rice"] * (n % 2), dtype=pd.StringDtype(na_value=pd.NA)),
            "climate": ["wet"] * n,
            "area_ha": rng.uniform(1e3, 5e4, n),
            "area_filled": rng.random(n) < 0.5,
        }
    )


def test_parquet_task_rows_give_each_task_exactly_its_rows(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(parallel, "ROW_GROUPS_PER_FILE", 3)
    df = _frame()
    blocks = [slice(0, 5), slice(5, 6), slice(6, 14), slice(14, 20), slice(20, 23)]
    rows = ParquetTaskRows(tmp_path)
    loaders = rows(df, blocks)
    assert len(loaders) == len(blocks) and rows.rows_written == len(df)
    assert len(rows.files) == 2  # 5 tasks, at most 3 row groups per file
    for sl, load in zip(blocks, loaders):
        pd.testing.assert_frame_equal(load(), df.iloc[sl].reset_index(drop=True), check_exact=True)
        assert pq.ParquetFile(load.path).metadata.row_group(load.row_group).num_rows == sl.stop - sl.start
    assert pickle.loads(pickle.dumps(loaders[2]))().equals(loaders[2]())  # what the graph carries
    rows.close()
    assert not list(tmp_path.iterdir())


def test_task_row_files_of_a_killed_run_are_temporary_files(tmp_path: Path) -> None:
    """A run killed before close() leaves files that the next start of the stage removes."""
    rows = ParquetTaskRows(tmp_path)
    rows(_frame(), [slice(0, 10), slice(10, 23)])
    assert sorted(io.remove_temp_files(tmp_path)) == sorted(rows.files)


def test_task_rows_on_workers_only_under_a_client(tmp_path: Path) -> None:
    with task_rows_on_workers(None, tmp_path) as rows:
        assert rows is None  # threads: in-memory slices
    with task_rows_on_workers(object(), tmp_path / "scratch") as rows:
        assert isinstance(rows, ParquetTaskRows)
        rows(_frame(), [slice(0, 23)])
        assert len(list((tmp_path / "scratch").iterdir())) == 1
    assert not list((tmp_path / "scratch").iterdir())  # removed on exit


def test_task_rows_missing_on_a_worker_name_the_shared_filesystem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not there where the task runs.*same path") as caught:
        ParquetRowGroup(str(tmp_path / ".task-rows.x.0.tmp"), 0)()
    # raised on a worker, the error must unpickle on the client to reach the CLI as one line
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)


def test_a_worker_process_without_the_task_rows_stops_with_a_config_error(tmp_path: Path) -> None:
    from distributed import LocalCluster

    from pipeline.methods.models import FittedModel, InventoryModel
    from pipeline.methods.montecarlo import estimate

    def no_shared_folder(activity, blocks):  # as if the workers did not mount processed_dir
        return [ParquetRowGroup(str(tmp_path / f".task-rows.missing.{i}.tmp"), 0) for i in range(len(blocks))]

    act = pd.DataFrame(
        {"county_code": [410101, 410102], "province_code": 41, "year": 2000, "crop": "wheat"}
        | {"area_ha": [1e3, 2e3], "n_rate_kg_ha": [100.0, 200.0], "water_input_mm": 500.0}
    )
    m = FittedModel(
        crop="wheat",
        family="glm_gamma",
        terms=["n_rate_kg_ha"],
        coef_names=["intercept", "n_rate_kg_ha"],
        coef=np.array([-1.0, 0.004]),
        cov=np.eye(2) * 1e-6,
    )
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=40
        ) as cluster,
        dask_context(DaskConfig(scheduler=cluster.scheduler_address)),
    ):
        with pytest.raises(ConfigError, match="not there where the task runs"):
            estimate(act, InventoryModel({"wheat": m}, "fitted"), _Cfg(), task_rows=no_shared_folder)


class _Cfg:
    """The estimate settings a method reads (pipeline.methods.options.EstimateOptions)."""

    background, indirect, draws, seed = "separate", False, 20, 1
    rel_error_n_rate, rel_error_area, max_cells_per_task, form_draws = 0.1, 0.05, 1000, "shared"

"""Crosswalk: merges, splits and chains, and the real areacodes table."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.methods.crosswalk import resolve, successor_graph
from pipeline.readers.crosswalk import standardise_areacodes


def _xw(rows):
    return pd.DataFrame(rows, columns=["code", "status", "successors"])


def test_merge_split_and_chain() -> None:
    graph = successor_graph(
        _xw(
            [
                (1, "弃用", "10"),
                (2, "弃用", "10"),  # merge
                (3, "弃用", "11;12"),  # split
                (4, "弃用", "5"),
                (5, "弃用", "11;13"),  # chain into a split
                (10, "在用", None),
            ]
        )
    )
    w = resolve(np.array([1, 2, 3, 4, 10, 99]), {10, 11, 12, 13}, graph, {11: 1.0, 12: 3.0, 13: 1.0})
    got = {(r.code, r.county_code): r.weight for r in w.itertuples()}
    assert got[(1, 10)] == 1.0 and got[(2, 10)] == 1.0 and got[(10, 10)] == 1.0
    assert got[(3, 11)] == pytest.approx(0.25) and got[(3, 12)] == pytest.approx(0.75)
    assert got[(4, 11)] == pytest.approx(0.5) and got[(4, 13)] == pytest.approx(0.5)
    assert 99 not in set(w["code"])
    assert np.allclose(w.groupby("code")["weight"].sum(), 1.0)


def test_real_areacodes_resolve_1990s_codes(shared_data: Path) -> None:
    """Every county-level code in use at some time in 1990-2014 resolves to present-day codes
    that the areacodes table itself lists as in use (the boundary vintage proxy)."""
    raw = pd.read_csv(shared_data / "admin_codes" / "areacodes_result.csv", dtype=str)
    xw = standardise_areacodes(raw)
    xw["code"] = xw["code"].astype(int)
    present = set(xw.loc[(xw["status"] == "在用") & (xw["level"] == "县级"), "code"])
    graph = successor_graph(xw)
    start = xw["start_year"].astype(int)
    end = pd.to_numeric(xw["end_year"], errors="coerce").fillna(9999)
    old = xw[(xw["level"] == "县级") & (start <= 2014) & (end >= 1990)]["code"].unique()
    w = resolve(old, present, graph, {})
    share = w["code"].nunique() / len(old)
    assert share > 0.97, share
    assert np.allclose(w.groupby("code")["weight"].sum(), 1.0)

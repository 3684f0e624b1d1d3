"""Top-down N allocation: exactness, a random property test, refusals, and real NBS 2005-2014."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.methods.allocation import (
    AllocationError,
    allocate_n,
    check_allocation,
    intensities_from_config,
    n_total_kg,
)

CROPS = ["rice", "wheat", "maize", "vegetables", "other_upland"]
W = {"rice": 200.0, "wheat": 200.0, "maize": 200.0, "vegetables": 250.0, "other_upland": 120.0}
REPO = Path(__file__).resolve().parent.parent


def frames(areas: dict[tuple[int, int], dict[str, float]], totals: dict[tuple[int, int], tuple[float, float]]):
    a = pd.DataFrame(
        [
            {"province_code": p, "year": y, "crop": c, "sown_area_ha": v}
            for (p, y), d in areas.items()
            for c, v in d.items()
        ]
    )
    t = pd.DataFrame(
        [
            {"province_code": p, "year": y, "n_straight_fert_kg": s, "n_compound_fert_kg": c}
            for (p, y), (s, c) in totals.items()
        ]
    )
    return a, t


def test_hand_example() -> None:
    a, t = frames(
        {(41, 2014): {"rice": 100.0, "wheat": 300.0, "maize": 0.0, "vegetables": 50.0, "other_upland": 50.0}},
        {(41, 2014): (60_000.0, 30_000.0)},
    )
    out = allocate_n(a, t, W, compound_n_share=1 / 3)
    r = out.set_index("crop")
    n_total = 60_000 + 10_000
    s = 200 * 400 + 250 * 50 + 120 * 50
    assert r.loc["wheat", "n_rate_kg_ha"] == pytest.approx(n_total * 200 / s)
    assert r.loc["vegetables", "n_rate_kg_ha"] / r.loc["rice", "n_rate_kg_ha"] == pytest.approx(1.25)
    assert r.loc["maize", "n_crop_kg"] == 0.0
    assert r["n_crop_kg"].sum() == pytest.approx(n_total, rel=1e-12)
    assert set(out.columns) >= {
        "sown_area_ha",
        "intensity",
        "n_straight_fert_kg",
        "n_compound_fert_kg",
        "compound_n_share",
        "n_total_kg",
        "weighted_area_ha",
        "n_rate_kg_ha",
        "n_crop_kg",
    }
    summary = check_allocation(out)
    assert summary["rel_error"].max() < 1e-12


def test_property_random_regions() -> None:
    rng = np.random.default_rng(20240611)
    for _ in range(40):
        n_regions = int(rng.integers(1, 12))
        n_crops = int(rng.integers(1, 6))
        crops = CROPS[:n_crops]
        w = {c: float(rng.uniform(0.01, 10.0)) for c in crops}
        areas, totals = {}, {}
        for i in range(n_regions):
            key = (int(rng.integers(11, 66)) * 100 + i, 2000 + i)
            areas[key] = {c: float(rng.choice([0.0, rng.lognormal(10, 3)])) for c in crops}
            if all(v == 0 for v in areas[key].values()):
                areas[key][crops[0]] = 1.0
            totals[key] = (float(rng.lognormal(15, 3)), float(rng.choice([0.0, rng.lognormal(15, 3)])))
        a, t = frames(areas, totals)
        share = float(rng.uniform(0, 1))
        out = allocate_n(a, t, w, compound_n_share=share)
        check_allocation(out, rtol=1e-9)
        # ratios between crops in a region are the intensity ratios wherever areas are positive
        for _, g in out[out["sown_area_ha"] > 0].groupby(["province_code", "year"]):
            ratio = g["n_rate_kg_ha"].to_numpy() / g["intensity"].to_numpy()
            assert np.allclose(ratio, ratio[0], rtol=1e-12)
        # scaling every intensity leaves the rates unchanged
        out2 = allocate_n(a, t, {c: 7.0 * v for c, v in w.items()}, compound_n_share=share)
        assert np.allclose(out2["n_rate_kg_ha"], out["n_rate_kg_ha"], rtol=1e-12)


def test_zero_total_gives_zero_rates() -> None:
    a, t = frames({(11, 2010): dict.fromkeys(CROPS, 10.0)}, {(11, 2010): (0.0, 0.0)})
    out = allocate_n(a, t, W, compound_n_share=0.3)
    assert (out["n_rate_kg_ha"] == 0).all()
    check_allocation(out)


def _msg(e: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and "Fix:" in msg, msg
    for p in parts:
        assert p in msg, msg


def test_refuses_negative_or_missing_total() -> None:
    a, t = frames({(41, 2014): dict.fromkeys(CROPS, 10.0)}, {(41, 2014): (-1.0, 0.0)})
    with pytest.raises(AllocationError) as e:
        allocate_n(a, t, W, compound_n_share=0.3)
    _msg(e, "province_code 41", "year 2014", "n_straight_fert_kg", "-1.0")
    t.loc[0, "n_straight_fert_kg"] = 1.0
    t.loc[0, "n_compound_fert_kg"] = np.nan
    with pytest.raises(AllocationError) as e:
        allocate_n(a, t, W, compound_n_share=0.3)
    _msg(e, "n_compound_fert_kg")


def test_refuses_missing_crop_area() -> None:
    a, t = frames({(41, 2014): dict.fromkeys(CROPS, 10.0)}, {(41, 2014): (1e6, 1e6)})
    a.loc[a["crop"] == "rice", "sown_area_ha"] = np.nan
    with pytest.raises(AllocationError) as e:
        allocate_n(a, t, W, compound_n_share=0.3)
    _msg(e, "province_code 41", "crop rice", "sown_area_ha")
    a2 = a[a["crop"] != "rice"]
    with pytest.raises(AllocationError) as e:
        allocate_n(a2, t, W, compound_n_share=0.3)
    _msg(e, "no sown-area row for crop rice")


def test_refuses_region_mismatch_and_empty_area() -> None:
    a, t = frames({(41, 2014): dict.fromkeys(CROPS, 10.0)}, {(42, 2014): (1e6, 0.0)})
    with pytest.raises(AllocationError) as e:
        allocate_n(a, t, W, compound_n_share=0.3)
    _msg(e, "province_code 4")
    a, t = frames({(41, 2014): dict.fromkeys(CROPS, 0.0)}, {(41, 2014): (1e6, 0.0)})
    with pytest.raises(AllocationError) as e:
        allocate_n(a, t, W, compound_n_share=0.3)
    _msg(e, "no sown area")


def test_refuses_bad_parameters() -> None:
    a, t = frames({(41, 2014): dict.fromkeys(CROPS, 10.0)}, {(41, 2014): (1e6, 1e6)})
    with pytest.raises(ConfigError) as e:
        allocate_n(a, t, {**W, "maize": -1.0}, compound_n_share=0.3)
    _msg(e, "maize")
    with pytest.raises(ConfigError) as e:
        allocate_n(a, t, {k: v for k, v in W.items() if k != "wheat"}, compound_n_share=0.3)
    _msg(e, "wheat")
    with pytest.raises(ConfigError) as e:
        allocate_n(a, t, W, compound_n_share=1.5)
    _msg(e, "compound_n_share")


def test_check_detects_tampering() -> None:
    a, t = frames(
        {(41, 2014): dict.fromkeys(CROPS, 10.0), (42, 2014): dict.fromkeys(CROPS, 5.0)},
        {(41, 2014): (1e6, 0.0), (42, 2014): (2e6, 0.0)},
    )
    out = allocate_n(a, t, W, compound_n_share=0.3)
    out.loc[0, "n_crop_kg"] *= 1 + 1e-6
    with pytest.raises(AllocationError) as e:
        check_allocation(out)
    _msg(e, "province_code 41", "year 2014", "1 region(s) fail")


def test_n_total() -> None:
    assert n_total_kg(2392.87e7, 2115.81e7, 1 / 3) == pytest.approx(3098.14e7, rel=1e-5)


def test_config_fragment_parses_and_needs_sources() -> None:
    cfg = yaml.safe_load((REPO / "config/examples/nbs_crop_n_intensity.yaml").read_text(encoding="utf-8"))
    ints, share = intensities_from_config(cfg["nbs_allocation"])
    assert {i.crop for i in ints} == set(CROPS)
    assert share == pytest.approx(1 / 3)
    assert all(i.source for i in ints)
    cfg["nbs_allocation"]["crop_n_intensity"]["rice"]["source"] = ""
    with pytest.raises(ConfigError) as e:
        intensities_from_config(cfg["nbs_allocation"])
    _msg(e, "rice", "no source")


# ---------------------------------------------------------------------------------------------
# Real NBS data, 2005-2014
# ---------------------------------------------------------------------------------------------
def test_real_allocation_sums_back(shared_data: Path) -> None:
    from pipeline.readers import nbs

    d = shared_data / "nbs_province"
    tidy = nbs.read_nbs(
        [d / "nbs_sown_area_by_crop_province_2005_2024.csv", d / "nbs_irrigation_fertilizer_province_2005_2024.csv"]
    )
    years = range(2005, 2015)
    areas = nbs.crop_sown_area_ha(tidy, years=years, blank_as_zero=True)
    totals = nbs.fertilizer_n_kg(tidy, years=years)
    cfg = yaml.safe_load((REPO / "config/examples/nbs_crop_n_intensity.yaml").read_text(encoding="utf-8"))
    ints, share = intensities_from_config(cfg["nbs_allocation"])
    out = allocate_n(areas, totals, ints, compound_n_share=share)
    summary = check_allocation(out, rtol=1e-9)
    assert len(summary) == 31 * 10
    assert summary["rel_error"].max() <= 1e-9
    nat = out.groupby("year")["n_crop_kg"].sum()
    assert nat[2014] / 1e9 == pytest.approx(23.929 + 21.158 / 3, abs=0.002)  # Mt N
    assert out["n_rate_kg_ha"].between(0, 1500).all()  # contract bound on N rates
    henan = out[(out["province_code"] == 41) & (out["year"] == 2014)].set_index("crop")
    assert henan.loc["vegetables", "n_rate_kg_ha"] / henan.loc["wheat", "n_rate_kg_ha"] == pytest.approx(1.25)
    assert "adcode" in out.columns  # identifying columns carried through for the contract writer

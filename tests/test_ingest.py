"""Ingest stage: harmonisation on a hand-made world, and every bad-input case end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.methods import harmonise
from pipeline.stages import ingest
from tests import mini_world
from tests.conftest import reproducible_bytes


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    return mini_world.build(tmp_path)


def run_cli(config: Path, capsys, *args: str) -> tuple[int, str]:
    code = main(["--config", str(config), "-q", *args])
    err = capsys.readouterr().err
    return code, err


def test_ingest_mini_world(world: Path, capsys) -> None:
    code, err = run_cli(world, capsys, "ingest")
    assert code == 0, err
    out = world.parent / "processed" / "ingest"
    act = pd.read_parquet(out / "activity.parquet")
    # every present-day county x crop x year, nothing else
    assert len(act) == 5 * 2 * 10
    assert set(act["county_code"]) == set(mini_world.SQUARES)
    rice = act[act["crop"] == "rice"].set_index(["county_code", "year"])
    # split 410199 -> 410101 : 410102 = 1 : 2 by area; 3000 ha reported as 45000 mu
    assert rice.loc[(410101, 1990), "area_ha"] == pytest.approx(1000.0, rel=1e-3)
    assert rice.loc[(410102, 1990), "area_ha"] == pytest.approx(2000.0, rel=1e-3)
    # kg N/mu x 15 = kg N/ha, unchanged by the split
    assert rice.loc[(410101, 1991), "n_rate_kg_ha"] == pytest.approx(151.0)
    # merge 430198 + 430199 -> 430101: areas summed, N rate area-weighted (500 ha each at 100 and 200)
    assert rice.loc[(430101, 1990), "area_ha"] == pytest.approx(1000.0)
    assert rice.loc[(430101, 1990), "n_rate_kg_ha"] == pytest.approx(150.0)
    # one-year gap interpolated and flagged
    wheat = act[act["crop"] == "wheat"].set_index(["county_code", "year"])
    assert wheat.loc[(410201, 1996), "n_rate_kg_ha"] == pytest.approx(156.0)
    assert bool(wheat.loc[(410201, 1996), "n_rate_filled"])
    assert int(act["n_rate_filled"].sum()) == 1
    # water input = precipitation + irrigated share x irrigation water
    assert np.allclose(act["water_input_mm"], 600.0 + 0.5 * 200.0)

    obs = pd.read_parquet(out / "observations.parquet")
    assert len(obs) == 40
    # three unit spellings, all the same 1.0 kg N2O-N/ha
    mixed = obs[obs["obs_id"].isin(["o001", "o002"])]
    assert np.allclose(mixed["flux_kg_n2o_n_ha"], 1.0)
    manifest = yaml.safe_load((out / "manifest.json").read_text())
    assert manifest["counts"]["historical_codes_remapped"] == 3
    assert "/" not in "".join(obs["source_file"].str.replace("raw/", "", regex=False))


def test_ingest_is_byte_identical(world: Path, capsys) -> None:
    assert run_cli(world, capsys, "ingest")[0] == 0
    out = world.parent / "processed" / "ingest"
    first = {p.name: reproducible_bytes(p) for p in out.iterdir()}
    shutil.rmtree(out)
    assert run_cli(world, capsys, "ingest")[0] == 0
    assert {p.name: reproducible_bytes(p) for p in out.iterdir()} == first


def _edit(path: Path, old: str, new: str, encoding: str = "utf-8") -> None:
    text = path.read_text(encoding=encoding)
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding=encoding)


BAD_CASES = {
    # name: (file relative to raw/, edit, expected fragments in the one-line message)
    "missing column": (
        "n_rate.csv",
        ("county_code,year,crop,n_rate,unit", "county_code,year,crop,rate,unit"),
        ["n_rate.csv", "column 'n_rate'", "required column missing", "Fix:"],
    ),
    "unknown unit": (
        "n_rate.csv",
        ("kg N/ha", "kg N per hectare"),
        ["n_rate.csv", "row 3", "column 'unit'", "unknown N-rate unit"],
    ),
    "negative N rate": (
        "n_rate.csv",
        ("410201,1990,rice,150.0", "410201,1990,rice,-150.0"),
        ["n_rate.csv", "row 3", "column 'n_rate'", "below the minimum"],
    ),
    "unknown county code": (
        "n_rate.csv",
        ("410201,1990,rice", "419999,1990,rice"),
        ["n_rate.csv", "row 3", "column 'county_code'", "unknown county code 419999"],
    ),
    "duplicate key": (
        "n_rate.csv",
        ("410201,1990,wheat", "410201,1990,rice"),
        ["n_rate.csv", "column 'county_code'", "duplicate key"],
    ),
    "non-numeric cell": (
        "n_rate.csv",
        ("410201,1990,rice,150.0", "410201,1990,rice,15O.0"),
        ["n_rate.csv", "row 3", "column 'n_rate'", "'15O.0' is not a valid float"],
    ),
    "too many quarantined observations": (
        "observations.csv",
        None,
        ["observations.csv", "quarantined", "max_reject_fraction"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_gives_one_line_error_and_writes_nothing(world: Path, capsys, case: str) -> None:
    rel, edit, fragments = BAD_CASES[case]
    path = world.parent / "raw" / rel
    if case == "too many quarantined observations":
        text = path.read_text().replace("kg N2O-N/ha,", "kg N2O-N/acre,")
        path.write_text(text)
    else:
        _edit(path, *edit)
    code, err = run_cli(world, capsys, "ingest")
    assert code != 0
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    written = world.parent / "processed" / "ingest"
    if case == "too many quarantined observations":
        # the reasons are kept for the user; nothing else is written
        assert sorted(p.name for p in written.iterdir()) == ["quarantine.csv"]
        assert len(pd.read_csv(written / "quarantine.csv")) >= 8
    else:
        assert not written.exists()


def test_wrong_encoding_is_named(world: Path, capsys) -> None:
    cfg = yaml.safe_load(world.read_text())
    cfg["inputs"]["sown_area"]["encoding"] = "utf-8"  # the 41 file is GBK
    world.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    code, err = run_cli(world, capsys, "ingest")
    assert code != 0
    assert "41.csv" in err and "cannot decode" in err and "encoding" in err
    assert not (world.parent / "processed" / "ingest").exists()


def test_undecodable_bytes_fail_in_auto_mode(world: Path, capsys) -> None:
    path = world.parent / "raw" / "irrigation.csv"
    path.write_bytes(path.read_bytes().replace(b"4101,1990", b"4101,1990" + b"\xff", 1))
    code, err = run_cli(world, capsys, "ingest")
    assert code != 0 and "irrigation.csv" in err and "row 2" in err and "UTF-8" in err


@pytest.mark.parametrize("content", [b"", b"prefecture_code,year,irrigated_fraction,irrigation_mm\n"])
def test_empty_file(world: Path, capsys, content: bytes) -> None:
    (world.parent / "raw" / "irrigation.csv").write_bytes(content)
    code, err = run_cli(world, capsys, "ingest")
    assert code != 0 and "irrigation.csv" in err and ("empty" in err or "no data rows" in err)
    assert not (world.parent / "processed" / "ingest").exists()


def test_truncated_file(world: Path, capsys) -> None:
    path = world.parent / "raw" / "covariates.csv"
    data = path.read_bytes()
    path.write_bytes(data[: data.rstrip(b"\n").rfind(b",") - 2])  # cut inside the last row
    code, err = run_cli(world, capsys, "ingest")
    assert code != 0 and "covariates.csv" in err and ("truncated" in err or "incomplete" in err)


def test_quarantine_keeps_every_rejected_row(world: Path, capsys) -> None:
    path = world.parent / "raw" / "observations.csv"
    _edit(path, "o003,S0,wheat", "o003,S0,barley")
    _edit(path, "o004,S1,rice,1995,0.0,kg N/ha,1.04,kg N2O-N/ha", "o004,S1,rice,1995,0.0,kg N/ha,1.04,kg N2O-N/acre")
    assert run_cli(world, capsys, "ingest")[0] == 0
    out = world.parent / "processed" / "ingest"
    q = pd.read_csv(out / "quarantine.csv")
    obs = pd.read_parquet(out / "observations.parquet")
    assert len(q) + len(obs) == 40
    assert set(q["row"]) == {5, 6}
    assert q.set_index("row").loc[5, "column"] == "crop" and "barley" in q.set_index("row").loc[5, "reason"]
    assert "flux_unit" in q.set_index("row").loc[6, "reason"]


def test_long_gap_is_an_error_naming_the_series(world: Path, capsys) -> None:
    path = world.parent / "raw" / "n_rate.csv"
    lines = path.read_text().splitlines(keepends=True)
    blanked = [
        ",".join(ln.split(",")[:3] + ["", ln.split(",")[4]])
        if ln.startswith("430102,") and ",rice," in ln and int(ln.split(",")[1]) >= 1995
        else ln
        for ln in lines
    ]
    path.write_text("".join(blanked))
    code, err = run_cli(world, capsys, "ingest")
    assert code != 0 and "county 430102, crop rice" in err and "max_gap_years" in err


def test_crop_absent_from_a_reported_county_year_is_not_sown(world: Path, capsys) -> None:
    """Yearbooks omit crops that are not sown: no row (unlike an empty cell) means 0 ha."""
    for rel in ("n_rate.csv", "sown_area/43.csv"):
        path = world.parent / "raw" / rel
        lines = path.read_text().splitlines(keepends=True)
        path.write_text(
            "".join(
                ln
                for ln in lines
                if not (
                    ln.startswith("430102,")
                    and ",rice," in ln
                    and int(ln.split(",")[-4 if rel != "n_rate.csv" else 1]) >= 1995
                )
            )
        )
    assert run_cli(world, capsys, "ingest")[0] == 0
    act = pd.read_parquet(world.parent / "processed" / "ingest" / "activity.parquet")
    rice = act[(act["county_code"] == 430102) & (act["crop"] == "rice")].set_index("year")
    assert (rice.loc[1995:, "area_ha"] == 0).all() and (rice.loc[1995:, "n_rate_kg_ha"] == 0).all()
    assert (rice.loc[:1994, "area_ha"] == 1000).all() and not rice["area_filled"].any()


def test_fill_gaps_interior_and_edges() -> None:
    wide = pd.DataFrame(
        [[1.0, np.nan, 3.0, np.nan, np.nan, np.nan, 7.0], [np.nan, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan]],
        columns=range(2000, 2007),
    )
    filled, flag = harmonise.fill_gaps(wide, max_gap=2, edges=True)
    assert filled.iloc[0, 1] == 2.0 and flag.iloc[0, 1]
    assert np.isnan(filled.iloc[0, 3])  # a three-year gap stays open
    assert filled.iloc[1, 0] == 2.0 and filled.iloc[1, 6] == 6.0 and flag.iloc[1, [0, 6]].all()
    interior_only, _ = harmonise.fill_gaps(wide, max_gap=2, edges=False)
    assert np.isnan(interior_only.iloc[1, 0])


def test_harmonise_observations_keeps_nonpositive_fluxes(world: Path) -> None:
    cfg = load_config(world)
    raw = ingest.read_input(cfg, "observations").frame
    raw.loc[0, "flux"] = "-0.05"
    raw.loc[1, "flux"] = "0"
    obs, q, _ = ingest.harmonise_observations(raw)
    assert len(q) == 0 and (obs["flux_kg_n2o_n_ha"] <= 0).sum() == 2


def test_kensyn_ingests_through_its_mapping(shared_data: Path, repo_root: Path) -> None:
    """The real 985-record KenSyn table: every row accepted or quarantined with a reason."""
    cfg = load_config(
        repo_root / "config" / "examples" / "kensyn.yaml",
        {"inputs.observations.path": str(shared_data / "n2o_field_kensyn" / "KenSyn_N2O.csv")},
    )
    obs, quarantine, _, n_read = ingest.ingest_observations(cfg)
    borrowed = obs["obs_id"].str.contains("@")  # wheat, maize, vegetables copy the pooled upland records
    assert borrowed.sum() == 3 * (obs.loc[~borrowed, "crop"] == "other_upland").sum()
    obs = obs[~borrowed]
    assert n_read == 985
    assert len(obs) + len(quarantine) == 985
    assert len(obs) == 848 and (obs["crop"] == "rice").sum() == 76
    # reasons and columns name KenSyn's own header, records keep its row as read
    assert quarantine["reason"].str.startswith("crop_type:").all()
    assert (quarantine["column"] == "crop_type").all()
    assert all('"Ref_num"' in r for r in quarantine["record"])
    # KenSyn's Carbon_content is in %: 1 % = 10 g/kg
    raw = pd.read_csv(shared_data / "n2o_field_kensyn" / "KenSyn_N2O.csv")
    first = obs.iloc[0]
    src = raw.iloc[int(first["source_row"]) - 2]
    assert first["n_rate_kg_ha"] == src["N_rate"] and first["flux_kg_n2o_n_ha"] == src["N2O"]
    assert obs["soc_g_kg"].max() == pytest.approx(
        10 * raw.loc[raw["crop_type"].notna() & (raw["crop_type"] != "None"), "Carbon_content"].max()
    )


def _blank(path: Path, prefix: str, column: int, encoding: str = "utf-8") -> None:
    """Empty one cell in every line starting with ``prefix``."""
    lines = path.read_text(encoding=encoding).splitlines(keepends=True)
    out = []
    for ln in lines:
        if ln.startswith(prefix):
            cells = ln.rstrip("\n").split(",")
            cells[column] = ""
            ln = ",".join(cells) + "\n"
        out.append(ln)
    path.write_text("".join(out), encoding=encoding)


def test_long_gap_in_one_merged_predecessor_is_not_a_smaller_total(world: Path, capsys) -> None:
    """430198 + 430199 -> 430101: a 3-year gap in one predecessor must not halve the total."""
    for year in (1990, 1991, 1992):
        _blank(world.parent / "raw" / "sown_area" / "43.csv", f"430198,丁,{year},rice", 4)
    code, err = run_cli(world, capsys, "ingest")
    assert code != 0 and "county 430101, crop rice" in err and "max_gap_years" in err


def test_empty_edge_row_is_a_gap_not_a_zero(world: Path, capsys) -> None:
    _blank(world.parent / "raw" / "sown_area" / "41.csv", "410201,丙,1990,rice", 4, encoding="gbk")
    _blank(world.parent / "raw" / "n_rate.csv", "410201,1990,rice", 3)
    assert run_cli(world, capsys, "ingest")[0] == 0
    act = pd.read_parquet(world.parent / "processed" / "ingest" / "activity.parquet")
    row = act[(act["county_code"] == 410201) & (act["crop"] == "rice") & (act["year"] == 1990)].iloc[0]
    assert row["area_ha"] == pytest.approx(1000.0) and row["area_filled"]
    assert row["n_rate_kg_ha"] == pytest.approx(151.0) and row["n_rate_filled"]


def test_unit_mix_up_in_activity_is_caught_after_conversion(world: Path, capsys) -> None:
    """150 labelled kg N/mu is 2,250 kg N/ha: implausible, whatever the raw bound."""
    _edit(world.parent / "raw" / "n_rate.csv", "410201,1990,rice,150.0,kg N/ha", "410201,1990,rice,150.0,kg N/mu")
    code, err = run_cli(world, capsys, "ingest")
    assert code != 0 and "row 3" in err and "2250 kg N/ha" in err and "max_n_rate_kg_ha" in err
    assert "violations.csv" in err and "1 row(s)" in err


def test_flux_bounds_apply_after_conversion(world: Path, capsys) -> None:
    path = world.parent / "raw" / "observations.csv"
    # 500 ug N/m2/h over 100 days = 12 kg N2O-N/ha: plausible; 5000 kg N2O-N/ha is not
    _edit(
        path, "o005,S1,wheat,1995,110.0,kg N/ha,1.05,kg N2O-N/ha,", "o005,S1,wheat,1995,110.0,kg N/ha,500,ug N/m2/h,100"
    )
    _edit(path, "o008,S2,rice,1995,0.0,kg N/ha,1.08,kg N2O-N/ha", "o008,S2,rice,1995,0.0,kg N/ha,5000,kg N2O-N/ha")
    assert run_cli(world, capsys, "ingest")[0] == 0
    out = world.parent / "processed" / "ingest"
    obs = pd.read_parquet(out / "observations.parquet").set_index("obs_id")
    assert obs.loc["o005", "flux_kg_n2o_n_ha"] == pytest.approx(12.0)
    q = pd.read_csv(out / "quarantine.csv")
    assert q["row"].tolist() == [10] and "check flux_unit" in q["reason"].iloc[0]


def test_sown_area_beyond_three_times_land_area_is_an_error(world: Path, capsys) -> None:
    """410201 is a 1 x 1 deg square (~1 Mha): 1,000 labelled '1000 ha' is 1 Mha of rice alone,
    plus wheat, more than three times the land."""
    path = world.parent / "raw" / "sown_area" / "41.csv"
    _edit(path, "410201,丙,1992,rice,1000.0,ha", "410201,丙,1992,rice,4000.0,1000 ha", encoding="gbk")
    code, err = run_cli(world, capsys, "ingest")
    # one line: the count, the limit, the report; every row of that county-year is listed
    assert code != 0 and "2 row(s)" in err and "max_sown_per_land_area" in err and len(err.strip().splitlines()) == 1
    report = pd.read_csv(world.parent / "processed" / "ingest" / "violations.csv")
    assert len(report) == 2 and (report["limit"] == "ingest.limits.max_sown_per_land_area").all()
    assert set(report["row"]) == {int(err.split("row ")[1].split(",")[0]), *report["row"]}
    assert (report["value"] > 3.0).all() and (report["column"] == "area").all()
    assert not (world.parent / "processed" / "ingest" / "manifest.json").exists()


def test_sown_area_limit_as_warning_keeps_the_rows(world: Path, capsys) -> None:
    path = world.parent / "raw" / "sown_area" / "41.csv"
    _edit(path, "410201,丙,1992,rice,1000.0,ha", "410201,丙,1992,rice,4000.0,1000 ha", encoding="gbk")
    code, err = run_cli(world, capsys, "--set", "ingest.limits.max_sown_per_land_area.action=warn", "ingest")
    assert code == 0, err
    out = world.parent / "processed" / "ingest"
    assert len(pd.read_csv(out / "violations.csv")) == 2
    assert yaml.safe_load((out / "manifest.json").read_text())["counts"]["limit_violations"] == 2


# ---------------------------------------------------------------------------------------------
# Top-down N allocation from a plain table of regional totals (inputs.fertilizer_n)
# ---------------------------------------------------------------------------------------------
#: Provincial fertilizer statistics of the mini world in the user's own headers and tonnes:
#: Henan as straight N plus compound fertilizer, Hunan as one total N.
FERT_T = {410000: (9.0, 6.0, None), 430000: (None, None, 4.5)}  # straight t N, compound t nutrient, total t N
COMPOUND_N_SHARE = 0.3
WEIGHT = {"rice": 2.0, "wheat": 1.0}


def _with_fertilizer_totals(config: Path) -> Path:
    raw = config.parent / "raw"
    rows = [
        [code, y, *("" if v is None else v * (1 + 0.01 * (y - 1990)) for v in fert)]
        for code, fert in FERT_T.items()
        for y in mini_world.YEARS
    ]
    mini_world.write_csv(raw / "fert.csv", ["省代码", "年份", "氮肥(吨)", "复合肥(吨)", "化肥氮(吨)"], rows)
    mapping = {
        "columns": {
            "region_code": "省代码",
            "year": "年份",
            "n_straight_kg": "氮肥(吨)",
            "n_compound_kg": "复合肥(吨)",
            "n_fertilizer_kg": "化肥氮(吨)",
        },
        "scale": {"n_straight_kg": 1000.0, "n_compound_kg": 1000.0, "n_fertilizer_kg": 1000.0},
    }
    (raw / "fert.yaml").write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    del doc["inputs"]["n_rate"]
    doc["inputs"]["fertilizer_n"] = {"path": "raw/fert.csv", "mapping": "raw/fert.yaml"}
    doc["ingest"]["n_allocation"] = {
        "compound_n_share": {"value": COMPOUND_N_SHARE, "source": "test: an assumed 30 % N in compound nutrient"},
        "crop_n_intensity": {c: {"weight": w, "source": "test"} for c, w in WEIGHT.items()},
    }
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return config


def _expected_total_kg(province: int, year: int) -> float:
    straight, compound, total = (v if v is None else v * 1000 * (1 + 0.01 * (year - 1990)) for v in FERT_T[province])
    return total if total is not None else straight + COMPOUND_N_SHARE * compound


def test_fertilizer_totals_are_allocated_and_sum_back(world: Path, capsys) -> None:
    code, err = run_cli(_with_fertilizer_totals(world), capsys, "ingest")
    assert code == 0, err
    out = world.parent / "processed" / "ingest"
    act = pd.read_parquet(out / "activity.parquet")
    act["n_kg"] = act["area_ha"] * act["n_rate_kg_ha"]
    act["province"] = act["county_code"] // 10_000 * 10_000
    got = act.groupby(["province", "year"])["n_kg"].sum()
    want = pd.Series({k: _expected_total_kg(*k) for k in got.index})
    assert len(got) == 2 * len(mini_world.YEARS)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=0)
    # the intensities fix the ratio between crops: rice gets twice the wheat rate everywhere
    wide = act.pivot_table(index=["county_code", "year"], columns="crop", values="n_rate_kg_ha")
    np.testing.assert_allclose(wide["rice"] / wide["wheat"], WEIGHT["rice"] / WEIGHT["wheat"], rtol=1e-12)
    # by hand for Hunan 1995: rice 2 x 1000 ha, wheat 2 x 500 ha (430101, 430102)
    rice_rate = _expected_total_kg(430000, 1995) * 2.0 / (2.0 * 2000 + 1.0 * 1000)
    assert act.set_index(["county_code", "year", "crop"]).loc[(430102, 1995, "rice"), "n_rate_kg_ha"] == (
        pytest.approx(rice_rate, rel=1e-12)
    )
    assert (out / "n_allocation.csv").exists()
    manifest = yaml.safe_load((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["n_allocation"]["source"] == "inputs.fertilizer_n"
    assert manifest["n_allocation"]["max_rel_error"] <= 1e-9


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (lambda t: t.replace("\n430000,1995,,,", "\n430000,1995,1.0,,", 1), "gives both a total N"),
        (lambda t: t.replace("\n410000,1996,", "\n410100,1996,", 1), "is not a province code"),
    ],
    ids=["total-and-split", "mixed-levels"],
)
def test_bad_fertilizer_total_is_one_line_naming_the_row(world: Path, capsys, edit, fragment: str) -> None:
    config = _with_fertilizer_totals(world)
    fert = world.parent / "raw" / "fert.csv"
    text = fert.read_text(encoding="utf-8")
    fert.write_text(edit(text), encoding="utf-8")
    assert fert.read_text(encoding="utf-8") != text
    code, err = run_cli(config, capsys, "ingest")
    assert code == 3 and err.count("\n") == 1 and fragment in err and "fert.csv" in err, err
    assert "row " in err and "column '" in err, err
    assert not (world.parent / "processed" / "ingest" / "activity.parquet").exists()

"""FAOSTAT readers: the real China extracts (values checked against the raw CSV read with the csv
module) and fixture files for each layout and error."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.readers import faostat

FOLDER = "faostat_china_extracts"


def raw_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def test_synthetic_fertilizer_n2o_real(shared_data):
    path = shared_data / FOLDER / "ddf_unfao_faostat_gt_synthetic_fertilizers_emissions_n2o_china.csv"
    rows = {(r["geo"], r["year"]): float(r["gt_synthetic_fertilizers_emissions_n2o"]) for r in raw_rows(path)}
    s = faostat.read_synthetic_fertilizer_n2o(path).set_index("year")
    for y in (1990, 2003, 2014):
        assert s.loc[y, "n2o_kt"] == rows[("351", str(y))]
        assert s.loc[y, "n2o_n_kg"] == pytest.approx(rows[("351", str(y))] * 1e6 * 28 / 44, rel=1e-12)
    assert 2030 not in s.index and 2050 not in s.index  # FAOSTAT projections dropped
    assert s.index.min() == 1961 and s.index.max() == 2022
    with_proj = faostat.read_synthetic_fertilizer_n2o(path, include_projections=True).set_index("year")
    assert bool(with_proj.loc[2050, "is_projection"]) and not bool(with_proj.loc[2022, "is_projection"])
    mainland = faostat.read_synthetic_fertilizer_n2o(path, area_code=41).set_index("year")
    assert mainland.loc[2014, "n2o_kt"] == rows[("41", "2014")]


def test_n_fertilizer_join_real(shared_data):
    d = shared_data / FOLDER
    ra, rfn = (
        d / "faostat_RA_fertilizer_archive_china_1961_2002.csv",
        d / "faostat_RFN_fertilizer_by_nutrient_china_2002_2017.csv",
    )
    n = faostat.read_n_fertilizer(ra, rfn).set_index("year")
    ra_rows = {
        r["Year"]: float(r["Value"])
        for r in raw_rows(ra)
        if r["Country Code"] == "351" and r["Item"] == "Nitrogenous fertilizers"
    }
    rfn_rows = {
        r["Year"]: float(r["Value"])
        for r in raw_rows(rfn)
        if r["Area Code"] == "351" and r["Item"] == "Nutrient nitrogen N (total)"
    }
    assert n.loc[1990, "n_fertilizer_t"] == ra_rows["1990"]
    assert n.loc[2001, "series"] == "RA consumption" and n.loc[2002, "series"] == "RFN agricultural use"
    assert n.loc[2014, "n_fertilizer_t"] == rfn_rows["2014"]
    assert list(n.index) == list(range(1961, 2018))
    assert n.attrs["step_2001_2002"] == pytest.approx(rfn_rows["2002"] / ra_rows["2001"])


def test_area_and_irrigation_real(shared_data):
    d = shared_data / FOLDER
    area = faostat.read_harvested_area(d)
    assert set(area["crop"]) == {"rice", "wheat", "maize"}
    rice = {
        r["year"]: float(r["qcl_rice_area_harvested"])
        for r in raw_rows(d / "ddf_unfao_faostat_qcl_rice_area_harvested_china.csv")
        if r["geo"] == "351"
    }
    got = area[(area["crop"] == "rice") & (area["year"] == 2014)]["area_ha"].item()
    assert got == rice["2014"]
    irr = faostat.read_irrigation_share(d / "faostat_EL_irrigation_equipped_share_china.csv").set_index("year")
    raw = {r["Year"]: float(r["Value"]) for r in raw_rows(d / "faostat_EL_irrigation_equipped_share_china.csv")}
    assert irr.loc[2014, "irrigation_equipped_share_pct"] == raw["2014"]
    allx = faostat.read_china_extracts(d)
    assert set(allx) == {"synthetic_fertilizer_n2o", "n_fertilizer", "harvested_area", "irrigation_share"}


HEADER = "Domain Code,Domain,Area Code,Area,Element Code,Element,Item Code,Item,Year Code,Year,Unit,Value,Flag,Flag Description\n"


def test_bulk_gt_layout_fixture(tmp_path):
    f = tmp_path / "Emissions_crops.csv"
    f.write_text(
        HEADER
        + "GT,Emissions from crops,351,China,7230,Emissions (N2O),3102,Synthetic Fertilizers,1990,1990,kt,400.5,E,Estimated\n"
        + "GT,Emissions from crops,351,China,7230,Emissions (N2O),3102,Synthetic Fertilizers,1991,1991,kt,410.25,E,Estimated\n"
        + "GT,Emissions from crops,351,China,7230,Emissions (N2O),5057,Crop Residues,1990,1990,kt,99,E,Estimated\n"
    )
    s = faostat.read_synthetic_fertilizer_n2o(f)
    assert s["n2o_kt"].tolist() == [400.5, 410.25]
    assert s["n2o_n_kg"].iloc[0] == pytest.approx(400.5e6 / (44 / 28))
    bad_unit = tmp_path / "gt_bad.csv"
    bad_unit.write_text(
        HEADER + "GT,x,351,China,7230,Emissions (N2O),3102,Synthetic Fertilizers,1990,1990,kt CO2eq,1,E,x\n"
    )
    with pytest.raises(InputError, match="expected kt"):
        faostat.read_synthetic_fertilizer_n2o(bad_unit)


def test_errors_are_one_line(tmp_path):
    unknown = tmp_path / "x.csv"
    unknown.write_text("country,year,value\nChina,1990,1\n")
    with pytest.raises(InputError) as e:
        faostat.read_faostat(unknown)
    assert "unknown FAOSTAT layout" in str(e.value) and "\n" not in str(e.value) and "x.csv" in str(e.value)
    ind = tmp_path / "ddf_other.csv"
    ind.write_text("geo,year,qcl_soy_yield\n351,1990,1\n")
    with pytest.raises(InputError, match="unknown DDF indicator"):
        faostat.read_faostat(ind)
    bad = tmp_path / "ddf_gt.csv"
    bad.write_text("geo,year,gt_synthetic_fertilizers_emissions_n2o\n351,1990,1.0\n351,1991,n/a\n")
    with pytest.raises(InputError) as e:
        faostat.read_synthetic_fertilizer_n2o(bad)
    assert "row 3" in str(e.value) and "gt_synthetic_fertilizers_emissions_n2o" in str(e.value)
    ok = tmp_path / "ddf_gt2.csv"
    ok.write_text("geo,year,gt_synthetic_fertilizers_emissions_n2o\n41,1990,1.0\n")
    with pytest.raises(InputError, match="no rows for FAOSTAT area code 351"):
        faostat.read_synthetic_fertilizer_n2o(ok)

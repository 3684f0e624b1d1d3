"""EDGAR readers: every gridded flavour to one normalised form, and the national tables.

Fixture files are built here with the variable names, attributes and coordinates of each
EDGAR flavour; expected values are computed in the test, independently of the reader.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.readers import edgar

R = 6_371_007.181


def sphere_area(lat_lo: float, lat_hi: float, dlon_deg: float) -> float:
    """Independent spherical cell area (m2)."""
    return R * R * math.radians(dlon_deg) * (math.sin(math.radians(lat_hi)) - math.sin(math.radians(lat_lo)))


def write_nc(
    path: Path,
    var: str,
    units: str | None,
    data: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    time_units: str | None = None,
    time_vals=None,
    dtype: str = "f4",
    lat_first: bool = True,
) -> Path:
    """Write an EDGAR-like NetCDF: (lat, lon) or (time, lat, lon) float32, coordinates as given."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("lat", len(lat))
        ds.createDimension("lon", len(lon))
        la = ds.createVariable("lat", "f4", ("lat",))
        la.units = "degrees_north"
        la[:] = lat
        lo = ds.createVariable("lon", "f4", ("lon",))
        lo.units = "degrees_east"
        lo[:] = lon
        dims: tuple[str, ...] = ("lat", "lon") if lat_first else ("lon", "lat")
        if time_units is not None:
            ds.createDimension("time", len(time_vals))
            t = ds.createVariable("time", "f8", ("time",))
            t.units = time_units
            t.calendar = "standard"
            t[:] = time_vals
            dims = ("time", *dims)
        v = ds.createVariable(var, dtype, dims)
        if units is not None:
            v.units = units
        v.long_name = var
        v[:] = data
    return path


def centres(lo: float, hi: float, d: float = 0.1) -> np.ndarray:
    n = round((hi - lo) / d)
    return lo + (np.arange(n) + 0.5) * d


@pytest.fixture
def field():
    """A small 0.1° field (t N2O per cell per year) in the China window, 2° x 3°."""
    rng = np.random.default_rng(7)
    lat = centres(30.0, 32.0)
    lon = centres(110.0, 113.0)
    t = rng.gamma(2.0, 5.0, size=(len(lat), len(lon)))
    t[3, 4] = 0.0
    return lat, lon, t


def test_emi_nc_reads_tonnes_unchanged(tmp_path, field):
    lat, lon, t = field
    f = write_nc(tmp_path / "v8.0_FT2022_GHG_N2O_2005_AGS_emi.nc", "emissions", "Tonnes", t, lat, lon)
    ds = edgar.read_edgar_grid(f)
    assert ds["n2o_t"].dims == ("year", "lat", "lon")
    assert ds["year"].values.tolist() == [2005]
    np.testing.assert_allclose(ds["n2o_t"].values[0], t.astype(np.float32), rtol=0)
    assert ds.attrs["flavour"] == "emi_nc"
    assert ds.attrs["sector"] == "AGS"
    assert ds.attrs["release"] == "v8.0_FT2022_GHG"
    assert ds.attrs["source_files"] == f.name  # no folders
    assert np.all(np.diff(ds["lat"].values) > 0) and np.all(np.diff(ds["lon"].values) > 0)
    np.testing.assert_allclose(ds["lat"].values, lat, atol=1e-9)
    # cell area: independent formula, and within 0.5 % of the small-angle approximation
    a = ds["cell_area_m2"].values
    assert a[0, 0] == pytest.approx(sphere_area(30.0, 30.1, 0.1), rel=1e-9)
    approx = (R * math.radians(0.1)) ** 2 * math.cos(math.radians(30.05))
    assert a[0, 0] == pytest.approx(approx, rel=5e-3)


def test_global_cell_areas_sum_to_sphere():
    lat_e = np.linspace(-90, 90, 181)
    lon_e = np.linspace(-180, 180, 361)
    assert edgar.cell_area_m2(lat_e, lon_e).sum() == pytest.approx(4 * math.pi * R * R, rel=1e-12)


@pytest.mark.parametrize("days", [365.0, "calendar"])
def test_emi_and_flx_forms_agree(tmp_path, field, days):
    lat, lon, t = field
    year = 2004  # a leap year: "calendar" uses 366 days
    ndays = 366 if days == "calendar" else 365
    area = np.array([[sphere_area(la - 0.05, la + 0.05, 0.1) for _ in lon] for la in lat])
    flux = t * 1000.0 / (area * ndays * 86400.0)  # t/cell/yr -> kg m-2 s-1
    fe = write_nc(tmp_path / f"v8.0_FT2022_GHG_N2O_{year}_AGS_emi.nc", "emissions", "Tonnes", t, lat, lon, dtype="f8")
    ff = write_nc(
        tmp_path / f"v8.0_FT2022_GHG_N2O_{year}_AGS_flx.nc", "fluxes", "kg m-2 s-1", flux, lat, lon, dtype="f8"
    )
    de = edgar.read_edgar_grid(fe, days_per_year=days)
    dfx = edgar.read_edgar_grid(ff, days_per_year=days)
    assert dfx.attrs["flavour"] == "flx_nc"
    np.testing.assert_allclose(dfx["n2o_t"].values, de["n2o_t"].values, rtol=1e-9)
    assert float(dfx["n2o_t"].sum()) == pytest.approx(t.sum(), rel=1e-9)


def test_flx_float32_agrees_to_float_precision(tmp_path, field):
    lat, lon, t = field
    area = np.array([[sphere_area(la - 0.05, la + 0.05, 0.1) for _ in lon] for la in lat])
    flux = t * 1000.0 / (area * 365 * 86400.0)
    ff = write_nc(tmp_path / "v8.0_FT2022_GHG_N2O_2010_AGS_flx.nc", "fluxes", "kg m-2 s-1", flux, lat, lon)
    ds = edgar.read_edgar_grid(ff)
    np.testing.assert_allclose(ds["n2o_t"].values[0], t, rtol=1e-6, atol=1e-9)


def test_v7_lon_0_360_and_descending_lat_are_normalised(tmp_path):
    # a 1° global v7-style grid: lat descending 89.5..-89.5, lon 0.5..359.5, kg m-2 s-1
    lat = np.arange(89.5, -90, -1.0)
    lon = np.arange(0.5, 360, 1.0)
    flux = np.zeros((len(lat), len(lon)))
    i_lat, i_lon = int(np.where(lat == 35.5)[0][0]), int(np.where(lon == 200.5)[0][0])
    flux[i_lat, i_lon] = 1e-10
    flux[int(np.where(lat == 20.5)[0][0]), int(np.where(lon == 100.5)[0][0])] = 2e-10
    f = write_nc(tmp_path / "v432_N2O_2000_AGS.0.1x0.1.nc", "emi_n2o", "kg m-2 s-1", flux, lat, lon, dtype="f8")
    ds = edgar.read_edgar_grid(f)
    assert ds.attrs["flavour"] == "v7_nc"
    assert "flipped" in ds.attrs["normalisation"] and "0..360" in ds.attrs["normalisation"]
    assert ds["lon"].values[0] == pytest.approx(-179.5) and ds["lon"].values[-1] == pytest.approx(179.5)
    assert ds["lat"].values[0] == pytest.approx(-89.5)
    v = ds["n2o_t"].sel(year=2000)
    expected = 1e-10 * sphere_area(35.0, 36.0, 1.0) * 365 * 86400 / 1000
    assert float(v.sel(lat=35.5, lon=200.5 - 360)) == pytest.approx(expected, rel=1e-9)
    assert float(v.sum()) == pytest.approx(expected + 2e-10 * sphere_area(20, 21, 1.0) * 365 * 86400 / 1000, rel=1e-9)
    # China window keeps only the cell at (20.5, 100.5)
    w = edgar.read_edgar_grid(f, bbox=edgar.CHINA_BBOX)
    assert w["lon"].min() >= 73 and w["lon"].max() <= 136 and w["lat"].min() >= 18 and w["lat"].max() <= 54
    assert float(w["n2o_t"].sum()) == pytest.approx(2e-10 * sphere_area(20, 21, 1.0) * 365 * 86400 / 1000, rel=1e-9)
    np.testing.assert_allclose(edgar.window(ds, edgar.CHINA_BBOX)["n2o_t"].values, w["n2o_t"].values)


def test_flipped_latitude_emi_nc(tmp_path, field):
    lat, lon, t = field
    f = write_nc(tmp_path / "v8.0_FT2022_GHG_N2O_2001_AGS_emi.nc", "emissions", "Tonnes", t[::-1], lat[::-1], lon)
    ds = edgar.read_edgar_grid(f)
    np.testing.assert_allclose(ds["n2o_t"].values[0], t.astype(np.float32))
    assert "flipped" in ds.attrs["normalisation"]


def test_lon_lat_transposed_variable(tmp_path, field):
    lat, lon, t = field
    f = write_nc(
        tmp_path / "v8.0_FT2022_GHG_N2O_2001_AGS_emi.nc", "emissions", "Tonnes", t.T, lat, lon, lat_first=False
    )
    np.testing.assert_allclose(edgar.read_edgar_grid(f)["n2o_t"].values[0], t.astype(np.float32))


@pytest.mark.parametrize(
    "var,units,msg",
    [
        ("emissions", "W m-2", "units 'W m-2'"),
        ("emissions", None, "no units attribute"),
        ("emissions", "mg", "units 'mg'"),
        ("emi_ch4", "kg m-2 s-1", "not N2O"),
        ("flux", "kg m-2 s-1", "not an EDGAR grid"),
    ],
)
def test_bad_files_are_refused_in_one_line(tmp_path, field, var, units, msg):
    lat, lon, t = field
    f = write_nc(tmp_path / "v8.0_FT2022_GHG_N2O_2005_AGS_emi.nc", var, units, t, lat, lon)
    with pytest.raises(InputError) as e:
        edgar.read_edgar_grid(f)
    assert msg in str(e.value) and "\n" not in str(e.value) and "Fix:" in str(e.value)
    assert f.name in str(e.value)


def test_nc_with_corner_coordinates_is_refused(tmp_path, field):
    lat, lon, t = field
    f = write_nc(tmp_path / "v8.0_FT2022_GHG_N2O_2005_AGS_emi.nc", "emissions", "Tonnes", t, lat - 0.05, lon - 0.05)
    with pytest.raises(InputError, match="not cell centres"):
        edgar.read_edgar_grid(f)


def test_year_from_time_coordinate_and_conflict(tmp_path, field):
    lat, lon, t = field
    f = write_nc(
        tmp_path / "edgar_ags_emi.nc",
        "emissions",
        "Tonnes",
        t[None],
        lat,
        lon,
        time_units="days since 1970-01-01",
        time_vals=[(np.datetime64("1999-07-02") - np.datetime64("1970-01-01")).astype(int)],
    )
    assert edgar.read_edgar_grid(f)["year"].values.tolist() == [1999]
    g = write_nc(
        tmp_path / "v8.0_FT2022_GHG_N2O_2005_AGS_emi.nc",
        "emissions",
        "Tonnes",
        t[None],
        lat,
        lon,
        time_units="days since 1970-01-01",
        time_vals=[10000.0],
    )  # 1997
    with pytest.raises(InputError, match="time coordinate says 1997 but the file name says 2005"):
        edgar.read_edgar_grid(g)
    h = write_nc(tmp_path / "grid.nc", "emissions", "Tonnes", t, lat, lon)
    with pytest.raises(InputError, match="cannot tell the year"):
        edgar.read_edgar_grid(h)
    assert edgar.read_edgar_grid(h, year=2003)["year"].values.tolist() == [2003]


def write_txt(path: Path, lat: np.ndarray, lon: np.ndarray, t: np.ndarray, header: bool = True) -> Path:
    """EDGAR .txt: lat;lon;value at the lower-left corner, non-zero cells only."""
    lines = []
    if header:
        lines += [
            "EDGAR v8.0_FT2022_GHG N2O emissions, sector AGS, year 2005",
            "# Emissions in ton substance / 0.1degree x 0.1degree / year",
            "lat;lon;emission",
        ]
    for i, la in enumerate(lat):
        for j, lo in enumerate(lon):
            if t[i, j] > 0:
                lines.append(f"{la - 0.05:.2f};{lo - 0.05:.2f};{float(t[i, j])!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_txt_corners_match_the_netcdf_centres(tmp_path, field):
    lat, lon, t = field
    ftxt = write_txt(tmp_path / "v8.0_FT2022_GHG_N2O_2005_AGS.txt", lat, lon, t)
    fnc = write_nc(tmp_path / "v8.0_FT2022_GHG_N2O_2005_AGS_emi.nc", "emissions", "Tonnes", t, lat, lon, dtype="f8")
    dt = edgar.read_edgar_grid(ftxt, bbox=(110.0, 30.0, 113.0, 32.0))
    dn = edgar.read_edgar_grid(fnc)
    assert dt.attrs["flavour"] == "emi_txt"
    np.testing.assert_allclose(dt["lat"].values, dn["lat"].values, atol=1e-9)
    np.testing.assert_allclose(dt["lon"].values, dn["lon"].values, atol=1e-9)
    np.testing.assert_allclose(dt["n2o_t"].values, dn["n2o_t"].values, rtol=1e-12)
    assert float(dt["n2o_t"].sum()) == pytest.approx(t.sum(), rel=1e-12)


def test_txt_without_header_and_bad_lines(tmp_path, field):
    lat, lon, t = field
    f = write_txt(tmp_path / "v8.0_FT2022_GHG_N2O_2005_AGS.txt", lat, lon, t, header=False)
    ds = edgar.read_edgar_grid(f, bbox=(105.0, 25.0, 115.0, 35.0))
    assert float(ds["n2o_t"].sum()) == pytest.approx(t.sum(), rel=1e-12)
    bad = tmp_path / "v8.0_FT2022_GHG_N2O_2006_AGS.txt"
    bad.write_text("lat;lon;emission\n30.0;110.0;1.5\n30.1;110.0;abc\n")
    with pytest.raises(InputError) as e:
        edgar.read_edgar_grid(bad)
    assert "row 3" in str(e.value) and "'value'" in str(e.value)
    flux = tmp_path / "v8.0_FT2022_GHG_N2O_2007_AGS.txt"
    flux.write_text("# units: kg m-2 s-1\nlat;lon;emission\n30.0;110.0;1.5e-10\n")
    with pytest.raises(InputError, match="flux"):
        edgar.read_edgar_grid(flux)


def zip_one(path: Path, member: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(member, arcname=member.name)
        z.writestr("_readme.html", "<html>readme</html>")
    return path


def test_zip_and_folder_of_yearly_files(tmp_path, field):
    lat, lon, t = field
    folder = tmp_path / "edgar"
    folder.mkdir()
    raw = tmp_path / "raw"
    raw.mkdir()
    for k, y in enumerate(range(2000, 2005)):
        nc = write_nc(
            raw / f"v8.0_FT2022_GHG_N2O_{y}_AGS_emi.nc", "emissions", "Tonnes", t * (1 + k), lat, lon, dtype="f8"
        )
        zip_one(folder / f"v8.0_FT2022_GHG_N2O_{y}_AGS_emi_nc.zip", nc)
    one = edgar.read_edgar_grid(folder / "v8.0_FT2022_GHG_N2O_2002_AGS_emi_nc.zip")
    np.testing.assert_allclose(one["n2o_t"].values[0], 3 * t)
    ds = edgar.read_edgar_grids(folder, first_year=2001, last_year=2003)
    assert ds["year"].values.tolist() == [2001, 2002, 2003]
    np.testing.assert_allclose(ds["n2o_t"].sum(("lat", "lon")).values, [2 * t.sum(), 3 * t.sum(), 4 * t.sum()])
    assert ds.attrs["source_files"].split("; ")[0] == "v8.0_FT2022_GHG_N2O_2001_AGS_emi.nc"
    glob_ds = edgar.read_edgar_grids(str(folder / "*_AGS_emi_nc.zip"))
    assert glob_ds.sizes["year"] == 5
    with pytest.raises(InputError, match=r"years missing: \[2005, 2006\]"):
        edgar.read_edgar_grids(folder, first_year=2003, last_year=2006)
    # a bundle zip with several years (EDGAR's all-years download) counts member by member
    bundle = tmp_path / "AGS_emi_nc.zip"
    with zipfile.ZipFile(bundle, "w") as z:
        for y in (2000, 2001):
            z.write(raw / f"v8.0_FT2022_GHG_N2O_{y}_AGS_emi.nc", arcname=f"AGS/v8.0_FT2022_GHG_N2O_{y}_AGS_emi.nc")
    assert edgar.read_edgar_grids(bundle)["year"].values.tolist() == [2000, 2001]
    with pytest.raises(InputError, match="holds 2 grids"):
        edgar.read_edgar_grid(bundle)


def test_folder_refuses_duplicates_and_mixed_sectors(tmp_path, field):
    lat, lon, t = field
    a = tmp_path / "a"
    a.mkdir()
    write_nc(a / "v8.0_FT2022_GHG_N2O_2000_AGS_emi.nc", "emissions", "Tonnes", t, lat, lon)
    write_nc(a / "v8.0_FT2022_GHG_N2O_2000_AGS_flx.nc", "fluxes", "kg m-2 s-1", t * 1e-12, lat, lon)
    with pytest.raises(InputError, match="year 2000 is also in"):
        edgar.read_edgar_grids(a)
    b = tmp_path / "b"
    b.mkdir()
    write_nc(b / "v8.0_FT2022_GHG_N2O_2000_AGS_emi.nc", "emissions", "Tonnes", t, lat, lon)
    write_nc(b / "v8.0_FT2022_GHG_N2O_2001_N2O_emi.nc", "emissions", "Tonnes", t, lat, lon)
    with pytest.raises(InputError, match="mixes sector"):
        edgar.read_edgar_grids(b)


def test_detect_flavour(tmp_path, field):
    lat, lon, t = field
    f = write_nc(tmp_path / "v8.0_FT2022_GHG_N2O_2005_AGS_flx.nc", "fluxes", "kg m-2 s-1", t, lat, lon)
    assert edgar.detect_flavour(zip_one(tmp_path / "x_flx_nc.zip", f)) == "flx_nc"
    junk = tmp_path / "junk.zip"
    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("readme.pdf", "x")
    with pytest.raises(InputError, match="no .nc or .txt"):
        edgar.read_edgar_grid(junk)


def test_year_parsing_from_names():
    assert edgar.year_from_name("v8.0_FT2022_GHG_N2O_2005_AGS_emi_nc.zip") == 2005
    assert edgar.year_from_name("EDGAR_2024_GHG_N2O_1990_AGS_emi_nc.zip") == 1990
    assert edgar.year_from_name("v432_N2O_1978.0.1x0.1.nc") == 1978
    assert edgar.year_from_name("AGS_emi_nc.zip") is None


# ---------------------------------------------------------------------------------------------
# National tables
# ---------------------------------------------------------------------------------------------
def test_v432_workbook_real(shared_data):
    import xlrd

    path = shared_data / "edgar_v432" / "v432_N2O_1970_2012.xls"
    table = edgar.read_edgar_national(path)
    chn = table[(table["iso3"] == "CHN") & (table["sector"] == "4D1")].set_index("year")["n2o_gg"]
    assert round(float(chn[1990]), 4) == 463.4731
    # 2012 read independently, cell by cell, with xlrd
    sh = xlrd.open_workbook(str(path)).sheet_by_index(0)
    hdr = next(i for i in range(20) if "ISO_A3" in sh.row_values(i))
    cols = sh.row_values(hdr)
    row = next(
        sh.row_values(i)
        for i in range(hdr + 1, sh.nrows)
        if sh.row_values(i)[cols.index("ISO_A3")] == "CHN" and sh.row_values(i)[cols.index("IPCC")] == "4D1"
    )
    assert float(chn[2012]) == row[cols.index(2012.0)]
    assert set(table.columns) >= {"iso3", "sector", "sector_description", "year", "n2o_gg"}
    assert table["year"].min() == 1970 and table["year"].max() == 2012
    # the CSV extract in the same folder holds the same China rows
    csv = edgar.read_edgar_national(shared_data / "edgar_v432" / "edgar_v432_N2O_CHN_by_IPCC1996_1970_2012_Gg.csv")
    x = table[table["iso3"] == "CHN"].set_index(["sector", "year"])["n2o_gg"].sort_index()
    c = csv.set_index(["sector", "year"])["n2o_gg"].sort_index()
    assert len(c) > 500
    np.testing.assert_allclose(c.values, x.loc[c.index].values, rtol=1e-12)


def build_edgar2024_workbook(path: Path, substance: str = "N2O") -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.title = "Citations and references"
    ws = wb.create_sheet("IPCC 2006")
    meta = [
        ("Content:", "Emissions by country and main source category"),
        ("Compound:", substance),
        ("Start year:", 1970),
        ("End year:", 2023),
        ("Unit:", "Gg"),
        ("", ""),
        ("", ""),
        ("", ""),
    ]
    for r in meta:
        ws.append(list(r))
    years = list(range(1970, 2024))
    ws.append(
        [
            "IPCC_annex",
            "C_group_IM24_sh",
            "Country_code_A3",
            "Name",
            "ipcc_code_2006_for_standard_report",
            "ipcc_code_2006_for_standard_report_name",
            "Substance",
            "fossil_bio",
            *[f"Y_{y}" for y in years],
        ]
    )
    ws.append(
        [
            "Non-Annex_I",
            "China",
            "CHN",
            "China",
            "3.C.4",
            "Direct N2O Emissions from managed soils",
            substance,
            "bio",
            *[100.0 + k for k in range(len(years))],
        ]
    )
    ws.append(
        [
            "Non-Annex_I",
            "China",
            "CHN",
            "China",
            "3.C.5",
            "Indirect N2O Emissions from managed soils",
            substance,
            "bio",
            *([None] * 20 + [5.5] * (len(years) - 20)),
        ]
    )
    ws.append(
        [
            "Annex_I",
            "Canada",
            "CAN",
            "Canada",
            "3.C.4",
            "Direct N2O Emissions from managed soils",
            substance,
            "bio",
            *["NULL"] * len(years),
        ]
    )
    wb.create_sheet("IPCC 1996")
    wb.save(path)
    return path


def test_edgar2024_workbook_layout(tmp_path):
    f = build_edgar2024_workbook(tmp_path / "EDGAR_N2O_1970_2023.xlsx")
    t = edgar.read_edgar_national(f)
    direct = t[t["sector"] == "3.C.4"].set_index("year")["n2o_gg"]
    assert direct[1970] == 100.0 and direct[2023] == 100.0 + 53
    indirect = t[t["sector"] == "3.C.5"]
    assert indirect["year"].min() == 1990 and len(indirect) == 34  # empty cells dropped
    assert "CAN" not in set(t["iso3"])  # NULL = not estimated
    assert set(t["classification"]) == {"IPCC 2006"}
    with pytest.raises(InputError, match="not N2O"):
        edgar.read_edgar_national(build_edgar2024_workbook(tmp_path / "EDGAR_CH4_1970_2023.xlsx", "CH4"))


def test_unknown_table_layout(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.append(["country", "year", "value"])
    wb.active.append(["CHN", 1990, 1.0])
    wb.save(tmp_path / "other.xlsx")
    with pytest.raises(InputError, match="unknown EDGAR table layout"):
        edgar.read_edgar_national(tmp_path / "other.xlsx")
    (tmp_path / "x.csv").write_text("ISO_A3,Name,IPCC,IPCC_description,1990\nCHN,China,4D1,Direct,1.0\n")
    with pytest.raises(InputError, match="no unit"):
        edgar.read_edgar_national(tmp_path / "x.csv")
    assert edgar.read_edgar_national(tmp_path / "x.csv", unit="Gg")["n2o_gg"].tolist() == [1.0]


def test_sector_scope_constants():
    for code in ("AGS", "N2O", "4D1", "4D3"):
        assert code in edgar.SECTOR_SCOPE
    assert "indirect" in edgar.SECTOR_SCOPE["AGS"].lower()
    assert "crop residues" in edgar.SECTOR_SCOPE["4D1"]

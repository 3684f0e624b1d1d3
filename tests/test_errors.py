"""The exception hierarchy: one base, one-line messages that say where and what to do."""

import pytest

from pipeline import errors


def test_every_error_derives_from_the_base() -> None:
    for cls in (
        errors.ConfigError,
        errors.InputError,
        errors.TooManyRejectionsError,
        errors.ModelError,
        errors.StageOrderError,
    ):
        assert issubclass(cls, errors.PipelineError)
    codes = {
        cls.exit_code
        for cls in (
            errors.PipelineError,
            errors.ConfigError,
            errors.InputError,
            errors.ModelError,
            errors.StageOrderError,
        )
    }
    assert 0 not in codes and len(codes) == 5


@pytest.mark.parametrize(
    "row,column,expected",
    [
        (None, None, "a.csv: bad thing. Fix: do this"),
        (7, None, "a.csv, row 7: bad thing. Fix: do this"),
        (7, "n_rate", "a.csv, row 7, column 'n_rate': bad thing. Fix: do this"),
    ],
)
def test_input_error_message(row, column, expected) -> None:
    e = errors.InputError("a.csv", "bad thing", "do this", row=row, column=column)
    assert str(e) == expected and (e.row, e.column) == (row, column)

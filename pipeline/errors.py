"""One exception hierarchy for every error a user can cause or fix.

The CLI prints ``str(error)`` on one line and exits non-zero, without a traceback, for any
:class:`PipelineError`. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class PipelineError(Exception):
    """Base of every error the user can act on."""

    exit_code = 1


class ConfigError(PipelineError):
    """The configuration file is missing, malformed or inconsistent."""

    exit_code = 2


class InputError(PipelineError):
    """A user-supplied file cannot be used as it is.

    Parameters
    ----------
    file
        The offending file.
    problem
        What is wrong, in a few words.
    fix
        What the user should do about it.
    row
        1-based line number in the file as a user sees it in an editor (header = line 1),
        or ``None`` when the problem concerns the whole file.
    column
        The column name in the user's file, when one is concerned.
    """

    exit_code = 3

    def __init__(
        self,
        file: str | Path,
        problem: str,
        fix: str,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = str(file)
        self.problem = problem
        self.fix = fix
        self.row = row
        self.column = column
        where = self.file if row is None else f"{self.file}, row {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {problem}. Fix: {fix}")


class TooManyRejectionsError(InputError):
    """More rows were quarantined than the configured threshold allows."""


class ModelError(PipelineError):
    """A model cannot be fitted or applied with the data given (too few records, ...)."""

    exit_code = 4


class StageOrderError(PipelineError):
    """A stage was asked to run before the stage whose outputs it needs."""

    exit_code = 5


class LockHeldError(PipelineError):
    """Another run of the pipeline holds the build lock of the processed folder.

    Its exit code, 75 (``EX_TEMPFAIL`` of sysexits.h: try again later), tells cron wrappers and
    ``make`` that nothing failed: the run was skipped because another one is in progress.
    """

    exit_code = 75


class AllocationError(PipelineError):
    """Top-down allocation inputs are inconsistent (negative or missing totals, missing crop area)."""

    exit_code = 3

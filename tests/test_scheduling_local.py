"""Local worker processes of gridgen.scheduling.execute: results, and warnings as one line."""

import warnings

import pytest

from gridgen.core.workers import usable_cores
from gridgen.scheduling import execute


def warn_and_square(x: int) -> int:
    warnings.warn(f"item {x} is odd", UserWarning)
    return x * x


@pytest.mark.skipif(usable_cores() < 2, reason="needs two cores for two worker processes")
def test_worker_processes_print_warnings_as_one_line(capfd):
    """A warning raised in a joblib worker reaches the terminal as the command's own do: one
    ``warning:`` line, without Python's source-location line."""
    assert sorted(execute(warn_and_square, [1, 3], jobs=2)) == [1, 9]
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert sorted(err) == ["warning: item 1 is odd", "warning: item 3 is odd"], err


def test_in_process_run_keeps_the_callers_warning_handling():
    """With one worker the function runs in this process, under whatever handling the caller set
    (the command line's, or here pytest's recorder)."""
    with pytest.warns(UserWarning, match="item 5 is odd"):
        assert list(execute(warn_and_square, [5], jobs=1)) == [25]

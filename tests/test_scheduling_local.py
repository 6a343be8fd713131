"""Local worker processes of gridgen.scheduling.execute: results, and warnings as one line."""

import contextlib
import io
import warnings

import pytest

from gridgen.core.workers import usable_cores
from gridgen.scheduling import execute


def warn_and_square(x: int) -> tuple[int, str]:
    """x squared, and what a warning raised here writes to stderr (read here: joblib reuses its
    worker processes, whose file descriptors are those of the test that started them)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        warnings.warn(f"item {x} is odd", UserWarning)
    return x * x, stderr.getvalue()


@pytest.mark.skipif(usable_cores() < 2, reason="needs two cores for two worker processes")
def test_worker_processes_print_warnings_as_one_line():
    """A warning raised in a joblib worker reads as the command's own do: one ``warning:`` line,
    without Python's source-location line."""
    results = sorted(execute(warn_and_square, [1, 3], jobs=2))
    assert [square for square, _ in results] == [1, 9]
    assert [err for _, err in results] == ["warning: item 1 is odd\n", "warning: item 3 is odd\n"]


def test_in_process_run_keeps_the_callers_warning_handling():
    """With one worker the function runs in this process, under whatever handling the caller set
    (the command line's, or here pytest's recorder)."""
    with pytest.warns(UserWarning, match="item 5 is odd"):
        assert [square for square, _ in execute(warn_and_square, [5], jobs=1)] == [25]

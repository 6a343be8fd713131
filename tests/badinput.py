"""Helpers for the bad-input corpus: a rejection is one line, a non-zero exit, nothing changed.

Every CLI's corpus (``tests/test_badinput_*.py``) is a parametrised table of cases, each run
through :func:`assert_rejected`, which checks what a user sees and what is left on disk:

- the exit code (1 for a user error unless the case says otherwise);
- exactly one non-empty line on stderr, starting with ``error:``, and no traceback;
- optionally, that the line matches a regular expression (the culprit is named);
- every file under the watched paths is unchanged (names and SHA-256), so inputs are not
  modified and no partial output or temporary file is left behind.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from gridgen.core.errors import run_cli


def snapshot(*paths: str | Path) -> dict[str, str]:
    """SHA-256 of every file below ``paths`` (a missing path is recorded as missing)."""
    state: dict[str, str] = {}
    for root in map(Path, paths):
        if not root.exists():
            state[str(root)] = "<missing>"
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        if root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_dir()):
                state.setdefault(str(path) + "/", "<dir>")
    return state


def assert_rejected(capsys, main, argv, *, watch=(), code=1, match=None) -> str:
    """Run ``main(argv)`` through :func:`run_cli` and assert a clean rejection.

    Parameters
    ----------
    capsys
        pytest's capsys fixture.
    main
        The CLI's ``main(argv) -> int`` (e.g. ``gridgen.cli.main``).
    argv
        Arguments; non-strings are converted with ``str``.
    watch
        Paths (files or directories) that must be byte-identical before and after, with no file
        added or removed below them.
    code
        Expected exit code.
    match
        Regular expression the error line must contain (``re.search``).

    Returns
    -------
    str
        The error line.
    """
    capsys.readouterr()
    before = snapshot(*watch)
    rc = run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code, f"exit {rc}, expected {code}; stderr:\n{err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one error line, got:\n{err}"
    if match is not None:
        assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    after = snapshot(*watch)
    assert after == before, _diff(before, after)
    return lines[0]


def _diff(before: dict[str, str], after: dict[str, str]) -> str:
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    return (f"files changed: {changed}; added: {sorted(after.keys() - before.keys())}; "
            f"removed: {sorted(before.keys() - after.keys())}")

"""Provenance shared by every store the toolkit writes: hashes, code version, host, time.

It lives in the shared leaf package gridgen.core: `augment` and `cinn` import it rather
than keeping their own copies. Stores carry a JSON-serialisable ``provenance`` attribute whose
keys are documented where each store is written.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import platform
import re
import socket
import subprocess
from pathlib import Path

from importlib.metadata import PackageNotFoundError, version as _package_version

_CHUNK_BYTES = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """SHA-256 hex digest of bytes."""
    return hashlib.sha256(data).hexdigest()


def _package_version_or_unknown() -> str:
    try:
        return _package_version("cinn4most")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _checkout_commit() -> str | None:
    """``git describe --always --dirty`` of the checkout this code runs from, or None.

    Only a source checkout (a ``.git`` next to the packages) counts: an installed copy inside
    some other repository (a virtual environment under a project) must not report that
    repository's commit.
    """
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return None
    try:
        described = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return described or None


def code_version() -> str:
    """The version recorded in provenance: package version and commit.

    From a source checkout: the public part of the installed version plus ``+g<commit>``
    (``-dirty`` with uncommitted changes), since an editable install's metadata is frozen at
    install time. An installed copy reports its package metadata, which setuptools-scm writes
    at build time with the commit it was built from (``0.1.dev12+g1a2b3c4``).
    """
    installed = _package_version_or_unknown()
    commit = _checkout_commit()
    if commit is None:
        return installed
    return f"{installed.split('+')[0]}+g{commit}"


def version_text(program: str, extra_lines: tuple[str, ...] = ()) -> str:
    """What ``--version`` prints: program and code version, the commit, then ``extra_lines``.

    Parameters
    ----------
    program
        Command name, e.g. ``"gridgen"``.
    extra_lines
        Further lines, e.g. the engine's fingerprint.
    """
    version = code_version()
    found = re.search(r"\+g([0-9a-f]+(?:-dirty)?)", version)
    lines = [f"{program} (cinn4most) {version}", f"commit: {found.group(1) if found else 'unknown'}"]
    return "\n".join(lines + list(extra_lines))


class VersionAction(argparse.Action):
    """``--version``: print :func:`version_text` and exit 0, computed only when asked for.

    Pass ``extra`` (a callable returning extra lines) to ``add_argument``.
    """

    def __init__(self, option_strings, dest, extra=None, **kwargs):
        kwargs.setdefault("help", "print the version, the commit and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.extra = extra

    def __call__(self, parser, namespace, values, option_string=None):
        extra = tuple(self.extra()) if self.extra else ()
        print(version_text(parser.prog.split()[-1], extra))
        parser.exit()


def run_context() -> dict:
    """Who made a store, where and when: code version, host, Python, UTC creation time."""
    return {
        "code_version": code_version(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }

"""Provenance shared by every store the toolkit writes: hashes, code version, host, time.

It lives in the shared leaf package gridgen.core: `augment` and `cinn` import it rather
than keeping their own copies. Stores carry a JSON-serialisable ``provenance`` attribute whose
keys are documented where each store is written.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
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


def code_version() -> str:
    """Package version, plus the git commit (and ``-dirty``) when run from a checkout."""
    __version__ = _package_version_or_unknown()
    repo = Path(__file__).resolve().parents[2]
    try:
        described = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{described}" if described else __version__


def run_context() -> dict:
    """Who made a store, where and when: code version, host, Python, UTC creation time."""
    return {
        "code_version": code_version(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }

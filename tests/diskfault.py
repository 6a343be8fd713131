"""Disk faults for the bad-input corpus: real small or read-only file systems, and injected ones.

- :func:`tmpfs` mounts a real tmpfs of a given size, read-only or filled to the last byte, so a
  command meets the kernel's own EROFS or ENOSPC at whatever write it makes first. Mounting needs
  root with CAP_SYS_ADMIN (``chmod`` does not stop root, a read-only mount does); elsewhere the
  test is skipped with the reason.
- :func:`failing_commits` makes the commit of a write fail with a chosen errno (ENOSPC, EDQUOT,
  EROFS): every writer of the toolkit, and Zarr for each chunk and metadata file, writes a
  temporary and renames it into place, so failing ``os.replace``/``os.rename`` into a directory
  fails a write after its temporary is complete, the case where cleanup matters.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int, *, read_only: bool = False, fill: bool = False):
    """Mount a tmpfs of ``size_kib`` KiB at ``path`` for the block, then unmount it.

    ``read_only`` mounts it read-only (EROFS on any write); ``fill`` fills it with one file
    until the kernel says ENOSPC, so the next write of any size fails.
    """
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kib}k" + (",ro" if read_only else "")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount(8) on this machine")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        if fill:
            # Unbuffered: closing must not flush a last block the disk has no room for.
            with open(path / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * 4096)
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def failing_commits(monkeypatch, root: Path, err: int = errno.ENOSPC, *, after: int = 0,
                    name: str | None = None) -> dict:
    """Make ``os.replace`` and ``os.rename`` into ``root`` fail with ``err``.

    The first ``after`` renames whose destination lies below ``root`` (and, with ``name``,
    matches that glob pattern) succeed; every later one raises ``OSError(err)`` naming the
    source and destination, as the system call would. Returns a dict whose ``"failed"``
    counts the refusals, so a test can check the fault was met.
    """
    root = Path(root).resolve()
    state = {"seen": 0, "failed": 0}
    originals = {"replace": os.replace, "rename": os.rename}

    def hit(dst) -> bool:
        target = Path(os.fsdecode(dst)).resolve()
        return target.is_relative_to(root) and (name is None or fnmatch.fnmatch(str(target), name))

    def patched(kind):
        def move(src, dst, *args, **kwargs):
            if hit(dst):
                state["seen"] += 1
                if state["seen"] > after:
                    state["failed"] += 1
                    raise OSError(err, os.strerror(err), os.fsdecode(src), None, os.fsdecode(dst))
            return originals[kind](src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "replace", patched("replace"))
    monkeypatch.setattr(os, "rename", patched("rename"))
    return state

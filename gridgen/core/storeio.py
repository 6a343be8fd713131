"""Creating Zarr stores so that a failure leaves nothing behind; shared by every package.

All stores of the toolkit are Zarr v3 groups created complete under a hidden temporary name
next to the destination and renamed into place (a rename within one directory is atomic), with
consolidated metadata so that ``xarray.open_zarr`` opens them without a fallback warning.

On any failure, an interrupt included, the temporary is removed; a full disk or quota, a
read-only file system or a missing permission (:data:`gridgen.core.errors.DISK_FAULTS`) is
raised again as an ``OSError`` of the same errno naming the destination, not the temporary, so
that the command's one error line names the user's output path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from gridgen.core.errors import DISK_FAULTS, UserError


class StoreExists(UserError):
    """The destination of a new store exists, or another process created it meanwhile.

    A caller that resumes existing stores (``gridgen run``) catches it and opens the store the
    other process made; every other caller lets it end the command with one line.
    """


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a hidden temporary file next to ``path``, then rename it to ``path``.

    The same guarantee as :func:`create_atomically` for single files (JSON, CSV, HDF5, torch
    checkpoints): a reader sees the old file or the complete new one, never a partial one, and a
    failure leaves nothing behind. An existing ``path`` is replaced; callers that must not
    overwrite check first.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        # The cleanup must not hide why the write failed (on a file system turned read-only
        # meanwhile, removing the temporary fails too).
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        _raise_naming(exc, path)
    return path


def _raise_naming(exc: BaseException, path: Path):
    """Raise ``exc`` again; a disk fault as an ``OSError`` naming ``path`` (see the module docstring)."""
    if isinstance(exc, OSError) and exc.errno in DISK_FAULTS:
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
    raise exc


def check_writable(path: str | Path) -> None:
    """Refuse an output ``path`` on a read-only file system or in a directory without write
    permission, before any work: raise the ``OSError`` (EROFS, EACCES) its first write would.

    The directory checked is ``path`` itself if it is one (a run to resume), else the nearest
    existing directory above it. ``os.access`` answers for the real user, so root passes it
    everywhere except on a read-only file system. A full disk cannot be foreseen this way.
    """
    path = Path(path)
    where = path if path.is_dir() else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    # A file in the way is another mistake, which the write itself reports.
    if not where.is_dir() or os.access(where, os.W_OK | os.X_OK):
        return
    code = errno.EROFS if os.statvfs(where).f_flag & os.ST_RDONLY else errno.EACCES
    raise OSError(code, os.strerror(code), str(path))


def open_store(path: str | Path, schemas: tuple[str, ...], what: str, mode: str = "r") -> zarr.Group:
    """Open a toolkit store and check that its ``schema`` attribute is one of ``schemas``.

    Parameters
    ----------
    path
        Store directory.
    schemas
        Accepted schema strings.
    what
        What the caller expects, for messages (e.g. ``"grid store"``).
    mode
        Zarr open mode.

    Raises
    ------
    UserError
        If the path is missing, not a readable Zarr v3 group, or of another schema.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such {what}")
    try:
        group = zarr.open_group(str(path), mode=mode, zarr_format=3, use_consolidated=False)
        schema = group.attrs.get("schema")
    except Exception as exc:  # zarr raises many types for unreadable metadata
        raise UserError(f"{path}: not a readable Zarr store ({type(exc).__name__}: {exc})") from None
    if schema not in schemas:
        raise UserError(f"{path}: not a {what} (schema {schema!r}, expected {' or '.join(map(repr, schemas))})")
    return group


def create_atomically(path: str | Path, fill: Callable[[zarr.Group], None]) -> None:
    """Run ``fill(group)`` on a new Zarr v3 group at a temporary path, then rename it to ``path``.

    The temporary directory has a unique name, so any number of processes may race to create
    the same store: exactly one rename succeeds, the others raise :class:`StoreExists` and
    leave nothing behind.

    Raises
    ------
    StoreExists
        If ``path`` exists already, or appeared while the store was being filled.
    """
    path = Path(path)
    if path.exists():
        raise StoreExists(f"{path}: already exists; choose another --out or remove it")
    # Unique per process and call (not only per pid: stores live on file systems shared by hosts).
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        fill(group)
        with warnings.catch_warnings():
            # Consolidated metadata is not in the v3 spec yet; the metadata never changes after
            # creation (filling only writes chunks), so the consolidated copy stays valid.
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(tmp))
        try:
            os.rename(tmp, path)
        except OSError:
            # rename(2) refuses a non-empty directory (ENOTEMPTY/EEXIST) or a file (ENOTDIR) in
            # the way: another process won the race.
            if path.exists():
                raise StoreExists(f"{path}: created by another process meanwhile; "
                                  "choose another --out or remove it") from None
            raise
    except BaseException as exc:
        _settle_zarr_writes()
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_naming(exc, path)


def _settle_zarr_writes(timeout_s: float = 60.0) -> None:
    """Wait for the writes Zarr still has in flight after one of them failed.

    Zarr writes the chunks of an array concurrently on its I/O event loop
    (``asyncio.gather``) and does not cancel the others when one fails: without waiting, they
    would create directories and files below a temporary store after it was removed.
    """
    import asyncio

    from zarr.core import sync

    loop = sync.loop[0]
    if loop is None or not loop.is_running():
        return

    async def others_done() -> None:
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(others_done(), loop).result(timeout_s)


def read_array(array: zarr.Array, selection=slice(None), *, where: str = "",
               orthogonal: bool = False) -> np.ndarray:
    """``array[selection]`` as a NumPy array; an unreadable chunk is the user's file, not a bug.

    Parameters
    ----------
    array : zarr.Array
        An array of an open store.
    selection
        What to read (basic indexing; with ``orthogonal``, one index array per axis).
    where : str
        Which part is read, for the message (e.g. ``" rows 0-3"``).
    orthogonal : bool
        Read with :meth:`zarr.Array.get_orthogonal_selection` (e.g. unsorted row indices).

    Raises
    ------
    UserError
        Naming the store, the array and ``where`` if a chunk cannot be read or decoded
        (truncated or overwritten chunk files make the codecs raise, e.g. a Zstd error).
    """
    try:
        return np.asarray(array.get_orthogonal_selection(selection) if orthogonal else array[selection])
    except Exception as exc:  # noqa: BLE001 - zarr and its codecs raise many types for bad chunks
        message = next((line for line in str(exc).splitlines() if line.strip()), "")
        root = getattr(array.store, "root", array.store)
        raise UserError(f"{root}: cannot read array {array.path!r}{where} (unreadable chunk, "
                        f"{type(exc).__name__}: {message}); the store is damaged") from None

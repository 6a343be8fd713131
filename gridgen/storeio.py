"""Creating Zarr stores so that a failure leaves nothing behind; shared by every package.

All stores of the toolkit are Zarr v3 groups created complete under a hidden temporary name
next to the destination and renamed into place (a rename within one directory is atomic), with
consolidated metadata so that ``xarray.open_zarr`` opens them without a fallback warning.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import zarr

from gridgen.errors import UserError


def create_atomically(path: str | Path, fill: Callable[[zarr.Group], None]) -> None:
    """Run ``fill(group)`` on a new Zarr v3 group at a temporary path, then rename it to ``path``.

    Raises
    ------
    UserError
        If ``path`` already exists.
    """
    path = Path(path)
    if path.exists():
        raise UserError(f"{path}: already exists; choose another --out or remove it")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        fill(group)
        with warnings.catch_warnings():
            # Consolidated metadata is not in the v3 spec yet; the metadata never changes after
            # creation (filling only writes chunks), so the consolidated copy stays valid.
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(tmp))
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

"""Export a training or observed store to HDF5 (h5py) for tools outside this project.

Every array becomes a dataset of the same name, dtype and shape (strings as UTF-8), copied one
``flux`` chunk at a time so memory stays bounded; array attributes are copied; group
attributes that are not plain scalars/strings (``provenance``, ``label_names``) are stored as
JSON strings. Dimension names go into each dataset's ``dimension_names`` attribute.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from gridgen.core.errors import UserError
from gridgen.core.storeio import read_array, write_atomically

from augment.storecheck import open_checked_store


def _attr_value(value):
    if isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value)


def export_hdf5(store_path: str | Path, out_path: str | Path) -> Path:
    """Write ``store_path`` (training or observed store) to the HDF5 file ``out_path``.

    Parameters
    ----------
    store_path : str or Path
        Training or observed store.
    out_path : str or Path
        HDF5 file to create; must not exist, its directory must.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    UserError
        A store that fails the readers' checks (:func:`augment.storecheck.open_checked_store`),
        an existing ``out_path``, a missing or unwritable directory, or an array of the store
        that cannot be read. The file is written under a temporary name and
        renamed when complete, so a failure leaves nothing behind.
    """
    group = open_checked_store(store_path)
    out_path = Path(out_path)
    if out_path.exists():
        raise UserError(f"{out_path}: already exists; choose another --out or remove it")
    if not out_path.parent.is_dir():
        raise UserError(f"{out_path}: directory {out_path.parent} does not exist")

    def write(tmp: Path) -> None:
        try:
            h5 = h5py.File(tmp, "w")
        except OSError as err:
            raise UserError(f"{out_path}: cannot create the file ({err})") from None
        with h5:
            for key, value in group.attrs.items():
                h5.attrs[key] = _attr_value(value)
            for name, array in group.arrays():
                is_str = array.dtype.kind in "OUT"
                dtype = h5py.string_dtype() if is_str else array.dtype
                dataset = h5.create_dataset(name, shape=array.shape, dtype=dtype,
                                            chunks=tuple(array.chunks) if array.ndim and not is_str else None)
                step = array.chunks[0] if array.ndim else 1
                for start in range(0, max(array.shape[0], 1) if array.ndim else 1, step):
                    block = read_array(array, slice(start, start + step) if array.ndim else ...,
                                       where=f" at row {start}")
                    dataset[start:start + step] = block.astype(object) if is_str else block
                for key, value in array.attrs.items():
                    dataset.attrs[key] = _attr_value(value)
                dataset.attrs["dimension_names"] = json.dumps(list(array.metadata.dimension_names or ()))

    return write_atomically(out_path, write)

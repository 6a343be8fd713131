"""A store's creation record: the SHA-256s of everything that never changes once it is created.

A Zarr v3 store is a directory of JSON metadata documents (``zarr.json``: the group's, holding its
attributes, and one per array, holding its shape, data type, chunk grid, fill value, codecs,
dimension names and attributes) and chunk files. A toolkit store is created complete and then
only filled: a run writes chunks, never metadata. So the group attributes, every array's
``zarr.json`` and the data of the arrays written at creation (a grid store's wavelengths,
labels and splits) are fixed at creation, and their SHA-256s, recorded then as the group
attribute ``integrity``, let a reader tell which of them was edited or damaged since:

``integrity``
    ``rule`` (:data:`RULE`); ``attributes``: name -> SHA-256 of the attribute's canonical JSON
    (:func:`gridgen.core.identity.fingerprint_json`), or for an attribute holding a JSON
    object, key -> SHA-256 of each of its entries (so a message can name ``provenance.engine``);
    ``metadata``: array name -> SHA-256 of its ``zarr.json`` as canonical JSON; ``data``: array
    name -> SHA-256 of its values (numbers as little-endian bytes, strings as a JSON list).

Every attribute but ``integrity`` itself is covered. The record finds edits and damage, not
forgery: whoever edits a store can recompute the record too.

The group's ``zarr.json`` also holds a consolidated copy of every array's metadata (what
``xarray.open_zarr`` reads instead of the arrays' own documents); :func:`consolidated_problems`
checks that the two agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import zarr

from gridgen.core.identity import fingerprint_json
from gridgen.core.provenance import sha256_bytes

#: The attribute holding the record, and the version of the rules above.
ATTRIBUTE = "integrity"
RULE = "cinn4most.integrity/1"


def _attribute_digests(attrs: dict) -> dict:
    return {name: ({key: fingerprint_json(item) for key, item in value.items()} if isinstance(value, dict)
                   else fingerprint_json(value))
            for name, value in attrs.items() if name != ATTRIBUTE}


def _metadata_document(path: Path, name: str) -> dict | None:
    """An array's ``zarr.json`` as parsed JSON, or None if it is missing or not JSON."""
    try:
        return json.loads((path / name / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _data_digest(values: np.ndarray) -> str:
    if values.dtype.kind in "OTU":
        return fingerprint_json([str(value) for value in values.ravel().tolist()])
    little = values.dtype.newbyteorder("<")
    return fingerprint_json({"dtype": little.str, "shape": list(values.shape),
                             "sha256": sha256_bytes(np.ascontiguousarray(values, dtype=little).tobytes())})


def _array_digest(array: zarr.Array) -> str:
    """:func:`_data_digest` of an array's values, numbers read one chunk of rows at a time (so a
    store of millions of spectra is digested in the memory of one chunk; strings are read whole)."""
    if array.dtype.kind in "OTU" or array.ndim == 0:
        return _data_digest(np.asarray(array[...]))
    little = array.dtype.newbyteorder("<")
    digest, step = hashlib.sha256(), array.chunks[0]
    for start in range(0, array.shape[0], step):
        digest.update(np.ascontiguousarray(array[start:start + step], dtype=little).tobytes())
    return fingerprint_json({"dtype": little.str, "shape": list(array.shape), "sha256": digest.hexdigest()})


def creation_record(path: str | Path, group: zarr.Group, fixed_arrays: Iterable[str]) -> dict:
    """The ``integrity`` record of a store as it is now (call it last when creating the store).

    Parameters
    ----------
    path
        The store's directory (where its ``zarr.json`` documents are).
    group
        The store, with every attribute but ``integrity`` set.
    fixed_arrays
        Arrays whose data are written at creation and never change.
    """
    path = Path(path)
    names = sorted(name for name, _ in group.arrays())
    return {
        "rule": RULE,
        "attributes": _attribute_digests(group.attrs.asdict()),
        "metadata": {name: fingerprint_json(_metadata_document(path, name)) for name in names},
        "data": {name: _array_digest(group[name]) for name in fixed_arrays},
    }


def record_problems(path: str | Path, group: zarr.Group) -> list[str]:
    """Attributes and array metadata documents that differ from the ``integrity`` record.

    Returns
    -------
    list of str
        One line per attribute (or attribute entry) and array ``zarr.json`` edited, added or
        removed since the record was made; empty if none is, or the store has no record (made
        before records were kept).
    """
    record = group.attrs.get(ATTRIBUTE)
    if record is None:
        return []
    if not isinstance(record, dict) or record.get("rule") != RULE:
        return [f"attribute {ATTRIBUTE}: not a creation record of rule {RULE!r}"]
    path = Path(path)
    problems = _compare("attribute", record.get("attributes") or {},
                        _attribute_digests(group.attrs.asdict()))
    names = sorted(name for name, _ in group.arrays())
    return problems + _compare("array", record.get("metadata") or {},
                               {name: fingerprint_json(_metadata_document(path, name)) for name in names},
                               what=" (zarr.json: shape, data type, chunks, fill value, codecs or attributes)")


def data_problems(group: zarr.Group, read) -> list[str]:
    """Arrays written at creation whose data differ from the ``integrity`` record.

    Parameters
    ----------
    group
        The open store.
    read
        ``read(name) -> ndarray or None``: the array's values, or None where they cannot be read
        (an unreadable chunk, which the caller reports).
    """
    record = group.attrs.get(ATTRIBUTE)
    if not isinstance(record, dict) or record.get("rule") != RULE:
        return []  # no record, or one record_problems reports
    problems = []
    for name, digest in sorted((record.get("data") or {}).items()):
        values = read(name) if name in group else None
        if values is not None and _data_digest(values) != digest:
            problems.append(f"array {name}: data differ from those recorded at creation "
                            f"(written once, when the store was made)")
    return problems


def _compare(kind: str, recorded: dict, now: dict, what: str = "") -> list[str]:
    """Lines for entries of ``recorded`` that differ from or are missing in ``now``, and new ones."""
    problems = []
    for name in sorted(set(recorded) | set(now)):
        old, new = recorded.get(name), now.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            problems += _compare(kind, {f"{name}.{k}": v for k, v in old.items()},
                                 {f"{name}.{k}": v for k, v in new.items()})
        elif new is None:
            problems.append(f"{kind} {name} is missing (recorded at creation)")
        elif old is None:
            problems.append(f"{kind} {name} was added after creation")
        elif old != new:
            problems.append(f"{kind} {name} differs from the one recorded at creation{what}")
    return problems


def consolidated_problems(path: str | Path) -> list[str]:
    """Arrays whose consolidated metadata (in the group's ``zarr.json``) differ from their own.

    Empty when the store has no consolidated metadata.
    """
    path = Path(path)
    try:
        root = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # opening the store reports an unreadable group document
    consolidated = ((root.get("consolidated_metadata") or {}).get("metadata") or {}) if isinstance(root, dict) else {}
    problems = []
    for name, document in sorted(consolidated.items()):
        own = _metadata_document(path, name)
        if own is None:
            problems.append(f"array {name}: listed in the consolidated metadata, but {name}/zarr.json "
                            f"is missing or unreadable")
        elif own != document:
            problems.append(f"array {name}: {name}/zarr.json differs from its consolidated copy in "
                            f"zarr.json (which xarray.open_zarr reads)")
    return problems

"""Tamperings of a Zarr v3 store on disk, as an editor or a damaged disk would make them.

Each helper returns ``tamper(store_path)`` (or, for :func:`chunk_file`, ``path(store_path)``),
so a bad-input corpus (``tests/test_badinput_gridgen.py``, ``tests/test_badinput_stores.py``) is a
table of (name, tamper, expected message) rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import zarr


def open_for_edit(store: Path) -> zarr.Group:
    """The store opened for writing, ignoring its consolidated metadata."""
    return zarr.open_group(str(store), mode="r+", zarr_format=3, use_consolidated=False)


def edit_json(path: Path, edit) -> None:
    """Apply ``edit(document)`` to a JSON file in place."""
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def attributes(edit):
    """Edit the group attributes in the group's zarr.json, as a text editor would."""
    return lambda store: edit_json(store / "zarr.json", lambda doc: edit(doc["attributes"]))


def provenance(edit):
    """Edit the group's ``provenance`` attribute."""
    return attributes(lambda attrs: edit(attrs["provenance"]))


def array_json(name, edit, consolidated=False):
    """Edit an array's zarr.json (and with ``consolidated`` its copy in the group's zarr.json too,
    as re-consolidating after the edit would)."""
    def tamper(store):
        edit_json(store / name / "zarr.json", edit)
        if consolidated:
            edit_json(store / "zarr.json", lambda doc: edit(doc["consolidated_metadata"]["metadata"][name]))
    return tamper


def chunk_file(name, number=0):
    """A chunk file of an array along its first axis (``c/N``, ``c/N/0`` or ``c/N/0/0``)."""
    def path(store):
        chunk = store / name / "c" / str(number)
        while chunk.is_dir():
            chunk = chunk / "0"
        return chunk
    return path


def removed(name, number=0):
    """Delete chunk ``number`` of an array."""
    return lambda store: chunk_file(name, number)(store).unlink()


def truncated(name):
    """Keep the first half of an array's first chunk file."""
    def tamper(store):
        chunk = chunk_file(name)(store)
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    return tamper


def written(name, index, value):
    """Write ``value`` at ``index`` of an array through Zarr (a valid chunk with other data)."""
    def tamper(store):
        open_for_edit(store)[name][index] = value
    return tamper

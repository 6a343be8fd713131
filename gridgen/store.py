"""The grid store: raw synthetic spectra, their labels, status and provenance (docs/contracts.md).

Data contract (a Zarr v3 group; ``xarray.open_zarr(path)`` opens it)

============  =====================  =======  ==================================================
array         shape                  dtype    meaning
============  =====================  =======  ==================================================
``wave``      (n_wave,)              float64  wavelength in Å; attrs ``units``, ``medium``
``wavelength``  (n_wave,)            float64  the same values: xarray's index coordinate of
                                              dimension ``wavelength``; attrs as ``wave``
``label``     (n_label,)             str      label names (index coordinate); attr
                                              ``label_units``
``flux``      (n_spec, n_wave)       float32  continuum-normalised flux; NaN unless status ok
``labels``    (n_spec, n_label)      float64  Teff, log g, [Fe/H], vmic, 21 [X/Fe]
``status``    (n_spec,)              int8     0 pending, 1 ok, 2 failed (CF ``flag_values``,
                                              ``flag_meanings``)
``error``     (n_spec,)              str      one-line failure reason, "" otherwise
``note``      (n_spec,)              str      how an ok spectrum deviates from the grid
                                              definition (e.g. NLTE element fell back to
                                              LTE), "" otherwise
``checksum``  (n_spec,)              str      SHA-256 of the flux row's little-endian bytes
``split``     (n_spec,)              int8     0 train, 1 test, 2 validation (CF flags, as
                                              ``status``)
============  =====================  =======  ==================================================

xarray: ``ds = xarray.open_zarr(path)`` has the index coordinates ``wavelength`` and ``label``
(``flux`` lists ``wave`` as a coordinate too), so ``ds.sel(wavelength=slice(5160, 5200))`` and
``ds.labels.sel(label="teff")`` select by wavelength (Å) and label name. Zarr readers use ``wave``
and the ``label_names`` attribute as before.

Every per-spectrum array is chunked along ``spectrum`` only, with the same chunk length; a
chunk is the unit of work of one worker. Dimension names:
``spectrum``, ``wavelength``, ``label``. Group attributes: ``schema`` (:data:`SCHEMA`),
``label_names``, ``label_units``, ``chunk_spectra`` and ``provenance`` (grid TOML text and
SHA-256, engine and binary SHA-256s, line-list SHA-256s, atmosphere provider, solar mixture,
NLTE settings, code version, host, creation time), ``split_rule`` (how ``split`` was assigned,
:data:`gridgen.sampling.SPLIT_RULE`; stores made before it was recorded used a permutation of all
rows, whose splits change when a grid grows, so they cannot be grown), ``identity`` and
``integrity``: the creation record (:mod:`gridgen.core.integrity`), SHA-256s of every other
attribute, of every array's ``zarr.json`` and of the data written at creation (``wave``,
``wavelength``, ``label``, ``labels``, ``split``), none of which changes once the store exists
(stores made before it was recorded have none). A maker that learns the provenance only while
filling sets it with :func:`record_provenance`.

Identity (:mod:`gridgen.core.identity`; recorded at creation, derived from ``provenance`` for
stores made before): ``definition`` (``name@version``), ``definition_sha256`` (the grid TOML's
SHA-256), ``inputs_fingerprint`` (canonical-JSON SHA-256 of the TOML's SHA-256, ``split_rule``
and the provenance sections :data:`INPUT_SECTIONS`: sampler, engine binaries and patches, line
lists, atmosphere provider and weights, solar mixture, NLTE files, synthesis settings; not who,
where or when) and ``parents`` (for a grid grown with ``gridgen run --reuse``: the old store's
path, definition, fingerprints and the rows copied). The ``content_fingerprint`` is not stored,
since filling changes it: :func:`content_fingerprint` computes it from ``status`` and
``checksum`` (flux is not re-read), and ``verify`` checks the checksums against the flux.

A store is created complete (all arrays, status pending) under a temporary name and renamed
into place, so a failed creation leaves nothing behind; filling it is resumable. Every chunk file
of ``labels``, ``status`` and ``split`` is written at creation (even where it holds only fill
values; those arrays carry the attribute ``all_chunks_written``), so a missing one is a lost
file; ``flux`` and ``checksum`` chunks exist once a spectrum of the chunk is ok (Zarr does not
store all-fill chunks).

Consistency (what ``python -m gridgen verify`` checks, :func:`verify_grid_store`): the layout
above (arrays, dimensions, data types, chunking; :func:`open_grid_store`); the consolidated
metadata against each array's own; the attributes, metadata and data written at creation against
the creation record; the identity against the provenance and its grid TOML against the TOML's
SHA-256; the spectra count, splits and labels against what the recorded TOML allows
(:mod:`gridgen.definitioncheck`); every chunk file present and readable; and per spectrum: an ok
spectrum has finite, non-negative flux, a checksum equal to :func:`flux_checksum` of it and no
error text; a pending or failed one has NaN flux and no checksum; a failed one has an error
text, a pending one none.

Leases: while a run computes a chunk it holds ``.leases/chunk-<index>.json`` under the store
directory (see :mod:`gridgen.lease`), so two runs on one store never compute the same chunk. The
files exist only while chunks are worked on; Zarr readers ignore them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import zarr

from gridgen.core import integrity
from gridgen.core.codes import SPLIT_NAMES, STATUS_FAILED, STATUS_NAMES, STATUS_OK, STATUS_PENDING
from gridgen.core.errors import UserError
from gridgen.core.identity import content_fingerprint as _rows_fingerprint
from gridgen.core.identity import fingerprint_json, short
from gridgen.core.provenance import sha256_bytes
from gridgen.core.storeio import create_atomically, open_store
from gridgen.definitioncheck import definition_problems, parse_definition, section
from gridgen.sampling import SPLIT_RULE

SCHEMA = "cinn4most.gridstore/1"
#: Every array of the contract: its dimension names and data type ("string": Zarr v3 strings).
_REQUIRED = {
    "wave": (("wavelength",), "float64"),
    "flux": (("spectrum", "wavelength"), "float32"),
    "labels": (("spectrum", "label"), "float64"),
    "status": (("spectrum",), "int8"),
    "error": (("spectrum",), "string"),
    "note": (("spectrum",), "string"),
    "checksum": (("spectrum",), "string"),
    "split": (("spectrum",), "int8"),
}
#: Per-spectrum arrays whose every chunk file exists from creation on.
_WRITTEN_AT_CREATION = ("labels", "status", "split")
#: Arrays whose data are written at creation and never change (their SHA-256s are recorded).
_FIXED_ARRAYS = ("wave", "wavelength", "label", "labels", "split")
#: Provenance sections that decide a grid store's spectra (with the TOML's SHA-256 and split rule).
INPUT_SECTIONS = ("sampler", "engine", "linelists", "atmosphere", "solar_mixture", "nlte", "synthesis")
#: Arrays copied row by row from an older store when a grid grows (``gridgen run --reuse``).
_REUSED_ARRAYS = ("flux", "checksum", "error", "note", "status")
#: How many problems of one kind verify lists before summarising the rest.
_SHOWN_PER_KIND = 5


def cf_flags(meanings: Iterable[str]) -> dict:
    """CF attributes ``flag_values`` (0, 1, ...) and ``flag_meanings`` of a code array.

    Parameters
    ----------
    meanings
        The name of each code, in code order (no blanks: CF separates meanings by blanks).
    """
    meanings = list(meanings)
    return {"flag_values": list(range(len(meanings))), "flag_meanings": " ".join(meanings)}


def write_coordinate(group: zarr.Group, name: str, values: np.ndarray, **attrs) -> None:
    """Write a one-dimensional array whose dimension is its own name (an xarray index).

    Parameters
    ----------
    group
        Store being created.
    name
        Array and dimension name.
    values
        Coordinate values; an object or str array is stored as Zarr strings.
    **attrs
        Attributes, e.g. ``units``.
    """
    values = np.asarray(values)
    dtype = str if values.dtype.kind in "OUT" else values.dtype
    array = group.create_array(name, shape=values.shape, dtype=dtype, dimension_names=[name])
    array[...] = values.astype(object) if dtype is str else values
    array.attrs.update(attrs)


def flux_checksum(flux_row: np.ndarray) -> str:
    """SHA-256 of one spectrum's flux as little-endian float32 bytes."""
    return sha256_bytes(np.ascontiguousarray(flux_row, dtype="<f4").tobytes())


def create_grid_store(
    path: str | Path,
    *,
    wave_aa: np.ndarray,
    wave_medium: str,
    labels: np.ndarray,
    label_names: tuple[str, ...],
    label_units: tuple[str, ...],
    split: np.ndarray,
    chunk_spectra: int,
    provenance: dict,
    parents: tuple[dict, ...] = (),
    reuse_from: zarr.Group | None = None,
    reuse_rows: int = 0,
) -> zarr.Group:
    """Create an empty (all pending) grid store atomically, optionally with rows of an old one.

    Parameters
    ----------
    path
        Destination directory; must not exist.
    wave_aa
        Synthesis wavelengths in Å, strictly increasing.
    wave_medium
        ``"air"`` or ``"vacuum"``.
    labels
        (n_spec, n_label) parameters of every spectrum.
    label_names, label_units
        Column names and units of ``labels``.
    split
        (n_spec,) int8 split codes (0 train, 1 test, 2 val).
    chunk_spectra
        Spectra per chunk (the unit of work of one worker).
    provenance
        JSON-serialisable provenance dictionary.
    parents
        Identities of the stores this one is made from (recorded in ``identity``).
    reuse_from, reuse_rows
        An older grid store whose first ``reuse_rows`` spectra (flux, checksum, error, note,
        status) are copied in, within the atomic creation; the caller has checked that they
        are the same parameter sets and physics.
    """
    chunk = min(chunk_spectra, labels.shape[0])

    def fill(group: zarr.Group) -> None:
        _write_axes(group, wave_aa, wave_medium, label_names, label_units)
        _create_spectrum_arrays(group, len(wave_aa), labels, split, chunk)
        _copy_rows(group, reuse_from, reuse_rows, chunk)
        group.attrs.update({
            "schema": SCHEMA,
            "label_names": list(label_names),
            "label_units": list(label_units),
            "chunk_spectra": int(chunk),
            "provenance": provenance,
            "split_rule": SPLIT_RULE,
            "identity": grid_identity(provenance, SPLIT_RULE, parents),
        })
        _record_integrity(group)

    create_atomically(path, fill)
    return open_grid_store(path, mode="r+")


def _write_axes(group: zarr.Group, wave_aa: np.ndarray, wave_medium: str, label_names: tuple[str, ...],
                label_units: tuple[str, ...]) -> None:
    """The wavelength axis (Å, ``wave`` and its index twin ``wavelength``) and the label axis."""
    wave = group.create_array("wave", shape=wave_aa.shape, dtype="f8", dimension_names=["wavelength"])
    wave[:] = wave_aa
    wave.attrs.update({"units": "Angstrom", "medium": wave_medium})
    # xarray makes an array named like its dimension an index: sel(wavelength=...) works.
    write_coordinate(group, "wavelength", wave_aa, units="Angstrom", medium=wave_medium)
    write_coordinate(group, "label", np.array(label_names, dtype=object), label_units=list(label_units))


def _create_spectrum_arrays(group: zarr.Group, n_wave: int, labels: np.ndarray, split: np.ndarray,
                            chunk: int) -> None:
    """The per-spectrum arrays, chunked by ``chunk`` spectra: flux (NaN), labels, status (all
    pending), split and empty error, note and checksum texts."""
    n_spec, n_label = labels.shape
    # Write all-fill chunks too, so that verify can tell a lost chunk file from an untouched one.
    every_chunk = {"write_empty_chunks": True}
    flux = group.create_array("flux", shape=(n_spec, n_wave), dtype="f4", chunks=(chunk, n_wave),
                              fill_value=np.nan, dimension_names=["spectrum", "wavelength"])
    flux.attrs["coordinates"] = "wave"
    labels_arr = group.create_array("labels", shape=labels.shape, dtype="f8", chunks=(chunk, n_label),
                                    config=every_chunk, dimension_names=["spectrum", "label"])
    labels_arr[:] = labels
    for name, dtype, fill_value, values in (
            ("status", "i1", STATUS_PENDING, STATUS_PENDING), ("split", "i1", 0, split),
            ("error", str, "", None), ("note", str, "", None), ("checksum", str, "", None)):
        array = group.create_array(name, shape=(n_spec,), dtype=dtype, chunks=(chunk,),
                                   fill_value=fill_value, dimension_names=["spectrum"],
                                   config=every_chunk if name in _WRITTEN_AT_CREATION else None)
        if values is not None:
            array[:] = values
    for name in _WRITTEN_AT_CREATION:
        group[name].attrs["all_chunks_written"] = True
    group["status"].attrs.update(cf_flags(STATUS_NAMES.values()))
    group["split"].attrs.update(cf_flags(SPLIT_NAMES))


def _copy_rows(group: zarr.Group, reuse_from: zarr.Group | None, reuse_rows: int, chunk: int) -> None:
    """Copy the first ``reuse_rows`` spectra (flux, checksum, error, note, status) of ``reuse_from``."""
    # In blocks of the new store's chunk length: flux rows can be large.
    for start in range(0, reuse_rows, chunk):
        stop = min(start + chunk, reuse_rows)
        for name in _REUSED_ARRAYS:
            group[name][start:stop] = reuse_from[name][start:stop]


def _record_integrity(group: zarr.Group) -> None:
    """Record the SHA-256s of what never changes after creation (:mod:`gridgen.core.integrity`)."""
    group.attrs[integrity.ATTRIBUTE] = integrity.creation_record(group.store.root, group, _FIXED_ARRAYS)


def record_provenance(group: zarr.Group, provenance: dict) -> None:
    """Set the provenance of a store still being made, with the identity and record it implies.

    For makers that know the provenance only once the store is filled (``import-tsfitpy``
    records the SHA-256s of the files it read); the store's parents are kept.
    """
    parents = store_identity(group).get("parents") or []
    group.attrs.update({"provenance": provenance,
                        "identity": grid_identity(provenance, group.attrs.get("split_rule"), parents)})
    _record_integrity(group)


def open_grid_store(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a grid store and check its schema.

    Raises
    ------
    UserError
        If the path is missing, not a Zarr group, or not a grid store of this schema.
    """
    group = open_store(path, (SCHEMA,), "grid store", mode)
    n_spec = None
    for name, (dims, dtype) in _REQUIRED.items():
        if name not in group:
            raise UserError(f"{path}: corrupt grid store, array {name!r} is missing")
        array = group[name]
        if tuple(array.metadata.dimension_names or ()) != dims:
            raise UserError(f"{path}: corrupt grid store, array {name!r} has dimensions "
                            f"{array.metadata.dimension_names}, expected {dims}")
        found = "string" if array.dtype.kind in "OTU" else str(array.dtype)
        if found != dtype:
            raise UserError(f"{path}: corrupt grid store, array {name!r} has data type {found}, "
                            f"expected {dtype}")
        if "spectrum" in dims:
            if n_spec is not None and array.shape[0] != n_spec:
                raise UserError(f"{path}: corrupt grid store, array {name!r} has "
                                f"{array.shape[0]} spectra, expected {n_spec}")
            n_spec = array.shape[0]
    if group["flux"].shape[1] != group["wave"].shape[0]:
        raise UserError(f"{path}: corrupt grid store, flux and wave lengths differ")
    _check_layout_attributes(path, group)
    return group


def _check_layout_attributes(path: str | Path, group: zarr.Group) -> None:
    """UserError unless ``label_names``, ``label_units`` and ``chunk_spectra`` fit the arrays."""
    n_label = group["labels"].shape[1]
    for name in ("label_names", "label_units"):
        value = group.attrs.get(name)
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UserError(f"{path}: corrupt grid store, attribute {name!r} is not a list of names")
        if len(value) != n_label:
            raise UserError(f"{path}: corrupt grid store, attribute {name!r} has {len(value)} entries "
                            f"but array 'labels' has {n_label} columns")
    chunk = group.attrs.get("chunk_spectra")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise UserError(f"{path}: corrupt grid store, attribute 'chunk_spectra' is {chunk!r}, not a "
                        f"positive integer")
    for name, (dims, _) in _REQUIRED.items():
        array = group[name]
        expected = (min(chunk, array.shape[0]),) + array.shape[1:]
        if "spectrum" in dims and array.chunks != expected:
            raise UserError(f"{path}: corrupt grid store, array {name!r} has chunks {array.chunks}, "
                            f"expected {expected} (chunk_spectra spectra along spectrum only)")


def grid_identity(provenance: dict, split_rule: str | None, parents=()) -> dict:
    """A grid store's recorded identity from its provenance (see the module docstring)."""
    grid = section(provenance, "grid")
    inputs = {"definition_sha256": grid.get("toml_sha256"), "split_rule": split_rule,
              **{key: provenance.get(key) for key in INPUT_SECTIONS}}
    return {
        "definition": f"{grid.get('name', '?')}@{grid.get('version', '?')}",
        "definition_sha256": grid.get("toml_sha256"),
        "inputs_fingerprint": fingerprint_json(inputs),
        "parents": list(parents),
    }


def store_identity(group: zarr.Group) -> dict:
    """The store's identity: the recorded one, or (older stores) derived from its provenance."""
    recorded = group.attrs.get("identity")
    if isinstance(recorded, dict):
        return recorded
    provenance = group.attrs.get("provenance")
    return grid_identity(provenance if isinstance(provenance, dict) else {},
                         group.attrs.get("split_rule"))


def content_fingerprint(group: zarr.Group) -> tuple[str, list[str]]:
    """SHA-256 over every spectrum's status and flux checksum, in spectrum order.

    Returns
    -------
    fingerprint : str
    problems : list of str
        Unreadable chunks (their rows count as fill values), as :func:`read_chunked` reports.
    """
    status, bad_status = read_chunked(group, "status")
    checksums, bad_checksums = read_chunked(group, "checksum")
    return _rows_fingerprint(status, checksums), bad_status + bad_checksums


def chunk_ranges(group: zarr.Group) -> list[tuple[int, int]]:
    """``(start, stop)`` spectrum indices of every chunk of the store."""
    n_spec = group["status"].shape[0]
    step = int(group.attrs["chunk_spectra"])
    return [(start, min(start + step, n_spec)) for start in range(0, n_spec, step)]


def write_spectrum(group: zarr.Group, index: int, flux: np.ndarray | None, error: str = "",
                   note: str = "") -> None:
    """Record one spectrum: its flux, checksum and note if ok, else the failure reason.

    The status is written last, so an interruption between the writes leaves the spectrum
    pending and a resumed run recomputes it.
    """
    if flux is None:
        group["flux"][index] = np.nan
        group["checksum"][index] = ""
        group["error"][index] = error.replace("\n", " ")[:500] or "unknown failure"
        group["status"][index] = STATUS_FAILED
        return
    flux = np.asarray(flux, dtype=np.float32)
    group["flux"][index] = flux
    group["checksum"][index] = flux_checksum(flux)
    group["error"][index] = ""
    group["note"][index] = note
    group["status"][index] = STATUS_OK


def read_chunked(group: zarr.Group, name: str) -> tuple[np.ndarray, list[str]]:
    """Read a per-spectrum array chunk by chunk, going on past unreadable chunks.

    Returns
    -------
    values : ndarray
        The array; the rows of an unreadable chunk hold the array's fill value.
    problems : list of str
        One line per unreadable chunk, naming the array and the spectrum range.
    """
    values, unreadable = _read_by_chunk(group, name)
    return values, [f"{name}: chunk of spectra {start}-{stop - 1} is unreadable ({reason})"
                    for start, stop, reason in unreadable]


def _read_by_chunk(group: zarr.Group, name: str) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """:func:`read_chunked`, with ``(start, stop, reason)`` of each unreadable chunk."""
    array = group[name]
    parts, unreadable = [], []
    for start, stop in chunk_ranges(group):
        try:
            parts.append(array[start:stop])
        except Exception as exc:  # noqa: BLE001 - codecs raise RuntimeError, ValueError, ...
            unreadable.append((start, stop, f"{type(exc).__name__}: {str(exc)[:120]}"))
            parts.append(np.full((stop - start,) + array.shape[1:], array.fill_value, dtype=array.dtype))
    return np.concatenate(parts), unreadable


def status_counts(group: zarr.Group) -> dict[str, int]:
    """Number of spectra per status name (an unreadable status chunk counts as pending)."""
    status = read_chunked(group, "status")[0]
    return {name: int(np.sum(status == code)) for code, name in STATUS_NAMES.items()}


def failure_reasons(group: zarr.Group) -> dict[str, int]:
    """Failed spectra counted by reason, most common first."""
    status = read_chunked(group, "status")[0]
    errors = read_chunked(group, "error")[0]
    reasons: dict[str, int] = {}
    for reason in errors[status == STATUS_FAILED]:
        reasons[str(reason)] = reasons.get(str(reason), 0) + 1
    return dict(sorted(reasons.items(), key=lambda item: -item[1]))


def missing_chunks(path: str | Path, group: zarr.Group, name: str) -> list[tuple[int, int]]:
    """``(start, stop)`` of every chunk of per-spectrum array ``name`` without a chunk file."""
    array = group[name]
    missing = []
    for number, (start, stop) in enumerate(chunk_ranges(group)):
        key = array.metadata.encode_chunk_key((number,) + (0,) * (array.ndim - 1))
        if not (Path(path) / name / key).is_file():
            missing.append((start, stop))
    return missing


def verify_grid_store(path: str | Path) -> list[str]:
    """Check a grid store against its contract, its creation record and its recorded definition.

    In order: the consolidated metadata and the creation record (:mod:`gridgen.core.integrity`:
    every attribute and array ``zarr.json`` as created); the wavelengths; unreadable and lost
    chunk files; the identity against the provenance (:func:`identity_problems`); the spectra
    count, splits and labels against the recorded grid TOML
    (:func:`gridgen.definitioncheck.definition_problems`); the data written at creation against
    the record; then every spectrum against the consistency rules of the module docstring (ok
    spectra's checksums are recomputed). Every chunk of every per-spectrum array is read; an
    unreadable one is a problem and the check goes on.

    Returns
    -------
    list of str
        One line per problem kind and array; a kind with many spectra lists the first few
        and the count. Empty if the store is sound.

    Raises
    ------
    UserError
        If the path is not a grid store or breaks the contract's layout (:func:`open_grid_store`).
    """
    group = open_grid_store(path)
    problems = integrity.consolidated_problems(path) + integrity.record_problems(path, group)
    try:
        wave = group["wave"][:]
    except Exception as exc:  # noqa: BLE001 - a corrupt chunk, reported like the others
        problems.append(f"wave: unreadable ({type(exc).__name__}: {str(exc)[:120]})")
    else:
        if not np.all(np.diff(wave) > 0):
            problems.append("wave is not strictly increasing")
    values, lost = {}, {}  # lost: array -> rows of its unreadable or missing chunks
    for name in ("status", "split", "error", "checksum", "labels"):
        values[name], unreadable = _read_by_chunk(group, name)
        problems += [f"{name}: chunk of spectra {start}-{stop - 1} is unreadable ({reason})"
                     for start, stop, reason in unreadable]
        lost[name] = [range(start, stop) for start, stop, _ in unreadable]
    # Stores made before every chunk was written at creation lack the marker: there a missing
    # all-fill chunk is normal, and a lost status chunk still shows as inconsistency below.
    for name in (n for n in _WRITTEN_AT_CREATION if group[n].attrs.get("all_chunks_written")):
        for start, stop in missing_chunks(path, group, name):
            problems.append(f"{name}: chunk file of spectra {start}-{stop - 1} is missing")
            lost[name].append(range(start, stop))
    status = values["status"]
    for name, needed_by in (("flux", STATUS_OK), ("checksum", STATUS_OK)):
        for start, stop in missing_chunks(path, group, name):
            if np.any(status[start:stop] == needed_by):
                problems.append(f"{name}: chunk file of spectra {start}-{stop - 1} is missing, "
                                f"but status says {STATUS_NAMES[needed_by]} spectra are in it")
    known = np.ones(len(status), dtype=bool)  # rows whose labels and split were read
    for rows in lost["labels"] + lost["split"]:
        known[rows.start:rows.stop] = False
    problems += identity_problems(group) + _definition_problems(group, values, known)
    problems += integrity.data_problems(group, lambda name: None if lost.get(name) else
                                        values[name] if name in values else _read_whole(group, name))
    if not np.isin(status, list(STATUS_NAMES)).all():
        problems.append("status holds unknown codes")
    if not np.isin(values["split"], [0, 1, 2]).all():
        problems.append("split holds unknown codes")
    return problems + _spectra_problems(group, values)


def _read_whole(group: zarr.Group, name: str) -> np.ndarray | None:
    """An array's values, or None if a chunk cannot be read (reported where it is read)."""
    try:
        return np.asarray(group[name][...])
    except Exception:  # noqa: BLE001 - codecs raise RuntimeError, ValueError, ...
        return None


def identity_problems(group: zarr.Group) -> list[str]:
    """Where the recorded grid TOML, its SHA-256 and the recorded identity disagree with the provenance.

    A store without an ``identity`` attribute (made before identities) has only its TOML checked.
    """
    provenance = group.attrs.get("provenance")
    if not isinstance(provenance, dict):
        return ["attribute provenance is missing or not a JSON object"]
    text, recorded_sha = section(provenance, "grid").get("toml"), section(provenance, "grid").get("toml_sha256")
    problems = []
    if not isinstance(text, str):
        problems.append("provenance.grid.toml: no grid TOML text recorded")
    elif sha256_bytes(text.encode("utf-8")) != recorded_sha:
        problems.append(f"provenance.grid.toml (SHA-256 {short(sha256_bytes(text.encode('utf-8')))}) does "
                        f"not match provenance.grid.toml_sha256 {short(recorded_sha)}")
    recorded = group.attrs.get("identity")
    if recorded is None:
        return problems
    if not isinstance(recorded, dict):
        return problems + ["attribute identity is not a JSON object"]
    expected = grid_identity(provenance, group.attrs.get("split_rule"))
    for key, covers in (("definition", "provenance.grid name and version"),
                        ("definition_sha256", "provenance.grid.toml_sha256"),
                        ("inputs_fingerprint", f"the TOML's SHA-256, split_rule and provenance "
                                               f"{', '.join(INPUT_SECTIONS)}")):
        if recorded.get(key) != expected[key]:
            problems.append(f"identity.{key} {short(recorded.get(key))} does not match {covers} "
                            f"({short(expected[key])}): one of them was edited")
    return problems


def _definition_problems(group: zarr.Group, values: dict, known: np.ndarray) -> list[str]:
    """:func:`gridgen.definitioncheck.definition_problems` of the store's recorded TOML, for the
    spectra whose labels and split could be read (``known``)."""
    provenance = group.attrs.get("provenance")
    text = section(provenance, "grid").get("toml") if isinstance(provenance, dict) else None
    if not isinstance(text, str):
        return []  # identity_problems reports it
    try:
        definition = parse_definition(text)
    except UserError as exc:
        return [str(exc)]
    return definition_problems(definition, provenance, group.attrs.get("split_rule"),
                               group.attrs["chunk_spectra"], values["labels"], group.attrs["label_names"],
                               values["split"], known)


def _spectra_problems(group: zarr.Group, values: dict) -> list[str]:
    """Every spectrum's status, flux, checksum and error against the consistency rules."""
    bad: dict[str, list[int]] = {}
    problems = []
    status, checksums, errors = values["status"], values["checksum"], values["error"]
    flux_array = group["flux"]
    for start, stop in chunk_ranges(group):
        try:
            flux = flux_array[start:stop]
        except Exception as exc:  # noqa: BLE001 - codecs raise RuntimeError, ValueError, ...
            problems.append(f"flux: chunk of spectra {start}-{stop - 1} is unreadable "
                            f"({type(exc).__name__}: {str(exc)[:120]})")
            continue
        for offset, row in enumerate(flux):
            i = start + offset
            for kind in _row_problems(int(status[i]), row, str(checksums[i]), str(errors[i])):
                bad.setdefault(kind, []).append(i)
    for kind, rows in bad.items():
        shown = ", ".join(map(str, rows[:_SHOWN_PER_KIND]))
        more = f", ... ({len(rows)} spectra)" if len(rows) > _SHOWN_PER_KIND else ""
        problems.append(f"{kind}: spectrum {shown}{more}")
    return problems


def _row_problems(status: int, flux_row: np.ndarray, checksum: str, error: str) -> list[str]:
    """What breaks the consistency rules in one spectrum's status, flux, checksum and error."""
    found = []
    if status == STATUS_OK:
        if not np.all(np.isfinite(flux_row)) or np.any(flux_row < 0):
            found.append("ok but NaN or negative flux")
        elif not checksum:
            found.append("ok but no checksum")
        elif flux_checksum(flux_row) != checksum:
            found.append("flux checksum mismatch")
        if error:
            found.append("ok but has an error text")
    elif status in (STATUS_PENDING, STATUS_FAILED):
        name = STATUS_NAMES[status]
        if not np.all(np.isnan(flux_row)):
            found.append(f"{name} but has flux")
        if checksum:
            found.append(f"{name} but has a checksum")
        if status == STATUS_FAILED and not error:
            found.append("failed without an error text")
        if status == STATUS_PENDING and error:
            found.append("pending but has an error text")
    return found
